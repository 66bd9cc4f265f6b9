"""Retained messages after an outage, or after Redis lost its data: the newest change wins.

Keys (under ``ferrymq:``)::

    retained          hash  topic -> stored message (storage.codec), as ``cluster/node.py``
    retained:cleared  hash  topic -> when it was cleared (ms): a tombstone, kept
                      ``CLEARED_TTL_MS``

A retained message's version is its own ``created`` time, which every node
already keeps with it (no byte more per retained topic); a clear's is the time
it was made, remembered in ``retained:cleared`` and, for the last
``CLEARED_KEEP`` clears, by each node (``Cleared``), so that a Redis that lost
everything learns them again. At a resync each node compares what it holds and
knows with Redis' set, topic by topic, and writes only what is newer there
(``NEWER``, one script per change, which compares with the stored message's
time itself); then it takes in what Redis holds newer, and clears the topics
that were cleared after its own copy was set. So a node cut off while a topic
was cleared elsewhere does not bring it back, and whichever node refills an
emptied Redis first, each topic ends with its newest change. Nothing here is
on the message path: the live path still writes each change as it comes (a
clear also sets its tombstone).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from ferrymq.model.message import Message
from ferrymq.storage.codec import dump_message, load_message

if TYPE_CHECKING:
    from redis import asyncio as aioredis

    from ferrymq.cluster.broker import ClusterBroker

RETAINED = "ferrymq:retained"
CLEARED = "ferrymq:retained:cleared"
CLEARED_TTL_MS = 7 * 86_400_000
CLEARED_KEEP = 10_000  # clears a node remembers for a Redis that lost its data

#: Set (or clear: empty data) a topic's retained message if ``ms`` is newer than both the
#: stored message's ``created`` and the topic's tombstone, with its change-stream entry.
#: ARGV: topic, data, ms, node, stream, maxlen. Returns 1 if written.
NEWER = """
local current = redis.call('HGET', KEYS[1], ARGV[1])
local at = 0
if current then
  local _v, _f, _e, created = struct.unpack('<BBdd', current)
  at = created * 1000
end
local cleared = tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '0')
local ms = tonumber(ARGV[3])
if ms <= at or ms <= cleared then
  return 0
end
if ARGV[2] == '' then
  redis.call('HDEL', KEYS[1], ARGV[1])
  redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
else
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
end
local m = ARGV[2]
if m == '' then
  m = ARGV[7]
end
redis.call('XADD', ARGV[5], 'MAXLEN', '~', ARGV[6], '*', 'op', 'retain', 'node', ARGV[4], 'm', m)
return 1
"""


def ms_of(msg: Message) -> int:
    return int(msg.created * 1000)


class Cleared:
    """The topics cleared here or seen cleared, with when (ms), the last ``CLEARED_KEEP``."""

    __slots__ = ("at",)

    def __init__(self) -> None:
        self.at: dict[str, int] = {}

    def add(self, topic: str, ms: int) -> None:
        at = self.at
        at.pop(topic, None)
        at[topic] = ms
        if len(at) > CLEARED_KEEP:
            del at[next(iter(at))]

    def forget_old(self, now_ms: int) -> None:
        oldest = now_ms - CLEARED_TTL_MS
        for topic in [t for t, ms in self.at.items() if ms < oldest]:
            del self.at[topic]


def plan(
    local: dict[str, Message],
    stored: dict[str, Message],
    cleared: dict[str, int],
) -> tuple[list[Message], list[Message], list[str]]:
    """(what to send to Redis: messages, clears as empty ones; what to take in from Redis;
    local topics to clear), topic by topic, newest wins. ``cleared``: every tombstone known,
    Redis' and this node's (the newest of each topic)."""
    send: list[Message] = []
    take: list[Message] = []
    drop: list[str] = []
    for topic in local.keys() | stored.keys() | cleared.keys():
        mine, theirs = local.get(topic), stored.get(topic)
        at_mine = ms_of(mine) if mine is not None else -1
        at_theirs = ms_of(theirs) if theirs is not None else -1
        at_clear = cleared.get(topic, -1)
        if mine is not None and at_mine > at_theirs and at_mine > at_clear:
            send.append(mine)
        elif theirs is not None and at_theirs >= at_mine and at_theirs > at_clear:
            if mine is None or dump_message(mine) != dump_message(theirs):
                take.append(theirs)
        elif at_clear >= 0:
            if theirs is not None:
                send.append(Message(topic, b"", 0, True, created=at_clear / 1000))
            if mine is not None:
                drop.append(topic)
    return send, take, drop


async def sync_retained(
    redis: aioredis.Redis,
    broker: ClusterBroker,
    known: Cleared,
    node: str,
    stream: str,
    maxlen: int,
    restoring: bool,
) -> None:
    """Bring this node's retained set and Redis' in line, newest wins (module docstring).
    ``restoring``: this node's set is not all loaded yet, so it sends no set of its own."""
    now_ms = int(time.time() * 1000)
    known.forget_old(now_ms)
    raw: dict[bytes, bytes] = await redis.hgetall(RETAINED)  # type: ignore[assignment]  # redis' stubs: str with decode_responses; this client's replies are bytes
    tombs: dict[bytes, bytes] = await redis.hgetall(CLEARED)  # type: ignore[assignment]  # redis' stubs: str with decode_responses; this client's replies are bytes
    stored = {t.decode(): load_message(d) for t, d in raw.items()}
    cleared = dict(known.at)
    old: list[str] = []
    for t, ms_text in tombs.items():
        topic, ms = t.decode(), int(ms_text)
        if ms < now_ms - CLEARED_TTL_MS:
            old.append(topic)
        elif ms > cleared.get(topic, -1):
            cleared[topic] = ms
    local = {m.topic: m for m in broker.retained if not m.topic.startswith("$SYS/")}
    send, take, drop = plan(local, stored, cleared)
    for msg in take:
        broker.apply_remote_retain(msg)
    for topic in drop:
        broker.apply_remote_retain(Message(topic, b"", 0, True, created=cleared[topic] / 1000))
    if restoring:
        send = [m for m in send if not m.payload]
    # A tombstone only this node knows goes to Redis too (a Redis that lost everything).
    send += [
        Message(t, b"", 0, True, created=ms / 1000)
        for t, ms in known.at.items()
        if t not in local and t not in stored and int(tombs.get(t.encode(), b"-1")) < ms
    ]
    if send or old:
        pipe = redis.pipeline(transaction=False)
        for msg in send:
            data = dump_message(msg) if msg.payload else b""
            clear = dump_message(msg)
            args: list[Any] = [msg.topic, data, ms_of(msg), node, stream, maxlen, clear]
            pipe.eval(NEWER, 2, RETAINED, CLEARED, *args)
        if old:
            pipe.hdel(CLEARED, *old)
        await pipe.execute()
