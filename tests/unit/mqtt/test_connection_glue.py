"""core.Client as glue: a Broker and Clients over in-memory transports.

The connection machine's rules are tested on their own (test_connection_machine);
these check what the glue adds around them: bytes written in order, metrics
counted, the deadline slot following the machine's deadline, connections closed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from ferrymq.config import Settings
from ferrymq.core.broker import Broker
from ferrymq.core.client import Client
from ferrymq.core.deadlines import RESOLUTION
from ferrymq.mqtt import reason_codes as rc
from ferrymq.mqtt.codec import Decoder, encode
from ferrymq.mqtt.packets import (
    Connack,
    Connect,
    Disconnect,
    Packet,
    Pingreq,
    Pingresp,
    Puback,
    Publish,
    Pubrec,
    Suback,
    Subscribe,
    SubscriptionOptions,
)
from memory import FakeTransport


class Peer:
    """One MQTT client: a Client on the broker side, a codec on ours."""

    def __init__(self, broker: Broker, version: int = 4) -> None:
        self.broker = broker
        self.version = version
        self.transport = FakeTransport()
        self.client = Client(broker, self.transport)
        self.decoder = Decoder(server=False, version=version)
        self.seen = 0

    def send(self, *packets: Packet) -> None:
        self.client.data_received(b"".join(encode(p, self.version) for p in packets))

    def read(self) -> list[Packet]:
        self.broker.flow.flush()
        new = self.transport.data[self.seen :]
        self.seen = len(self.transport.data)
        return self.decoder.feed(new)

    def connect(self, client_id: str, **kw: Any) -> Connack:
        self.send(Connect(client_id, protocol_version=self.version, **kw))
        (ack,) = self.read()
        assert isinstance(ack, Connack) and ack.reason_code == 0
        return ack


@pytest.fixture
def broker() -> Iterator[Broker]:
    loop = asyncio.new_event_loop()
    yield Broker(Settings(), None, loop)
    loop.close()


def test_qos1_through_the_broker(broker: Broker) -> None:
    sub, pub = Peer(broker, 5), Peer(broker, 5)
    sub.connect("sub")
    sub.send(Subscribe(1, [SubscriptionOptions("a/b", 1)]))
    assert sub.read() == [Suback(1, [1])]
    pub.connect("pub")
    pub.send(
        Publish("a/b", b"1", 1, packet_id=7, properties={"topic_alias": 1}),
        Publish("", b"2", 1, packet_id=8, properties={"topic_alias": 1}),
    )
    assert pub.read() == [Puback(7), Puback(8)]
    got = sub.read()
    assert [(p.topic, p.payload, p.packet_id) for p in got] == [("a/b", b"1", 1), ("a/b", b"2", 2)]
    metrics = broker.metrics
    assert metrics["packets.publish.received"] == 2 and metrics["packets.puback.sent"] == 2


def test_qos2_resend_is_acknowledged_not_routed(broker: Broker) -> None:
    sub, pub = Peer(broker), Peer(broker)
    sub.connect("sub")
    sub.send(Subscribe(1, [SubscriptionOptions("t", 0)]))
    sub.read()
    pub.connect("pub")
    pub.send(Publish("t", b"x", 2, packet_id=3), Publish("t", b"x", 2, dup=True, packet_id=3))
    assert pub.read() == [Pubrec(3), Pubrec(3)]
    assert len(sub.read()) == 1
    assert broker.metrics["packets.publish.inuse"] == 1


def test_pingreq_counted(broker: Broker) -> None:
    peer = Peer(broker)
    peer.connect("p")
    peer.send(Pingreq())
    assert peer.read() == [Pingresp()]
    assert broker.metrics["packets.pingreq.received"] == 1
    assert broker.metrics["packets.pingresp.sent"] == 1


def test_protocol_error_disconnects_and_closes(broker: Broker) -> None:
    peer = Peer(broker, 5)
    peer.connect("p")
    peer.send(Publish("a/#", b""))
    (disconnect,) = peer.read()
    assert isinstance(disconnect, Disconnect)
    assert disconnect.reason_code == rc.TOPIC_NAME_INVALID
    assert peer.transport.closed and peer.client.closing
    assert broker.metrics["packets.publish.error"] == 1
    assert broker.metrics["packets.disconnect.sent"] == 1


def test_refused_connect(broker: Broker) -> None:
    peer = Peer(broker, 3)
    peer.send(Connect("", protocol_version=3))
    assert peer.read() == [Connack(False, rc.V3_IDENTIFIER_REJECTED)]
    assert peer.transport.closed and not peer.client.connected
    assert broker.metrics["packets.connack.error"] == 1


def test_one_timer_follows_the_deadline(broker: Broker) -> None:
    peer = Peer(broker, 5)
    client = peer.client
    connect_slot = client.timer
    assert connect_slot is not None
    peer.connect("p", keepalive=10)
    # The connection left the connect timeout's slot for the keep alive's, just after
    # the machine's deadline; one entry in the shared slots, no timer of its own.
    assert client not in connect_slot
    assert client.timer is not None
    assert 0 <= client.timer.when - client.conn.deadline <= RESOLUTION
    assert client in client.timer
    assert len(broker.deadlines) == 1
    client.conn.last_recv -= 15  # nothing received for 1.5 x keep alive
    client.deadline_due(client.timer)
    (disconnect,) = peer.read()
    assert disconnect.reason_code == rc.KEEP_ALIVE_TIMEOUT
    assert client.will_allowed and client.closing


def test_connect_timeout_closes_silently(broker: Broker) -> None:
    peer = Peer(broker)
    peer.client.conn.deadline -= broker.settings.connect_timeout
    assert peer.client.timer is not None
    peer.client.deadline_due(peer.client.timer)
    assert peer.transport.data == b"" and peer.client.closing
