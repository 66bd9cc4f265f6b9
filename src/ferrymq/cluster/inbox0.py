"""The QoS 0 inbox reader: this node's pub/sub channel, read in bulk.

In a cross-node fan-in the sending node publishes thousands of batches a second,
and redis-py's ``get_message`` costs, per batch, a timeout context, a parse
through its connection, a dict and a handler look-up. This reader takes all the
socket holds in one read and lets hiredis (redis-py's own C parser) split it
into replies, RESP2 arrays and RESP3 pushes alike: one Python loop turn per
batch. The channel is subscribed by redis-py (``PubSub.subscribe`` only sends
the command), so the stream holds nothing read yet when this starts.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import hiredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

READ_SIZE = 1 << 18  # bytes taken from the socket per read, at most
MESSAGE = b"message"


async def read_inbox0(stream: asyncio.StreamReader, dispatch: Callable[[bytes], None]) -> None:
    """Dispatch the payload of every ``message`` reply on ``stream`` (the subscription's
    confirmation and anything else are skipped) until the connection fails: a closed
    connection raises ``ConnectionError``, an error reply ``ResponseError``, as redis-py's
    reader would, and the node reconnects."""
    reader = hiredis.Reader()
    feed, gets = reader.feed, reader.gets
    read = stream.read
    while True:
        data = await read(READ_SIZE)
        if not data:
            raise RedisConnectionError("Redis closed the pub/sub connection")
        try:
            feed(data)
            reply = gets()
            while reply is not False:
                # [b"message", channel, batch]: a RESP2 array or a RESP3 push (a list)
                if isinstance(reply, list) and len(reply) == 3 and reply[0] == MESSAGE:
                    dispatch(reply[2])
                elif isinstance(reply, hiredis.ReplyError):
                    raise ResponseError(str(reply))
                reply = gets()
        except hiredis.ProtocolError as exc:
            raise RedisConnectionError(f"unreadable pub/sub reply: {exc}") from exc
