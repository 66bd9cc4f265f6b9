"""The pure parts of cluster-wide sessions, in memory: session writes collapsed and turned
into script arguments, a session read back from what they wrote, group commit over the
local store and Redis, how a message folds onto one session's subscriptions, and the
core's side of a hand-over (a session handed over lingers, one taken in resumes)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from ferrymq.cluster.clients import delivery_for, identity
from ferrymq.cluster.session_writes import SessionWrites, load_session
from ferrymq.cluster.store import ClusterStore
from ferrymq.core.broker import Broker
from ferrymq.model.delivery import INFLIGHT, Delivery
from ferrymq.model.message import Message
from ferrymq.model.subscription import Subscription
from ferrymq.mqtt.packets import Connack, Publish, Subscribe, SubscriptionOptions
from ferrymq.storage.codec import dump_message, load_message
from memory import Peer, serving, settle

EXPIRY = {"session_expiry_interval": 300}


def ops(args: list[Any]) -> list[tuple[Any, ...]]:
    return [tuple(args[i : i + 5]) for i in range(0, len(args), 5)]


class FakeRedis:
    """What the write script does to one session's keys (ownership aside)."""

    def __init__(self) -> None:
        self.record: bytes | None = None
        self.msgs: dict[bytes, bytes] = {}
        self.metas: dict[bytes, bytes] = {}
        self.rel: set[bytes] = set()

    def apply(self, args: list[Any]) -> None:
        def b(v: Any) -> bytes:
            return v if isinstance(v, bytes) else str(v).encode()

        for op, _cid, a, x, y in ops(args):
            if op == "rec":
                self.record = b(a)
            elif op == "del":
                self.__init__()  # type: ignore[misc]
            elif op == "put":
                self.msgs[b(a)], self.metas[b(a)] = b(x), b(y)
            elif op == "meta":
                self.metas[b(a)] = b(x)
            elif op == "rm":
                self.msgs.pop(b(a), None)
                self.metas.pop(b(a), None)
            elif op == "rel":
                self.rel.add(b(a))
            elif op == "unrel":
                self.rel.discard(b(a))

    def load(self) -> Any:
        return load_session(self.record, self.msgs, self.metas, sorted(self.rel))


def test_only_the_last_write_of_a_key_is_sent() -> None:
    w = SessionWrites()
    m1, m2 = Message("t/1", b"one", 1), Message("t/2", b"two", 1)
    w.put_session("c", {"expiry_interval": 300})
    w.put_message("c", 1, m1, {"q": 1, "s": "queued"})
    w.put_message("c", 2, m2, {"q": 1, "s": "queued"})
    w.update_meta("c", 1, {"q": 1, "s": "inflight", "p": 7})  # folded into the put
    w.delete_message("c", 2)  # queued and acknowledged in one batch: never written
    w.awaiting_rel("c", 5, True)
    w.awaiting_rel("c", 5, False)
    args, deleted = w.take()
    kinds = [(op, key) for op, _, key, _, _ in ops(args)]
    assert kinds[1:] == [("put", "1"), ("rm", "2"), ("unrel", "5")] and kinds[0][0] == "rec"
    put = ops(args)[1]
    assert json.loads(put[4]) == {"q": 1, "s": "inflight", "p": 7}
    assert not deleted and not w


def test_a_deleted_session_drops_what_was_pending_and_frees_its_id() -> None:
    w = SessionWrites()
    w.put_session("gone", {"expiry_interval": 300})
    w.put_message("gone", 1, Message("t", b"x", 1), {"q": 1, "s": "queued"})
    w.delete_session("gone")
    w.delete_session("again")
    w.put_session("again", {"expiry_interval": 60})  # clean start: a new session at once
    args, deleted = w.take()
    assert [(op, cid) for op, cid, *_ in ops(args)] == [
        ("del", "gone"),
        ("del", "again"),
        ("rec", "again"),
    ]
    assert deleted == {"gone"}


def test_a_session_reads_back_as_it_was_written() -> None:
    w, redis = SessionWrites(), FakeRedis()
    w.put_session("c", {"expiry_interval": 300, "subscriptions": [{"f": "a/#", "q": 1}]})
    for key in (3, 1, 2):
        w.put_message("c", key, Message(f"a/{key}", b"p%d" % key, 1), {"q": 1, "s": "queued"})
    w.awaiting_rel("c", 9, True)
    redis.apply(w.take()[0])
    w.update_meta("c", 2, {"q": 1, "s": "inflight", "p": 4})  # a later batch
    w.delete_message("c", 3)
    redis.apply(w.take()[0])
    data, pids, records = redis.load()
    assert data["subscriptions"] == [{"f": "a/#", "q": 1}]
    assert pids == [9]
    assert [(key, msg.payload, meta.get("s")) for key, msg, meta in records] == [
        (1, b"p1", "queued"),
        (2, b"p2", "inflight"),
    ]
    assert FakeRedis().load() is None  # no record: no persistent session


class FakeLocal:
    """The local store's group commit, driven by hand."""

    def __init__(self) -> None:
        self.open_batch = 1
        self.listener: Callable[[int], None] | None = None

    def set_commit_listener(self, listener: Callable[[int], None] | None) -> None:
        self.listener = listener

    def request_commit(self, batch: int) -> None:
        pass

    def commit(self) -> None:  # what its writer thread does
        self.open_batch += 1
        assert self.listener is not None
        self.listener(self.open_batch - 1)


async def test_a_batch_counts_as_committed_once_redis_has_it_too() -> None:
    local = FakeLocal()
    store = ClusterStore(local, asyncio.get_running_loop())  # type: ignore[arg-type]
    reported: list[int] = []
    woken: list[bool] = []
    store.set_commit_listener(reported.append)
    store.wake = lambda: woken.append(True)
    store.online = True
    store.put_session_message("c", 1, Message("t", b"x", 1), {"q": 1, "s": "queued"})
    local.commit()  # batch 1 is on disk...
    await asyncio.sleep(0)
    assert reported == [] and woken  # ...but not in Redis yet: a send is asked for
    upto = store.taking()
    store.writes.take()
    store.sent(upto)
    assert reported == [1]
    local.commit()  # nothing pending for Redis: reported on the local commit alone
    await asyncio.sleep(0)
    assert reported == [1, 2]
    store.put_session_message("c", 2, Message("t", b"y", 1), {"q": 1, "s": "queued"})
    store.went_offline()  # Redis away: the local commit alone counts, the write waits
    local.commit()
    await asyncio.sleep(0)
    assert reported == [1, 2, 3] and store.writes


def sub(filter_: str, qos: int, **kw: Any) -> Subscription:
    return Subscription("c", None, filter_, qos, **kw)


def test_a_message_folds_onto_a_sessions_subscriptions_once() -> None:
    subs = [sub("a/+", 0, identifier=3), sub("a/#", 2, retain_as_published=True), sub("b", 1)]
    assert delivery_for(subs, "c", Message("a/x", b"", 1, retain=True)) == (1, True, (3,))
    assert delivery_for(subs, "c", Message("b/x", b"", 2)) is None
    own = Message("a/x", b"", 1, publisher="c")
    assert delivery_for([sub("a/#", 1, no_local=True)], "c", own) is None
    assert delivery_for([sub("a/#", 1, no_local=True), sub("a/x", 0)], "c", own) == (0, False, None)


def test_a_message_is_recognised_after_travelling_between_nodes() -> None:
    """The hand-over's dedup compares a copy that crossed Redis with one that did not."""
    sent = Message("t/x", b"p", 2, publisher="pub", properties={"content_type": "a"})
    copy = load_message(dump_message(sent))
    assert identity(copy) == identity(sent)
    later = Message("t/x", b"p", 2, publisher="pub", created=sent.created + 1e-6)
    assert identity(later) != identity(sent)  # the same content published again
    assert identity(Message("t/x", b"q", 2, publisher="pub", created=sent.created)) != (
        identity(sent)
    )


@pytest.fixture
async def brokers(tmp_path: Path) -> AsyncIterator[tuple[Broker, Broker]]:
    async with serving(tmp_path / "a") as a, serving(tmp_path / "b") as b:
        yield a, b


async def test_a_session_handed_over_lingers_then_resumes_elsewhere(brokers) -> None:
    a, b = brokers
    peer = Peer(a, "mover", False, version=5, properties=EXPIRY)
    await peer.expect()
    peer.send(Subscribe(1, [SubscriptionOptions("m/#", 1)]))
    await peer.expect()
    peer.lose()
    a.publish(Message("m/1", b"queued", 1))
    session = a.sessions["mover"]
    data = session.snapshot()
    records = [(d.key, d.msg, d.meta()) for d in session.queue]
    assert [m.payload for _, m, _ in records] == [b"queued"]

    a.registry.hand_over(session, linger=True)
    assert "mover" not in a.sessions  # not ended: no will, nothing deleted
    a.publish(Message("m/2", b"late", 1))  # still routed here: collected for the new owner
    assert [d.msg.payload for d in session.queue] == [b"late"]
    a.registry.unroute(session)
    assert a.publish(Message("m/3", b"gone", 1)) == 0

    revived = b.restore.revive("mover", data, [], records)
    assert revived is b.sessions["mover"]
    back = Peer(b, "mover", False, version=5, properties=EXPIRY)
    got = await back.expect(2)
    assert isinstance(got[0], Connack) and got[0].session_present
    assert [(p.topic, p.payload) for p in got[1:] if isinstance(p, Publish)] == [("m/1", b"queued")]
    b.publish(Message("m/4", b"new", 1))  # its subscription came along
    (pub,) = await back.expect()
    assert pub.payload == b"new"


async def test_a_session_taken_in_after_its_expiry_is_gone(brokers) -> None:
    _, b = brokers
    data = {"expiry_interval": 5, "disconnected_at": 1.0, "subscriptions": [{"f": "x", "q": 1}]}
    d = Delivery(Message("x", b"old", 1), 1, False, None, 3, INFLIGHT)
    assert b.restore.revive("old", data, [], [(1, d.msg, d.meta())]) is None
    assert "old" not in b.sessions
    assert b.publish(Message("x", b"", 1)) == 0
    await settle()
