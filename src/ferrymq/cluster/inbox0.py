"""The QoS 0 inbox reader: this node's pub/sub channel, read in bulk.

In a cross-node fan-in the sending node publishes thousands of batches a second,
and redis-py's ``get_message`` costs, per batch, a timeout context, a parse
through its connection, a dict and a handler look-up. This reader takes all the
socket holds in one read and lets hiredis (redis-py's own C parser) split it
into replies, RESP2 arrays and RESP3 pushes alike: one Python loop turn per
batch. The channel is subscribed by redis-py (``PubSub.subscribe`` only sends
the command), so the stream holds nothing read yet when this starts.

The connection is read as soon as bytes arrive, whatever the dispatch costs: a reader
that dispatched everything before reading again would leave a backlog in Redis' output
buffer for this connection, which Redis closes past ``client-output-buffer-limit pubsub``
(the node would take that for an outage). So the batches read wait in a bounded
``Backlog0`` (``cluster/pressure.py``: oldest dropped and counted) for a task of their own
that dispatches them ``SLICE0`` seconds at a time (a batch may hold thousands of
messages), letting the loop's other work, and this reader, run between slices. Past the
backlog's high mark the node says it is behind (``say``), and its senders pause the
publishers feeding it until it is down to the low mark: its CPU goes to messages it
delivers, not to ones it reads only to drop.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import hiredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from ferrymq.cluster.pressure import SLICE0, Backlog0, Dispatch, dispatch_sliced

READ_SIZE = 1 << 18  # bytes taken from the socket per read, at most
MESSAGE = b"message"


#: Decodes a batch: its messages and what they ask of shared groups; None when unreadable.
Decode = Callable[[bytes], tuple[list[Any], Any] | None]


async def read_inbox0(
    stream: asyncio.StreamReader,
    decode: Decode,
    dispatch: Dispatch,
    dropped: Callable[[int], None],
    say: Callable[[bool], None] | None = None,
) -> None:
    """Dispatch the payload of every ``message`` reply on ``stream`` (the subscription's
    confirmation and anything else are skipped) until the connection fails: a closed
    connection raises ``ConnectionError``, an error reply ``ResponseError``, as redis-py's
    reader would, and the node reconnects. ``dropped`` is told how many messages were
    dropped unread: by the bounded backlog, and what it held when the reader ended;
    ``say`` whether the backlog is past its high mark (``Backlog0``)."""
    reader = hiredis.Reader()
    feed, gets = reader.feed, reader.gets
    read = stream.read
    backlog = Backlog0(say=say)
    put = backlog.put
    waiting = asyncio.Event()
    drainer = asyncio.get_running_loop().create_task(_drain(backlog, waiting, decode, dispatch))
    try:
        while True:
            data = await read(READ_SIZE)
            if not data:
                raise RedisConnectionError("Redis closed the pub/sub connection")
            if drainer.done():  # it never returns: a failure, raised here for the node
                drainer.result()
            try:
                feed(data)
                reply = gets()
                while reply is not False:
                    # [b"message", channel, batch]: a RESP2 array or a RESP3 push (a list)
                    if isinstance(reply, list) and len(reply) == 3 and reply[0] == MESSAGE:
                        lost = put(reply[2])
                        if lost:
                            dropped(lost)
                    elif isinstance(reply, hiredis.ReplyError):
                        raise ResponseError(str(reply))
                    reply = gets()
            except hiredis.ProtocolError as exc:
                raise RedisConnectionError(f"unreadable pub/sub reply: {exc}") from exc
            if backlog:
                waiting.set()
    finally:
        drainer.cancel()
        left = backlog.clear()
        if left:
            dropped(left)


async def _drain(
    backlog: Backlog0, waiting: asyncio.Event, decode: Decode, dispatch: Dispatch
) -> None:
    """Dispatch what the reader leaves in ``backlog``, in order, ``SLICE0`` seconds at a time."""
    clock = time.monotonic
    while True:
        await waiting.wait()
        waiting.clear()
        until = clock() + SLICE0
        while backlog:
            decoded = decode(backlog.take())
            if decoded is not None:
                until = await dispatch_sliced(dispatch, *decoded, until, slice_s=SLICE0)
            backlog.done()
