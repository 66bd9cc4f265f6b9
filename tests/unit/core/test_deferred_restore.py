"""Deferred restore, in memory: the broker serves before the stored messages are back, and
what happens meanwhile (a resuming CONNECT, new messages, retained changes) comes out right."""

from __future__ import annotations

from pathlib import Path

from ferrymq.mqtt.packets import (
    Connack,
    Disconnect,
    Puback,
    Publish,
    Suback,
    Subscribe,
    SubscriptionOptions,
)
from memory import Peer, new_broker, open_store, settle


async def _stored_state(path: Path) -> None:
    """A persistent session "s" with three queued messages, and two retained topics."""
    store = open_store(path)
    broker = new_broker(store)
    s = Peer(broker, "s", clean=False)
    s.send(Subscribe(1, [SubscriptionOptions("q", 1)]))
    s.send(Disconnect())
    p = Peer(broker, "p")
    for i in range(3):
        p.send(Publish("q", b"stored%d" % i, 1, packet_id=i + 1))
    p.send(Publish("r/keep", b"old", 1, retain=True, packet_id=10))
    p.send(Publish("r/changed", b"old", 1, retain=True, packet_id=11))
    await settle()
    broker.shutdown()
    store.close()


async def test_deferred_restore_keeps_order_and_newer_state(tmp_path: Path) -> None:
    path = tmp_path / "ferrymq.db"
    await _stored_state(path)
    store = open_store(path)
    try:
        broker = new_broker(store)
        broker.load_state()
        assert broker.restoring and len(broker.retained) == 0
        # While restoring: a new message for the offline session, a retained change,
        # a CONNECT resuming the session with a SUBSCRIBE right behind it, and a new
        # subscriber of the retained topics.
        p = Peer(broker, "p2")
        p.send(Publish("q", b"new", 1, packet_id=1))
        p.send(Publish("r/changed", b"new", 1, retain=True, packet_id=2))
        s = Peer(broker, "s", clean=False)
        s.send(Subscribe(2, [SubscriptionOptions("other", 1)]))
        watcher = Peer(broker, "w")
        watcher.send(Subscribe(1, [SubscriptionOptions("r/+", 0)]))
        await settle()
        assert s.received() == []  # the resuming client waits for its messages
        assert [type(x) for x in watcher.received()] == [Connack, Suback]
        await broker.finish_restore()
        await settle()
        got = s.received()
        assert isinstance(got[0], Connack) and got[0].session_present
        publishes = [x.payload for x in got if isinstance(x, Publish)]
        assert publishes == [b"stored0", b"stored1", b"stored2", b"new"]
        assert any(isinstance(x, Suback) for x in got)  # the pipelined SUBSCRIBE ran
        retained = {x.topic: x.payload for x in watcher.received() if isinstance(x, Publish)}
        assert retained == {"r/keep": b"old", "r/changed": b"new"}
        assert not broker.restoring
        for x in got:
            if isinstance(x, Publish):
                s.send(Puback(x.packet_id))
        await settle()
        broker.shutdown()
    finally:
        store.close()
    # Nothing was restored twice or lost: the acknowledged queue is gone for good.
    store = open_store(path)
    try:
        assert store.load_session_messages() == {}
    finally:
        store.close()
