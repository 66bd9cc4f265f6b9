"""PUBACKs / PUBRECs held until the forwarding send is in Redis, in memory: the gate's
tickets and order, and a clustered broker's publishers whose acknowledgements wait for
the send carrying their message (and only those)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from ferrymq.cluster.acks import AckGate
from ferrymq.cluster.broker import ClusterBroker, clustered_broker
from ferrymq.config import Settings
from ferrymq.mqtt.packets import Publish, Subscribe, SubscriptionOptions
from memory import Peer, open_store, settle, until


def test_a_hold_needing_nothing_pending_gets_no_ticket() -> None:
    gate = AckGate()
    assert gate.hold(0, 0) == 0
    gate.forwarded(3)
    gate.committed(2)
    assert gate.hold(2, 3) == 0 and len(gate) == 0


def test_tickets_leave_in_order_and_holds_of_one_send_share_one() -> None:
    gate = AckGate()
    first = gate.hold(0, 1)
    assert first and gate.hold(0, 1) == first  # the same send: one ticket
    store = gate.hold(5, 1)  # also needs store batch 5
    later = gate.hold(0, 2)
    assert len({first, store, later}) == 3 and len(gate) == 3
    assert gate.forwarded(2) == first  # ``store`` still waits for batch 5, ``later`` behind it
    assert gate.committed(5) == later
    assert len(gate) == 0


def test_an_outage_releases_what_waits_for_sends_but_not_for_the_store() -> None:
    gate = AckGate()
    sent_only = gate.hold(0, 4)
    stored = gate.hold(7, 4)
    assert gate.forwarded(4) == sent_only  # the node gave the sends up
    assert gate.committed(7) == stored


@pytest.fixture
async def broker() -> AsyncIterator[ClusterBroker]:
    settings = Settings(node_name="me", sys_interval=0, cluster_redis_url="redis://unused")
    b = clustered_broker(settings, None, asyncio.get_running_loop())
    b.node.up = True  # as if joined: forward() queues
    b.node.replica.add("n2", "remote/#")
    yield b
    b.shutdown()


async def publisher(broker: ClusterBroker) -> Peer:
    pub = Peer(broker, "pub", version=5)
    await pub.connack()
    return pub


def acks(pub: Peer) -> list[tuple[str, int]]:
    return [(type(p).__name__, p.packet_id) for p in pub.received() if not isinstance(p, Publish)]


def sent_to_redis(broker: ClusterBroker) -> None:
    """What the sender does: take the outbox, then report the send executed."""
    broker.node.outbox.take()
    broker.forwarded(broker.node.outbox.sends - 1)


async def test_qos1_and_qos2_acks_wait_for_the_send_carrying_their_message(
    broker: ClusterBroker,
) -> None:
    pub = await publisher(broker)
    pub.send(Publish("remote/a", b"1", 1, packet_id=1))
    pub.send(Publish("remote/b", b"2", 2, packet_id=2))
    await settle()
    assert acks(pub) == []  # in the outbox only: nothing acknowledged yet
    sent_to_redis(broker)
    await settle()
    assert acks(pub) == [("Puback", 1), ("Pubrec", 2)]


async def test_local_only_and_qos0_messages_are_not_held(broker: ClusterBroker) -> None:
    pub = await publisher(broker)
    pub.send(Publish("here/a", b"1", 1, packet_id=1))
    pub.send(Publish("remote/q0", b"0", 0))  # forwarded, but QoS 0 has no acknowledgement
    await settle()
    assert acks(pub) == [("Puback", 1)]
    assert broker._acks.ticket == 0  # no ticket was ever needed


async def test_a_local_ack_after_a_held_one_keeps_the_order(broker: ClusterBroker) -> None:
    pub = await publisher(broker)
    pub.send(Publish("remote/a", b"1", 1, packet_id=1))
    pub.send(Publish("here/b", b"2", 1, packet_id=2))
    await settle()
    assert acks(pub) == []
    sent_to_redis(broker)
    await settle()
    assert acks(pub) == [("Puback", 1), ("Puback", 2)]


async def test_a_later_send_does_not_release_before_its_turn(broker: ClusterBroker) -> None:
    pub = await publisher(broker)
    pub.send(Publish("remote/a", b"1", 1, packet_id=1))
    await settle()
    broker.node.outbox.take()  # send 1 is on its way
    pub.send(Publish("remote/b", b"2", 2, packet_id=2))
    await settle()
    broker.forwarded(1)
    await settle()
    assert acks(pub) == [("Puback", 1)]  # the PUBREC waits for send 2
    sent_to_redis(broker)
    await settle()
    assert acks(pub) == [("Pubrec", 2)]


async def test_redis_away_acknowledges_at_once(broker: ClusterBroker) -> None:
    broker.node.up = False  # outage: forwarding is counted as paused, not queued
    pub = await publisher(broker)
    pub.send(Publish("remote/a", b"1", 2, packet_id=1))
    await settle()
    assert acks(pub) == [("Pubrec", 1)]
    assert broker.metrics["cluster.forward.paused"] == 1


async def test_a_failed_send_releases_its_acks(broker: ClusterBroker) -> None:
    pub = await publisher(broker)
    pub.send(Publish("remote/a", b"1", 1, packet_id=1))
    await settle()
    broker.node._went_down()  # the send failed: the node lost Redis
    await settle()
    assert acks(pub) == [("Puback", 1)]
    assert broker.metrics["cluster.forward.paused"] == 1


async def test_with_acked_durability_only_a_store_write_is_waited_for(tmp_path) -> None:
    """A forwarded message that wrote nothing to the store asks no commit of it; one also
    queued for a local persistent session waits for the send and the commit."""
    settings = Settings(
        node_name="me", sys_interval=0, cluster_redis_url="redis://unused", durability="acked"
    )
    b = clustered_broker(settings, open_store(tmp_path / "db"), asyncio.get_running_loop())
    b.node.up = True
    b.node.subacks.bound = 0.0
    b.node.replica.add("n2", "remote/#")
    commits: list[int] = []
    request = b.store.request_commit  # type: ignore[union-attr]

    def counted(batch: int) -> None:
        commits.append(batch)
        request(batch)

    b.store.request_commit = counted  # type: ignore[method-assign,union-attr]
    try:
        pub = await publisher(b)
        pub.send(Publish("remote/a", b"1", 1, packet_id=1))
        await settle()
        sent_to_redis(b)
        await settle()
        assert acks(pub) == [("Puback", 1)] and commits == []
        sub = Peer(b, "sub", clean=False)
        await sub.connack()
        sub.send(Subscribe(1, [SubscriptionOptions("remote/#", 1)]))
        await sub.expect()
        pub.send(Publish("remote/b", b"2", 1, packet_id=2))
        await settle()
        assert commits  # queued for the offline-capable session: written, commit asked
        sent_to_redis(b)
        await until(lambda: acks(pub) == [("Puback", 2)])
    finally:
        b.shutdown()
        b.store.close()  # type: ignore[union-attr]
