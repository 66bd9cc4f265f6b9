"""Acknowledgements after commit, in memory: a real broker core and SQLite store, a fake
transport, and the store's writer held back so that "not before the commit" is visible."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from ferrymq.mqtt.packets import (
    Puback,
    Pubcomp,
    Publish,
    Pubrec,
    Pubrel,
    Subscribe,
    SubscriptionOptions,
)
from ferrymq.storage.sqlite import SqliteStore
from memory import Peer, new_broker, open_store, settle, until


@pytest.fixture
def store(tmp_path: Path) -> Any:
    s = open_store(tmp_path / "ferrymq.db", flush_interval=3600)
    yield s
    s.close()


async def test_acks_wait_for_the_commit_and_keep_their_order(store: SqliteStore) -> None:
    broker = new_broker(store, durability="acked")
    sub = Peer(broker, "sub", clean=False)
    sub.send(Subscribe(1, [SubscriptionOptions("durable/#", 1)]))
    pub = Peer(broker, "pub")
    await settle()
    sub.received()
    pub.received()
    with store.atomic:  # the writer cannot take the batch while we hold this
        pub.send(Publish("durable/a", b"1", 1, packet_id=1))  # queued for a persistent session
        pub.send(Publish("nobody/listens", b"2", 1, packet_id=2))  # touches no durable state
        pub.send(Publish("retained/x", b"3", 1, retain=True, packet_id=3))
        await settle()
        assert pub.received() == []  # nothing acknowledged before the commit
        assert [type(p) for p in sub.received()] == [Publish]  # delivery is not held
    await until(lambda: pub.transport.data[pub.seen :])
    await settle()
    acks = pub.received()
    assert [(type(a), a.packet_id) for a in acks] == [(Puback, 1), (Puback, 2), (Puback, 3)]
    with store.atomic:
        pub.send(Publish("nobody/listens", b"4", 1, packet_id=4))
        await settle()
        # Nothing waits: acknowledged at once, while the writer is still held.
        assert [(type(a), a.packet_id) for a in pub.received()] == [(Puback, 4)]


async def test_qos2_flow_steps_wait_for_the_commit(store: SqliteStore) -> None:
    broker = new_broker(store, durability="acked")
    pub = Peer(broker, "pub2", clean=False)  # persistent: its packet ids are durable state
    sub = Peer(broker, "sub2", clean=False)
    sub.send(Subscribe(1, [SubscriptionOptions("q2", 2)]))
    await settle()
    pub.received()
    sub.received()
    with store.atomic:
        pub.send(Publish("q2", b"x", 2, packet_id=9))
        await settle()
        assert pub.received() == []  # PUBREC waits
        assert sub.received() == []  # the QoS 2 PUBLISH waits for its packet id too
    await until(lambda: pub.transport.data[pub.seen :])
    await settle()
    assert [(type(p), p.packet_id) for p in pub.received()] == [(Pubrec, 9)]
    (delivery,) = sub.received()
    assert isinstance(delivery, Publish) and delivery.qos == 2
    with store.atomic:
        sub.send(Pubrec(delivery.packet_id))
        pub.send(Pubrel(9))
        await settle()
        assert sub.received() == []  # PUBREL waits for the "PUBREL sent" state
        assert pub.received() == []  # PUBCOMP waits for the packet id's removal
    await until(lambda: pub.transport.data[pub.seen :] and sub.transport.data[sub.seen :])
    await settle()
    assert [(type(p), p.packet_id) for p in pub.received()] == [(Pubcomp, 9)]
    assert [(type(p), p.packet_id) for p in sub.received()] == [(Pubrel, delivery.packet_id)]
    assert store.load_awaiting_rel() == {}


async def test_batched_mode_acknowledges_at_once(store: SqliteStore) -> None:
    broker = new_broker(store, durability="batched")
    pub = Peer(broker, "pub3")
    await settle()
    pub.received()
    with store.atomic:
        pub.send(Publish("retained/y", b"1", 1, retain=True, packet_id=1))
        await settle()
        assert [(type(a), a.packet_id) for a in pub.received()] == [(Puback, 1)]
