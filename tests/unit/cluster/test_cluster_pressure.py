"""Back-pressure between nodes, in memory: the QoS 1/2 inbox stops at a full local queue
and goes on as it drains (or stalls), a sender holds its publishers' acknowledgements
while a destination's stream is long, and lets them go once it is short again; a node
says when its QoS 0 backlog is long, and a sender pauses the QoS 0 publishers feeding it
until it is not, it is down, or Redis is gone."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from ferrymq.cluster.broker import ClusterBroker, clustered_broker
from ferrymq.cluster.codec import count_frames, frame, split
from ferrymq.cluster.pressure import (
    BEHIND0_TTL,
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


async def qos0_feeder(broker: ClusterBroker, name: str = "feeder") -> Peer:
    """A client publishing QoS 0 to ``remote/#``, which n2 subscribes to."""
    broker.node.replica.add("n2", "remote/#")
    pub = Peer(broker, name, version=5)
    await pub.connack()
    return pub


@pytest.mark.parametrize("ends", ["caught up", "down", "redis gone"])
async def test_a_qos0_publisher_waits_while_its_destination_is_behind(
    broker: ClusterBroker, ends: str
) -> None:
    node = broker.node
    pub = await qos0_feeder(broker)
    node.destinations.said("n2", True)
    pub.send(Publish("remote/a", b"1", 0))
    await settle()
    assert not pub.transport.reading
    pub.send(Publish("remote/a", b"2", 0))  # read once the pause ends
    await settle()
    assert node.outbox.messages == 1
    if ends == "caught up":
        node.destinations.said("n2", False)
    elif ends == "down":
        node._apply_change({b"op": b"down", b"node": b"n2"})
    else:
        node._went_down()
    await settle()
    assert pub.transport.reading
    assert not node.destinations.behind
    qos0, _, _ = node.outbox.take()
    if ends == "caught up":
        assert [m.payload for m in split(qos0["n2"])] == [b"1", b"2"]
    elif ends == "down":  # its routes went with it
        assert [m.payload for m in split(qos0["n2"])] == [b"1"]


async def test_only_the_publishers_feeding_a_node_that_is_behind_wait(
    broker: ClusterBroker,
) -> None:
    node = broker.node
    feeder = await qos0_feeder(broker)
    node.replica.add("n3", "other/#")
    other, qos1 = Peer(broker, "other", version=5), Peer(broker, "qos1", version=5)
    await other.connack()
    await qos1.connack()
    node.destinations.said("n2", True)
    feeder.send(Publish("remote/a", b"1", 0))
    other.send(Publish("other/a", b"1", 0))  # to n3, which is not behind
    qos1.send(Publish("remote/a", b"1", 1, packet_id=1))  # held by n2's stream instead
    await settle()
    assert not feeder.transport.reading
    assert other.transport.reading and qos1.transport.reading


def test_a_node_that_is_behind_is_asked_with_each_qos0_send_at_most_every_interval() -> None:
    d = Destinations()
    assert d.to_check0(["n2"], 100.0) == ["n2"]
    assert d.to_check0(["n2"], 100.0 + CHECK_EVERY / 2) == []
    assert d.to_check0(["n2"], 100.0 + CHECK_EVERY) == ["n2"]


class FlagRedis:
    """What ``_say_behind0`` asks of Redis, kept in order."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, ...]] = []

    async def set(self, key: str, value: bytes, px: int) -> None:
        self.calls.append(("set", key, str(px)))

    async def delete(self, key: str) -> None:
        self.calls.append(("delete", key))


async def test_a_node_keeps_saying_it_is_behind_until_its_backlog_is_short(
    broker: ClusterBroker,
) -> None:
    """The key is set when the backlog passes its high mark, set again before it expires
    while the node stays behind, and deleted once it is back to the low mark."""
    node = broker.node
    redis = FlagRedis()
    task = asyncio.create_task(node._say_behind0(redis))  # type: ignore[arg-type]
    await settle()
    assert redis.calls == []  # not behind: nothing is written
    node._behind0 = True
    node._behind0_changed.set()
    await settle()
    set_it = ("set", "ferrymq:behind0:me", str(int(BEHIND0_TTL * 1000)))
    assert redis.calls == [set_it]
    await asyncio.sleep(BEHIND0_TTL / 2)
    assert redis.calls[:2] == [set_it, set_it]  # refreshed within its lifetime
    node._behind0 = False
    node._behind0_changed.set()
    await settle()
    assert redis.calls[-1] == ("delete", "ferrymq:behind0:me")
    task.cancel()
