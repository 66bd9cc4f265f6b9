"""Publish to subscribers through the broker in memory, as the wire shows it: QoS 0/1/2 flows
with their acknowledgements, retained messages on subscribe, one copy for overlapping
subscriptions, topic aliases both ways (memory.py builds the broker, encodes for the peers
and decodes for them)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from ferrymq.core.broker import Broker
from ferrymq.model.message import Message
from ferrymq.mqtt import reason_codes as rc
from ferrymq.mqtt.codec import encode
from ferrymq.mqtt.packets import (
    Connack,
    Disconnect,
    Puback,
    Pubcomp,
    Publish,
    Pubrec,
    Pubrel,
    Suback,
    Subscribe,
    SubscriptionOptions,
)
from memory import Peer, serving, settle


@pytest.fixture
async def broker(tmp_path: Path) -> AsyncIterator[Broker]:
    async with serving(tmp_path) as b:
        yield b


async def connected(broker: Broker, client_id: str, *filters: tuple[str, int]) -> Peer:
    """A v3.1.1 peer past its CONNACK, subscribed to ``filters`` (its SUBACK read)."""
    peer = Peer(broker, client_id)
    assert await peer.connack() == Connack(False, 0)
    if filters:
        options = [SubscriptionOptions(f, qos) for f, qos in filters]
        peer.send(Subscribe(1, options))
        assert await peer.expect() == [Suback(1, [qos for _, qos in filters])]
    return peer


async def test_qos0_is_delivered_without_acknowledgements(broker: Broker) -> None:
    sub = await connected(broker, "sub", ("t/#", 0))
    pub = await connected(broker, "pub")
    pub.send(Publish("t/a", b"zero"))
    assert await sub.expect() == [Publish("t/a", b"zero")]
    assert pub.received() == []


async def test_qos1_puback_to_the_publisher_and_a_qos1_delivery(broker: Broker) -> None:
    sub = await connected(broker, "sub", ("t/#", 1))
    pub = await connected(broker, "pub")
    pub.send(Publish("t/a", b"one", 1, packet_id=7))
    assert await pub.expect() == [Puback(7)]
    (delivery,) = await sub.expect()
    assert delivery == Publish("t/a", b"one", 1, packet_id=delivery.packet_id)
    sub.send(Puback(delivery.packet_id))
    await settle()
    assert sub.received() == [] and pub.received() == []


async def test_the_counters_of_a_qos1_exchange_are_exact_when_read(broker: Broker) -> None:
    """Bytes, packets, PUBLISH sent, PUBACK both ways and acknowledged messages are held
    in native integers too; ``metrics`` adds them before anyone reads it."""
    sub = await connected(broker, "sub", ("t/#", 1))
    pub = await connected(broker, "pub")
    before = dict(broker.metrics)
    publish = encode(Publish("t/a", b"one", 1, packet_id=7), 4)
    pub.send_bytes(publish)
    assert await pub.expect() == [Puback(7)]
    (delivery,) = await sub.expect()
    puback = encode(Puback(delivery.packet_id), 4)
    sub.send_bytes(puback)
    await settle()
    grown = {k: v - before[k] for k, v in broker.metrics.items() if v != before[k]}
    sent = len(encode(delivery, 4)) + len(encode(Puback(7), 4))
    assert grown == {
        "bytes.received": len(publish) + len(puback),
        "bytes.sent": sent,
        "packets.received": 2,
        "packets.sent": 2,
        "packets.publish.received": 1,
        "packets.publish.sent": 1,
        "packets.puback.received": 1,
        "packets.puback.sent": 1,
        "messages.received": 1,
        "messages.publish": 1,
        "messages.qos1.received": 1,
        "messages.sent": 1,
        "messages.delivered": 1,
        "messages.qos1.sent": 1,
        "messages.acked": 1,
        "client.check_acl": 1,
        "client.acl.allow": 1,
    }


async def test_qos1_is_downgraded_to_the_subscription_qos(broker: Broker) -> None:
    sub = await connected(broker, "sub", ("t/#", 0))
    pub = await connected(broker, "pub")
    pub.send(Publish("t/a", b"one", 1, packet_id=1))
    assert await pub.expect() == [Puback(1)]
    assert await sub.expect() == [Publish("t/a", b"one")]


async def test_qos2_both_handshakes_and_one_delivery(broker: Broker) -> None:
    sub = await connected(broker, "sub", ("t/#", 2))
    pub = await connected(broker, "pub")
    pub.send(Publish("t/a", b"two", 2, packet_id=3))
    assert await pub.expect() == [Pubrec(3)]
    (delivery,) = await sub.expect()
    assert (delivery.payload, delivery.qos) == (b"two", 2)
    pub.send(Publish("t/a", b"two", 2, dup=True, packet_id=3))  # resent before PUBREL
    assert await pub.expect() == [Pubrec(3)]
    pub.send(Pubrel(3))
    assert await pub.expect() == [Pubcomp(3)]
    assert sub.received() == []  # exactly once: the resend was not delivered again
    sub.send(Pubrec(delivery.packet_id))
    assert await sub.expect() == [Pubrel(delivery.packet_id)]
    sub.send(Pubcomp(delivery.packet_id))
    await settle()
    assert sub.received() == [] and pub.received() == []


async def test_retained_message_is_delivered_on_subscribe(broker: Broker) -> None:
    pub = await connected(broker, "pub")
    pub.send(Publish("r/x", b"kept", 1, retain=True, packet_id=1))
    assert await pub.expect() == [Puback(1)]
    late = await connected(broker, "late")
    late.send(Subscribe(2, [SubscriptionOptions("r/#", 1)]))
    suback, retained = await late.expect(2)
    assert suback == Suback(2, [1])
    assert retained == Publish("r/x", b"kept", 1, retain=True, packet_id=retained.packet_id)


async def test_a_live_message_is_not_flagged_retained(broker: Broker) -> None:
    sub = await connected(broker, "sub", ("r/#", 0))
    pub = await connected(broker, "pub")
    pub.send(Publish("r/x", b"now", retain=True))
    assert await sub.expect() == [Publish("r/x", b"now")]


async def test_overlapping_subscriptions_deliver_one_copy_at_the_highest_qos(
    broker: Broker,
) -> None:
    sub = await connected(broker, "sub", ("o/+", 0), ("o/#", 1), ("o/a", 0))
    pub = await connected(broker, "pub")
    pub.send(Publish("o/a", b"once", 1, packet_id=1))
    assert await pub.expect() == [Puback(1)]
    (delivery,) = await sub.expect()
    assert (delivery.payload, delivery.qos) == (b"once", 1)


async def test_topic_aliases_from_a_v5_publisher_name_the_topic(broker: Broker) -> None:
    sub = await connected(broker, "sub", ("a/#", 0))
    pub = Peer(broker, "pub", version=5)
    await pub.connack()
    pub.send(Publish("a/b", b"set", properties={"topic_alias": 1}))
    pub.send(Publish("", b"used", properties={"topic_alias": 1}))
    assert await sub.expect(2) == [Publish("a/b", b"set"), Publish("a/b", b"used")]


async def test_a_v5_subscriber_gets_aliases_up_to_its_maximum(broker: Broker) -> None:
    sub = Peer(broker, "sub", version=5, properties={"topic_alias_maximum": 1})
    await sub.connack()
    sub.send(Subscribe(1, [SubscriptionOptions("a/#", 0)]))
    await sub.expect()
    pub = await connected(broker, "pub")
    for topic in ("a/b", "a/b", "a/c"):
        pub.send(Publish(topic, b"x"))
    first, second, third = await sub.expect(3)
    assert (first.topic, first.properties) == ("a/b", {"topic_alias": 1})
    assert (second.topic, second.properties) == ("", {"topic_alias": 1})
    assert (third.topic, third.properties) == ("a/c", {})  # no alias left for a second topic


async def test_a_topic_alias_above_the_maximum_closes_with_0x94(broker: Broker) -> None:
    pub = Peer(broker, "pub", version=5)
    connack = await pub.connack()
    over = connack.properties["topic_alias_maximum"] + 1
    pub.send(Publish("a/b", b"x", properties={"topic_alias": over}))
    (disconnect,) = await pub.expect()
    assert isinstance(disconnect, Disconnect) and disconnect.reason_code == rc.TOPIC_ALIAS_INVALID
    assert pub.closed


async def test_the_counters_of_a_read_are_exact_once_it_is_handled(broker: Broker) -> None:
    """A read's message counts are held in native integers and added when the metrics
    are read: what the API and Prometheus read is the same as counting one by one."""
    sub = await connected(broker, "sub", ("t/#", 1))
    pub = await connected(broker, "pub")
    before = dict(broker.metrics)
    read = [
        Publish("t/a", b"zero"),
        Publish("t/b", b"one", 1, packet_id=1),
        Publish("t/c", b"two", 2, packet_id=2),
        Publish("r/1", b"kept", 0, True),  # retained, no subscriber
        Publish("r/2", b"kept", 1, True, packet_id=3),
        Publish("r/1", b"again", 0, True),  # replaces r/1, retained (and counted) again
        Publish("x/y", b"nobody"),
    ]
    pub.send_bytes(b"".join(encode(p, 4) for p in read))
    grown = {k: v - before[k] for k, v in broker.metrics.items() if v != before[k]}
    assert {k: v for k, v in grown.items() if k.startswith("messages.")} == {
        "messages.received": 7,
        "messages.publish": 7,
        "messages.qos0.received": 4,
        "messages.qos1.received": 2,
        "messages.qos2.received": 1,
        "messages.retained": 3,
        "messages.dropped": 4,
        "messages.dropped.no_subscribers": 4,
        "messages.sent": 3,
        "messages.delivered": 3,
        "messages.qos0.sent": 1,
        "messages.qos1.sent": 2,  # t/c's QoS 2 down to the subscription's 1
    }
    assert grown["packets.publish.received"] == 7
    assert grown["client.check_acl"] == grown["client.acl.allow"] == 7  # no rule: allowed
    assert not broker.in_read and broker.held_qos0 == broker.held_unrouted == 0
    assert len(await sub.expect()) == 3
    broker.publish(Message("x/z", b"api"))  # outside a read: counted at once
    assert broker.metrics["messages.received"] == before["messages.received"] + 8
    assert broker.metrics["messages.dropped.no_subscribers"] == (
        before["messages.dropped.no_subscribers"] + 5
    )
