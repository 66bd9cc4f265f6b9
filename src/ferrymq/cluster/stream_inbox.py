"""The QoS 1/2 inbox reader: this node's stream, read and acknowledged on a connection of
its own, one write and one reply per batch read.

The XACK and XDEL of what was just dispatched travel in the write of the next XREADGROUP,
ahead of it, with their replies skipped (``CLIENT REPLY SKIP``): their counts are of no
use here, and when the read finds nothing yet and blocks, Redis writes them in a reply of
their own, a wake-up of this node (on a core it may share with Redis) for nothing. The
commands are packed here, the read once: redis-py's packer cost more than the rest of the
round trip. A Redis that refuses ``CLIENT REPLY`` (an ACL without it) gets the
acknowledgements with their replies, read and dropped, as before.

A batch is acknowledged only after its dispatch and the write of its deliveries, so a batch
a node had not dispatched when it stopped is read again when it returns; what the dispatch
wrote of persistent sessions is acknowledged by ``settle`` instead, atomically with it.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from ferrymq.cluster.pressure import SLICE, Dispatch, DispatchGate, dispatch_sliced

READ_COUNT = 100  # QoS 1/2 batches taken per read of the inbox

#: Decodes a batch: its messages and what they ask of shared groups; None when unreadable.
Decode = Callable[[bytes | None], tuple[list[Any], Any] | None]


def pack(*args: bytes) -> bytes:
    """One command as Redis reads it (RESP: an array of bulk strings)."""
    return b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%b\r\n" % (len(a), a) for a in args)


SKIP = pack(b"CLIENT", b"REPLY", b"SKIP")  # no reply to the command that follows
PING = pack(b"PING")


async def write_packed(conn: Any, data: list[bytes]) -> None:
    """Send ``data`` (packed commands) in one write; their replies are read by the caller.
    The write skips ``send_packed_command``'s ``wait_for`` (a task per call): a Redis that
    stops reading shows in the reply's read timeout, and in the heartbeat's."""
    if not conn.is_connected:
        raise RedisConnectionError("the connection to Redis was closed")
    await conn._send_packed_command(data)


async def replies_skippable(conn: Any) -> bool:
    """Whether this connection's Redis takes ``CLIENT REPLY SKIP``: of the two PINGs after
    it only the second then answers; refused, its error comes first, then both PONGs."""
    await write_packed(conn, [SKIP, PING, PING])
    try:
        await conn.read_response()
    except ResponseError:
        await conn.read_response()
        await conn.read_response()
        return False
    return True


class StreamCommands:
    """The reader's commands on one stream, packed."""

    __slots__ = ("_ack", "_del", "_reads", "quiet")

    def __init__(self, stream: str, group: str, consumer: str, block_ms: int, quiet: bool) -> None:
        key = stream.encode()
        self.quiet = quiet  # the acknowledgements' replies skipped
        head: tuple[bytes, ...] = (b"XREADGROUP", b"GROUP", group.encode(), consumer.encode())
        head += (b"COUNT", b"%d" % READ_COUNT, b"BLOCK", b"%d" % block_ms, b"STREAMS", key)
        #: From "0": this consumer's pending entries (from before a restart); ">": new ones.
        self._reads = {start: pack(*head, start) for start in (b"0", b">")}
        self._ack = (b"XACK", key, group.encode())
        self._del = (b"XDEL", key)

    def read(self, start: bytes) -> bytes:
        return self._reads[start]

    def ack(self, ids: list[bytes]) -> bytes:
        """XACK and XDEL of ``ids``; with their replies skipped when ``quiet``."""
        skip = SKIP if self.quiet else b""
        return skip + pack(*self._ack, *ids) + skip + pack(*self._del, *ids)


async def read_inbox(
    conn: Any,
    commands: StreamCommands,
    decode: Decode,
    dispatch: Dispatch,
    gate: DispatchGate,
    flush: Callable[[], None],
    settle: Callable[[list[bytes]], Awaitable[bool]],
) -> None:
    """Read the stream on ``conn`` and dispatch its batches until the connection fails:
    what was left unacknowledged first, then new batches. ``flush`` writes the dispatch's
    deliveries; ``settle`` acknowledges batches with what they wrote of persistent sessions
    (False: nothing was written, the acknowledgement travels with the next read)."""
    skipped = 0 if commands.quiet else 2  # replies to read ahead of the read's
    start = b"0"
    ids: list[bytes] = []
    while True:
        if ids:
            await write_packed(conn, [commands.ack(ids), commands.read(start)])
            for _ in range(skipped):
                await conn.read_response()
        else:
            await write_packed(conn, [commands.read(start)])
        entries = _entries(await conn.read_response())
        ids = []
        if start == b"0" and not entries:
            start = b">"
            continue
        until = time.monotonic() + SLICE
        for entry_id, fields in entries:
            # [b"m", batch]; None for an entry deleted while it was pending
            batch = decode(fields[1]) if fields and len(fields) == 2 else None
            if batch is not None:
                until = await dispatch_sliced(dispatch, *batch, until, gate)
            ids.append(entry_id)
        # The deliveries leave now, not after the next read is written: that write wakes
        # Redis, which on a shared core may run first.
        flush()
        if ids and await settle(ids):
            ids = []  # acknowledged by settle, atomically with what the dispatch wrote


def _entries(reply: Any) -> list[Any]:
    """The entries of a raw XREADGROUP reply on one stream: RESP3 sends a map, RESP2 a
    list of (stream, entries); nothing (the block timed out) is empty."""
    if not reply:
        return []
    if isinstance(reply, dict):
        return next(iter(reply.values()))
    return reply[0][1]  # type: ignore[no-any-return]
