"""Sessions and connection ends through the broker in memory, as the wire shows them: resume
with queued messages, takeover, the will on an abrupt close (not on DISCONNECT) and its
delay, keep alive, malformed input closing only its own connection (memory.py builds the
broker and the peers)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from ferrymq.core.broker import Broker
from ferrymq.mqtt import reason_codes as rc
from ferrymq.mqtt.packets import (
    Connack,
    Disconnect,
    Pingreq,
    Pingresp,
    Puback,
    Publish,
    Suback,
    Subscribe,
    SubscriptionOptions,
    Will,
)
from memory import Peer, serving, settle

V5 = 5
EXPIRY = {"session_expiry_interval": 300}


@pytest.fixture
async def broker(tmp_path: Path) -> AsyncIterator[Broker]:
    async with serving(tmp_path) as b:
        yield b


async def subscribed(peer: Peer, topic_filter: str, qos: int = 1) -> Peer:
    (connack,) = await peer.expect()
    assert isinstance(connack, Connack) and connack.reason_code == 0
    peer.send(Subscribe(1, [SubscriptionOptions(topic_filter, qos)]))
    (suback,) = await peer.expect()
    assert isinstance(suback, Suback) and suback.reason_codes == [qos]
    return peer


@pytest.mark.parametrize("version", [4, V5])
async def test_resume_delivers_the_queued_qos1_messages_in_order(
    broker: Broker, version: int
) -> None:
    props = EXPIRY if version == V5 else None
    sub = Peer(broker, "s", clean=False, version=version, properties=props)
    await subscribed(sub, "q/#")
    sub.send(Disconnect())
    await settle()
    assert sub.closed
    pub = Peer(broker, "p")
    await pub.connack()
    for i in range(3):
        pub.send(Publish("q/x", b"m%d" % i, 1, packet_id=i + 1))
    assert await pub.expect(3) == [Puback(1), Puback(2), Puback(3)]
    back = Peer(broker, "s", clean=False, version=version, properties=props)
    connack, *queued = await back.expect(4)
    assert (connack.session_present, connack.reason_code) == (True, 0)
    assert [(p.topic, p.payload, p.qos) for p in queued] == [
        ("q/x", b"m0", 1),
        ("q/x", b"m1", 1),
        ("q/x", b"m2", 1),
    ]
    assert len({p.packet_id for p in queued}) == 3


async def test_clean_start_discards_the_old_session(broker: Broker) -> None:
    sub = Peer(broker, "s", clean=False)
    await subscribed(sub, "q/#")
    sub.send(Disconnect())
    pub = Peer(broker, "p")
    await pub.connack()
    pub.send(Publish("q/x", b"lost", 1, packet_id=1))
    assert await pub.expect() == [Puback(1)]
    fresh = Peer(broker, "s", clean=True)
    assert await fresh.expect() == [Connack(False, 0)]


async def test_takeover_sends_disconnect_0x8e_to_the_first_connection_and_closes_it(
    broker: Broker,
) -> None:
    first = Peer(broker, "same", version=V5)
    assert (await first.connack()).reason_code == 0
    second = Peer(broker, "same", version=V5)
    connack = await second.connack()
    assert connack.reason_code == 0
    (disconnect,) = await first.expect()
    assert isinstance(disconnect, Disconnect)
    assert disconnect.reason_code == rc.SESSION_TAKEN_OVER
    assert first.closed and not second.closed


async def test_takeover_in_v311_closes_the_first_connection_without_a_packet(
    broker: Broker,
) -> None:
    first = Peer(broker, "same")
    await first.connack()
    second = Peer(broker, "same")
    assert await second.expect() == [Connack(False, 0)]
    await settle()
    assert first.received() == [] and first.closed


@pytest.mark.parametrize("version", [4, V5])
async def test_will_is_published_when_the_connection_is_lost(broker: Broker, version: int) -> None:
    watcher = await subscribed(Peer(broker, "watcher"), "will/#", 0)
    dying = Peer(broker, "dying", version=version, will=Will("will/dying", b"gone"))
    await dying.connack()
    dying.lose()
    assert await watcher.expect() == [Publish("will/dying", b"gone")]


@pytest.mark.parametrize("version", [4, V5])
async def test_will_is_not_published_after_a_normal_disconnect(
    broker: Broker, version: int
) -> None:
    watcher = await subscribed(Peer(broker, "watcher"), "will/#", 0)
    leaving = Peer(broker, "leaving", version=version, will=Will("will/leaving", b"gone"))
    await leaving.connack()
    leaving.send(Disconnect())
    await settle()
    leaving.lose()  # the socket closes after the DISCONNECT, as it does for real
    await settle()
    assert watcher.received() == []


async def test_malformed_packet_closes_that_v5_connection_with_0x81(broker: Broker) -> None:
    bystander = await subscribed(Peer(broker, "bystander"), "b/#", 0)
    bad = Peer(broker, "bad", version=V5)
    await bad.connack()
    bad.send_bytes(b"\x00\x00")  # packet type 0 is reserved: malformed
    (disconnect,) = await bad.expect()
    assert isinstance(disconnect, Disconnect)
    assert disconnect.reason_code == rc.MALFORMED_PACKET
    assert bad.closed and not bystander.closed
    bystander.send(Publish("b/x", b"still served"))
    assert await bystander.expect() == [Publish("b/x", b"still served")]


async def test_packet_before_connect_is_a_protocol_error_closing_only_it(broker: Broker) -> None:
    bystander = await subscribed(Peer(broker, "bystander"), "b/#", 0)
    early = Peer(broker, "early", connect=False)
    early.send(Publish("b/x", b"too early"))
    await settle()
    assert early.closed and early.received() == []
    assert bystander.received() == [] and not bystander.closed


async def test_malformed_v311_connection_is_closed_without_a_packet(broker: Broker) -> None:
    bad = Peer(broker, "bad")
    await bad.connack()
    bad.send_bytes(b"\x30\x03\x00\x09a")  # PUBLISH whose topic length passes its end
    await settle()
    assert bad.closed and bad.received() == []


async def test_a_delayed_will_waits_while_the_session_lives(broker: Broker) -> None:
    watcher = await subscribed(Peer(broker, "watcher"), "will/#", 0)
    will = Will("will/late", b"gone", properties={"will_delay_interval": 60})
    dying = Peer(broker, "late", clean=False, version=V5, will=will, properties=EXPIRY)
    await dying.connack()
    dying.lose()
    await settle()
    assert watcher.received() == []


async def test_a_delayed_will_is_published_when_the_session_ends_first(broker: Broker) -> None:
    """The will goes at the earlier of its delay and the session's end (MQTT 5, 3.1.3.2.2):
    a session that ends with the connection sends it at once."""
    watcher = await subscribed(Peer(broker, "watcher"), "will/#", 0)
    will = Will("will/now", b"gone", properties={"will_delay_interval": 60})
    dying = Peer(broker, "now", version=V5, will=will)  # session expiry 0
    await dying.connack()
    dying.lose()
    assert await watcher.expect() == [Publish("will/now", b"gone")]


async def test_pingreq_gets_pingresp(broker: Broker) -> None:
    peer = Peer(broker, "pinger", keepalive=5)
    await peer.connack()
    peer.send(Pingreq())
    assert await peer.expect() == [Pingresp()]


async def test_a_v5_keep_alive_above_the_maximum_is_lowered_in_the_connack(tmp_path: Path) -> None:
    async with serving(tmp_path, max_keepalive=30) as broker:
        peer = Peer(broker, "long", version=V5, keepalive=600)
        connack = await peer.connack()
        assert connack.reason_code == 0
        assert connack.properties["server_keep_alive"] == 30
