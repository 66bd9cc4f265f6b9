"""Back-pressure between nodes, in memory: the QoS 1/2 inbox stops at a full local queue
and goes on as it drains (or stalls), a sender holds its publishers' acknowledgements
while a destination's stream is long, and lets them go once it is short again."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from ferrymq.cluster.broker import ClusterBroker, clustered_broker
from ferrymq.cluster.codec import count_frames, frame
from ferrymq.cluster.pressure import (
    CHECK_EVERY,
    INBOX_HIGH,
    INBOX_LOW,
    STALL,
    Destinations,
    DispatchGate,
)
from ferrymq.config import Settings
from ferrymq.model.message import Message
from ferrymq.mqtt.packets import Puback, Publish, Subscribe, SubscriptionOptions
from memory import Peer, settle

MQUEUE = 20


@pytest.fixture
async def broker() -> AsyncIterator[ClusterBroker]:
    settings = Settings(
        node_name="me", sys_interval=0, cluster_redis_url="redis://unused", max_mqueue_len=MQUEUE
    )
    b = clustered_broker(settings, None, asyncio.get_running_loop())
    b.node.up = True  # as if joined: forward() queues
    b.node.subacks.bound = 0.0
    yield b
    b.node._went_down()  # cancels the sender's timer, if one is set
    b.shutdown()


async def slow_subscriber(broker: ClusterBroker) -> Peer:
    """A QoS 1 subscriber of ``t`` that acknowledges nothing until told to."""
    sub = Peer(broker, "slow", version=5)
    await sub.connack()
    sub.send(Subscribe(1, [SubscriptionOptions("t", 1)]))
    await sub.expect()
    return sub


def messages(count: int) -> list[Message]:
    return [Message("t", b"%d" % i, 1, publisher="far") for i in range(count)]


async def test_the_inbox_stops_at_a_full_queue_and_goes_on_as_it_drains(
    broker: ClusterBroker,
) -> None:
    sub = await slow_subscriber(broker)
    session = sub.client.session
    gate = broker.node.gate
    assert (gate.high, gate.low, gate.every) == (MQUEUE // 2, MQUEUE // 4, MQUEUE // 4)
    batch = messages(200)
    done = broker.dispatch_remote(batch, None, 0, gate)
    # The inflight window went out, then the queue filled to ``high`` (give or take the
    # messages between two looks), and no further.
    queued = len(session.queue)  # type: ignore[union-attr]
    assert gate.high <= queued < gate.high + gate.every and session.dropped == 0  # type: ignore[union-attr]
    assert done == len(session.inflight) + queued  # type: ignore[union-attr]
    assert broker.dispatch_remote(batch, None, done, gate) == done  # still full: nothing
    await settle()  # the writes leave at the end of the loop's turn
    publishes = [p for p in sub.received() if isinstance(p, Publish)]
    for p in publishes:  # the subscriber catches up: its queue drains below ``low``
        sub.send(Puback(p.packet_id))  # type: ignore[arg-type]
    await settle()
    assert len(session.queue) <= gate.low  # type: ignore[union-attr]
    went_on = broker.dispatch_remote(batch, None, done, gate)
    assert went_on > done
    assert session.dropped == 0  # type: ignore[union-attr]
    assert broker.metrics["delivery.dropped.queue_full"] == 0


async def test_a_subscriber_that_stalls_stops_holding_the_inbox(broker: ClusterBroker) -> None:
    sub = await slow_subscriber(broker)
    gate = broker.node.gate
    now = asyncio.get_running_loop().time()
    done = broker.dispatch_remote(messages(100), None, 0, gate)
    assert done < 100 and gate
    assert not gate.ready(now + STALL / 2)  # not a second yet
    assert gate.ready(now + STALL + 1)  # no shorter for STALL seconds: no longer waited for
    # It only queues (and drops, as a standalone broker's slow subscriber) from then on.
    assert broker.dispatch_remote(messages(100), None, 0, gate) == 100
    assert sub.client.session.dropped > 0  # type: ignore[union-attr]


async def test_a_subscriber_that_leaves_releases_the_inbox(broker: ClusterBroker) -> None:
    sub = await slow_subscriber(broker)
    gate = broker.node.gate
    assert broker.dispatch_remote(messages(100), None, 0, gate) < 100
    sub.lose()
    await settle()
    assert gate.ready(asyncio.get_running_loop().time())


async def test_dispatch_stops_at_its_time_slice(broker: ClusterBroker) -> None:
    """A batch of thousands yields to the loop: ``until`` in the past stops it at the
    first look at the clock, which comes every few messages, not for each."""
    done = broker.dispatch_remote(messages(1000), None, 0, None, 0.0)
    assert 0 < done < 1000
    assert broker.dispatch_remote(messages(1000), None, done) == 1000


def test_a_destination_is_full_from_the_high_mark_until_the_low_one() -> None:
    d = Destinations()
    d.measured("n2", INBOX_HIGH - 1)
    assert not d.full
    d.measured("n2", INBOX_HIGH)
    assert d.full == {"n2"}
    d.measured("n2", INBOX_LOW + 1)  # between the marks: still full
    assert d.full == {"n2"}
    d.measured("n2", INBOX_LOW)
    assert not d.full
    d.measured("n3", INBOX_HIGH)
    d.forget("n3")  # down: nothing waits for it
    assert not d.full


def test_a_length_is_read_at_most_every_check_interval_unless_full() -> None:
    d = Destinations()
    assert d.to_check(["n2", "n3"], 100.0) == ["n2", "n3"]
    assert d.to_check(["n2", "n3"], 100.0 + CHECK_EVERY / 2) == []
    d.measured("n3", INBOX_HIGH)
    assert d.to_check(["n2", "n3"], 100.0 + CHECK_EVERY / 2) == ["n3"]
    assert d.to_check(["n2"], 100.0 + CHECK_EVERY) == ["n2"]


def test_frames_are_counted_without_decoding() -> None:
    batch = b"".join(frame(m) for m in messages(7))
    assert count_frames(batch) == 7 and count_frames(b"") == 0


def test_a_gate_waits_for_nothing_at_first() -> None:
    gate = DispatchGate(1000)
    assert not gate and gate.ready(0.0)


async def test_acknowledgements_wait_while_a_destination_is_full(broker: ClusterBroker) -> None:
    node = broker.node
    node.replica.add("n2", "remote/#")
    pub = Peer(broker, "pub", version=5)
    await pub.connack()

    def sent(length: int) -> None:
        """What the sender does: the batch is in Redis, and the stream is ``length`` long."""
        node.outbox.take()
        node._sent = node.outbox.sends - 1
        node.destinations.measured("n2", length)
        node._release()

    def acks() -> list[int]:
        return [p.packet_id for p in pub.received() if isinstance(p, Puback)]

    pub.send(Publish("remote/a", b"1", 1, packet_id=1))
    await settle()
    sent(INBOX_HIGH)
    await settle()
    assert acks() == []  # in Redis, but node 2 is behind: the publisher waits
    pub.send(Publish("remote/b", b"2", 1, packet_id=2))
    await settle()
    sent(INBOX_LOW + 1)
    await settle()
    assert acks() == []
    node.destinations.measured("n2", INBOX_LOW)  # what the sender's next look finds
    node._release()
    await settle()
    assert acks() == [1, 2]


async def test_a_full_destination_that_goes_down_holds_nothing(broker: ClusterBroker) -> None:
    node = broker.node
    node.replica.add("n2", "remote/#")
    pub = Peer(broker, "pub", version=5)
    await pub.connack()
    pub.send(Publish("remote/a", b"1", 1, packet_id=1))
    await settle()
    node.outbox.take()
    node._sent = node.outbox.sends - 1
    node.destinations.measured("n2", INBOX_HIGH)
    node._release()
    node._apply_change({b"op": b"down", b"node": b"n2"})
    node._release()
    await settle()
    assert [p.packet_id for p in pub.received() if isinstance(p, Puback)] == [1]
