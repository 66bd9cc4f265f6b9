"""The QoS 1/2 inbox reader: this node's stream, read and acknowledged on a connection of
its own, one write and one reply per batch read.

The XACK and XDEL of what was dispatched travel in the write of a later XREADGROUP, ahead
of it, with their replies skipped (``CLIENT REPLY SKIP``): their counts are of no use here,
and when the read finds nothing yet and blocks, Redis writes them in a reply of their own, a
wake-up of this node (on a core it may share with Redis) for nothing. The commands are
packed here, the reads once: redis-py's packer cost more than the rest of the round trip. A
Redis that refuses ``CLIENT REPLY`` (an ACL without it) gets the acknowledgements with their
replies, read and dropped, as before.

The acknowledgements are owed for up to ``ACK_DELAY`` (``Owed``): at a few thousand
messages a second every message is a batch of its own, and four commands of Redis' per
batch went to acknowledging it; gathered, they go once every few milliseconds. While
something is owed the read blocks no longer than ``ACK_DELAY``, so an idle inbox is still
acknowledged within twice that. The pending entries read after a (re)connection are
acknowledged at once: the next read from "0" would return them again.

A batch is acknowledged only after its dispatch and the write of its deliveries, so a batch
a node had not dispatched (or not yet acknowledged: ``ACK_DELAY`` more) when it stopped is
read again when it returns; what the dispatch wrote of persistent sessions is acknowledged
by ``settle`` instead, atomically with it.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from ferrymq.cluster.pressure import SLICE, Dispatch, DispatchGate, dispatch_sliced

READ_COUNT = 100  # QoS 1/2 batches taken per read of the inbox
#: Seconds an acknowledgement may wait for others to travel with: long against the gap
#: between two messages at a few thousand a second, short against a restart's redelivery.
ACK_DELAY = 0.005
#: Acknowledgements owed past which they leave with the next read, whatever their age.
ACK_MOST = READ_COUNT

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
        head += (b"COUNT", b"%d" % READ_COUNT, b"BLOCK")
        short = max(1, round(ACK_DELAY * 1000))  # blocking while acknowledgements are owed
        #: From "0": this consumer's pending entries (from before a restart); ">": new ones.
        blocks = {False: b"%d" % block_ms, True: b"%d" % short}
        self._reads = {
            (start, owing): pack(*head, block, b"STREAMS", key, start)
            for start in (b"0", b">")
            for owing, block in blocks.items()
        }
        self._ack = (b"XACK", key, group.encode())
        self._del = (b"XDEL", key)

    def read(self, start: bytes, owing: bool = False) -> bytes:
        """The read from ``start``, blocking no longer than ``ACK_DELAY`` when ``owing``."""
        return self._reads[start, owing]

    def ack(self, ids: list[bytes]) -> bytes:
        """XACK and XDEL of ``ids``; with their replies skipped when ``quiet``."""
        skip = SKIP if self.quiet else b""
        return skip + pack(*self._ack, *ids) + skip + pack(*self._del, *ids)


class Owed:
    """The ids dispatched and not yet acknowledged, and when they are due."""

    __slots__ = ("due", "ids")

    def __init__(self) -> None:
        self.ids: list[bytes] = []
        self.due = 0.0  # ``time.monotonic`` time by which the oldest is to be acknowledged

    def add(self, ids: list[bytes], now: float) -> None:
        if not self.ids:
            self.due = now + ACK_DELAY
        self.ids += ids

    def ready(self, now: float, now_anyway: bool) -> bool:
        """Whether to acknowledge with the next read: the oldest is due, or many are owed,
        or ``now_anyway`` (the last read found nothing: it blocked ``ACK_DELAY`` already)."""
        ids = self.ids
        return bool(ids) and (now_anyway or now >= self.due or len(ids) >= ACK_MOST)

    def take(self) -> list[bytes]:
        ids, self.ids = self.ids, []
        return ids


async def read_inbox(
    conn: Any,
    commands: StreamCommands,
    decode: Decode,
    dispatch: Dispatch,
    gate: DispatchGate,
    flush: Callable[[], None],
    settle: Callable[[list[bytes]], Awaitable[bool]],
    owed: Owed,
) -> None:
    """Read the stream on ``conn`` and dispatch its batches until the connection fails:
    what was left unacknowledged first, then new batches. ``flush`` writes the dispatch's
    deliveries; ``settle`` acknowledges batches with what they wrote of persistent sessions
    (False: nothing was written, the acknowledgement is owed, in ``owed``: what is left
    there when this ends, the caller may acknowledge)."""
    clock = time.monotonic
    skipped = 0 if commands.quiet else 2  # replies to read ahead of the read's
    start = b"0"
    idle = False
    while True:
        # Entries pending from "0" are acknowledged at once: read again, they come back.
        if owed.ready(clock(), idle or start == b"0"):
            await write_packed(conn, [commands.ack(owed.take()), commands.read(start)])
            for _ in range(skipped):
                await conn.read_response()
        else:
            await write_packed(conn, [commands.read(start, bool(owed.ids))])
        entries = _entries(await conn.read_response())
        idle = not entries
        if start == b"0" and not entries:
            start = b">"
            continue
        until = clock() + SLICE
        ids: list[bytes] = []
        for entry_id, fields in entries:
            # [b"m", batch]; None for an entry deleted while it was pending
            batch = decode(fields[1]) if fields and len(fields) == 2 else None
            if batch is not None:
                until = await dispatch_sliced(dispatch, *batch, until, gate)
            ids.append(entry_id)
        # The deliveries leave now, not after the next read is written: that write wakes
        # Redis, which on a shared core may run first.
        flush()
        if ids and not await settle(ids):  # settle: acknowledged with what it wrote
            owed.add(ids, clock())


def _entries(reply: Any) -> list[Any]:
    """The entries of a raw XREADGROUP reply on one stream: RESP3 sends a map, RESP2 a
    list of (stream, entries); nothing (the block timed out) is empty."""
    if not reply:
        return []
    if isinstance(reply, dict):
        return next(iter(reply.values()))
    return reply[0][1]  # type: ignore[no-any-return]
