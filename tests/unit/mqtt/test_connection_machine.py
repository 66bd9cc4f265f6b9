"""The server connection machine driven in memory, paired with a client-side codec.

As h11's ConnectionPair does: the client side encodes with ``encode`` and decodes
what the server returns with ``Decoder(server=False)``; the broker's decisions are
made by hand. No broker, no sockets, no clock: time is a number.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from ferrymq.config import Settings
from ferrymq.mqtt import reason_codes as rc
from ferrymq.mqtt.codec import Decoder, encode
from ferrymq.mqtt.connection import (
    CLOSED,
    CONNECT_RECEIVED,
    CONNECTED,
    ProtocolViolation,
    Reply,
    ServerConnection,
)
from ferrymq.mqtt.packets import (
    PUBACK,
    PUBCOMP,
    PUBREC,
    Auth,
    Connack,
    Connect,
    Disconnect,
    Packet,
    Pingreq,
    Pingresp,
    Puback,
    Pubcomp,
    Publish,
    Pubrec,
    Pubrel,
    Suback,
    Subscribe,
    SubscriptionOptions,
    Unsuback,
    Will,
)


class Msg:
    """The few fields ``publish_bytes`` reads of a broker message."""

    def __init__(self, topic: str, payload: bytes = b"x", properties: Any = None) -> None:
        self.topic = topic
        self.payload = payload
        self.properties = properties
        self.cache: dict[Any, Any] | None = None


# dispatch's handler table: every packet (and Reply) into one list.
COLLECT = [list.append] * 16


class Pair:
    """One server machine and the client codec facing it."""

    def __init__(self, version: int = 4, now: float = 0.0, **limits: Any) -> None:
        self.version = version
        self.now = now
        self.limits = dataclasses.replace(Settings(), **limits)
        self.server = ServerConnection(self.limits, now)
        self.decoder = Decoder(server=False, version=version)
        self.awaiting: dict[int, float] = {}

    def send(self, *packets: Packet, data: bytes = b"") -> list[Any]:
        """Client -> server: what the machine hands the broker (packets and Replies)."""
        data += b"".join(encode(p, self.version) for p in packets)
        self.server.receive(data, self.now)
        return self.take()

    def take(self) -> list[Any]:
        """What ``dispatch`` hands out now."""
        taken: list[Any] = []
        self.server.dispatch(COLLECT, taken)
        return taken

    def read(self, data: bytes) -> list[Packet]:
        """Server -> client."""
        return self.decoder.feed(data)

    def connect(self, client_id: str = "c1", present: bool = False, **kw: Any) -> Connack:
        (connect,) = self.send(Connect(client_id, protocol_version=self.version, **kw))
        self.server.negotiate(connect, connect.client_id)
        self.server.check_will(connect.will)
        (ack,) = self.read(self.server.accept(present, self.awaiting, self.now))
        assert isinstance(ack, Connack)
        return ack

    def violation(self, *packets: Packet, data: bytes = b"") -> tuple[ProtocolViolation, list]:
        with pytest.raises(ProtocolViolation) as info:
            self.send(*packets, data=data)
        return info.value, self.read(self.server.violation(info.value))

    def refuse(self, connect: Connect) -> tuple[ProtocolViolation, list]:
        (packet,) = self.send(connect)
        with pytest.raises(ProtocolViolation) as info:
            self.server.negotiate(packet, packet.client_id)
            self.server.check_will(packet.will)
        return info.value, self.read(self.server.violation(info.value))


# --- CONNECT negotiation ----------------------------------------------------------


@pytest.mark.parametrize("version", [3, 4, 5])
def test_connect_accepted(version: int) -> None:
    pair = Pair(version)
    ack = pair.connect(present=True)
    assert ack.session_present and ack.reason_code == 0
    assert pair.server.state is CONNECTED and pair.server.client_id == "c1"
    assert bool(ack.properties) == (version == 5)


def test_v31_client_id_rules() -> None:
    exc, out = Pair(3).refuse(Connect("", protocol_version=3))
    assert exc.reason_code == rc.CLIENT_IDENTIFIER_NOT_VALID
    assert out == [Connack(False, rc.V3_IDENTIFIER_REJECTED)]
    _, out = Pair(3).refuse(Connect("x" * 24, protocol_version=3))
    assert out == [Connack(False, rc.V3_IDENTIFIER_REJECTED)]


def test_v311_empty_client_id_needs_a_clean_session() -> None:
    pair = Pair(4)
    pair.connect("")
    assert pair.server.client_id.startswith("ferrymq-")
    _, out = Pair(4).refuse(Connect("", clean_start=False))
    assert out == [Connack(False, rc.V3_IDENTIFIER_REJECTED)]


def test_v5_assigned_client_identifier() -> None:
    pair = Pair(5)
    ack = pair.connect("")
    assert ack.properties["assigned_client_identifier"] == pair.server.client_id
    assert "assigned_client_identifier" not in Pair(5).connect("given").properties


def test_client_id_longer_than_the_limit() -> None:
    _, out = Pair(5, max_clientid_len=4).refuse(Connect("12345", protocol_version=5))
    assert out[0].reason_code == rc.CLIENT_IDENTIFIER_NOT_VALID
    assert out[0].properties["reason_string"] == "client id too long"


def test_v5_session_expiry_capped_and_reported() -> None:
    pair = Pair(5, max_session_expiry_interval=100)
    ack = pair.connect(properties={"session_expiry_interval": 1000})
    assert pair.server.session_expiry == 100
    assert ack.properties["session_expiry_interval"] == 100
    pair = Pair(5, max_session_expiry_interval=100)
    ack = pair.connect(properties={"session_expiry_interval": 50})
    assert pair.server.session_expiry == 50
    assert "session_expiry_interval" not in ack.properties


def test_v3_session_expiry_from_clean_session() -> None:
    pair = Pair(4, session_expiry_interval=77)
    pair.connect(clean_start=False)
    assert pair.server.session_expiry == 77
    pair = Pair(4, session_expiry_interval=77)
    pair.connect(clean_start=True)
    assert pair.server.session_expiry == 0


def test_v5_server_keep_alive() -> None:
    pair = Pair(5, server_keepalive=30)
    ack = pair.connect(keepalive=600)
    assert ack.properties["server_keep_alive"] == 30 and pair.server.keepalive == 30
    pair = Pair(5, max_keepalive=60)
    ack = pair.connect(keepalive=100)
    assert ack.properties["server_keep_alive"] == 60 and pair.server.keepalive == 60
    pair = Pair(5)
    ack = pair.connect(keepalive=100)
    assert "server_keep_alive" not in ack.properties and pair.server.keepalive == 100
    pair = Pair(4, server_keepalive=30)  # MQTT 3 keeps its own
    pair.connect(keepalive=600)
    assert pair.server.keepalive == 600


def test_v5_connack_properties_and_client_limits() -> None:
    pair = Pair(
        5,
        max_awaiting_rel=7,
        max_packet_size=5000,
        topic_alias_maximum=9,
        max_qos=1,
        retain_available=False,
        wildcard_subscription=False,
        max_inflight=20,
    )
    props = {"receive_maximum": 5, "maximum_packet_size": 300, "topic_alias_maximum": 3}
    ack = pair.connect(properties=props)
    assert ack.properties == {
        "receive_maximum": 7,
        "maximum_qos": 1,
        "retain_available": 0,
        "maximum_packet_size": 5000,
        "topic_alias_maximum": 9,
        "wildcard_subscription_available": 0,
        "subscription_identifier_available": 1,
        "shared_subscription_available": 1,
    }
    server = pair.server
    assert (server.send_window, server.max_packet_out, server.alias_max_out) == (5, 300, 3)
    assert server.alias_max_in == 9 and server.aliases_out == {}


def test_enhanced_authentication_refused() -> None:
    _, out = Pair(5).refuse(
        Connect("a", protocol_version=5, properties={"authentication_method": "SCRAM"})
    )
    assert out[0].reason_code == rc.BAD_AUTHENTICATION_METHOD
    assert out[0].properties["reason_string"]


@pytest.mark.parametrize(
    ("will", "limits", "reason"),
    [
        (Will("a/+", b""), {}, rc.TOPIC_NAME_INVALID),
        (Will("a", b"", qos=2), {"max_qos": 1}, rc.QOS_NOT_SUPPORTED),
        (Will("a", b"", retain=True), {"retain_available": False}, rc.RETAIN_NOT_SUPPORTED),
    ],
)
def test_will_refused(will: Will, limits: dict[str, Any], reason: int) -> None:
    exc, out = Pair(5, **limits).refuse(Connect("a", protocol_version=5, will=will))
    assert exc.reason_code == reason and out[0].reason_code == reason
    _, out = Pair(4, **limits).refuse(Connect("a", will=will))
    assert out == [Connack(False, rc.V3_SERVER_UNAVAILABLE)]


def test_broker_refusal_is_answered_by_the_machine() -> None:
    """The broker's own reasons (banned, authentication) go through violation() too."""
    pair = Pair(4)
    (connect,) = pair.send(Connect("a"))
    pair.server.negotiate(connect, "a")
    out = pair.read(pair.server.violation(ProtocolViolation(rc.BAD_USERNAME_OR_PASSWORD, "no")))
    assert out == [Connack(False, rc.V3_BAD_USERNAME_OR_PASSWORD)]
    assert pair.server.state is CLOSED and pair.take() == []


def test_packets_after_connect_wait_for_the_decision() -> None:
    pair = Pair(4)
    out = pair.send(Connect("a"), Publish("t", b"1"), Pingreq())
    assert [type(p) for p in out] == [Connect]
    assert pair.server.state is CONNECT_RECEIVED
    pair.server.receive(encode(Publish("t", b"2"), 4), 1.0)  # still waiting
    assert pair.take() == []
    pair.server.negotiate(out[0], "a")
    pair.server.accept(False, {}, 1.0)
    later = pair.take()
    assert [p.payload for p in later if isinstance(p, Publish)] == [b"1", b"2"]
    assert isinstance(later[1], Reply) and later[1].data == b"\xd0\x00"


def test_accept_twice_is_an_illegal_transition() -> None:
    pair = Pair(4)
    pair.connect()
    with pytest.raises(ProtocolViolation):
        pair.server.accept(False, {}, 0.0)


# --- CONNECT first, once -----------------------------------------------------------


@pytest.mark.parametrize("version", [4, 5])
def test_packet_before_connect_closes_silently(version: int) -> None:
    pair = Pair(version)
    exc, out = pair.violation(Publish("t", b""))
    assert exc.reason_code == rc.PROTOCOL_ERROR and out == []
    assert pair.server.state is CLOSED


def test_second_connect() -> None:
    pair = Pair(5)
    pair.connect()
    _, out = pair.violation(Connect("again", protocol_version=5))
    assert out[0].reason_code == rc.PROTOCOL_ERROR
    assert out[0].properties["reason_string"].startswith("protocol error: a second CONNECT")
    pair = Pair(4)
    pair.connect()
    assert pair.violation(Connect("again"))[1] == []  # MQTT 3: no server DISCONNECT


# --- timers -------------------------------------------------------------------------


def test_connect_timeout() -> None:
    server = ServerConnection(dataclasses.replace(Settings(), connect_timeout=5.0), 100.0)
    assert server.deadline == 105.0
    server.timer_expired(104.9)  # early wake-up: nothing yet
    with pytest.raises(ProtocolViolation) as info:
        server.timer_expired(105.0)
    assert info.value.reason_code == rc.MAXIMUM_CONNECT_TIME
    assert server.violation(info.value) == b""


def test_keep_alive_is_one_and_a_half_times() -> None:
    pair = Pair(5)
    pair.connect(keepalive=10)
    server = pair.server
    assert server.deadline == 15.0
    pair.now = 10.0
    pair.send(Pingreq())
    server.timer_expired(15.0)
    assert server.deadline == 25.0  # measured from the last bytes received
    with pytest.raises(ProtocolViolation) as info:
        server.timer_expired(25.0)
    (disconnect,) = pair.read(server.violation(info.value))
    assert disconnect == Disconnect(rc.KEEP_ALIVE_TIMEOUT, {"reason_string": "keepalive timeout"})


def test_no_keep_alive_no_deadline() -> None:
    pair = Pair(4)
    pair.connect(keepalive=0)
    assert pair.server.deadline == float("inf")
    pair.server.timer_expired(1e9)


def test_pingreq_is_answered_by_the_machine() -> None:
    pair = Pair(4)
    pair.connect()
    (reply,) = pair.send(Pingreq())
    assert isinstance(reply, Reply) and not reply.dropped
    assert pair.read(reply.data) == [Pingresp()]


# --- topic aliases ---------------------------------------------------------------------


def test_topic_aliases_in() -> None:
    pair = Pair(5, topic_alias_maximum=2)
    pair.connect()
    (first,) = pair.send(Publish("a/b", b"1", properties={"topic_alias": 1}))
    (second,) = pair.send(Publish("", b"2", properties={"topic_alias": 1}))
    assert first.topic == second.topic == "a/b"
    exc, out = pair.violation(Publish("", b"3", properties={"topic_alias": 2}))
    assert exc.reason_code == rc.PROTOCOL_ERROR and "unknown topic alias" in exc.text
    assert out[0].reason_code == rc.PROTOCOL_ERROR


def test_topic_alias_out_of_range() -> None:
    pair = Pair(5, topic_alias_maximum=2)
    pair.connect()
    exc, out = pair.violation(Publish("a", b"", properties={"topic_alias": 3}))
    assert out[0].reason_code == rc.TOPIC_ALIAS_INVALID and not exc.refused


def test_topic_aliases_out_assigned_and_reused() -> None:
    pair = Pair(5)
    pair.connect(properties={"topic_alias_maximum": 1})
    server = pair.server
    msg = Msg("t/1")
    first = pair.read(server.publish_bytes(msg, 0, False, None, 0, False, None))[0]
    again = pair.read(server.publish_bytes(msg, 0, False, None, 0, False, None))[0]
    other = pair.read(server.publish_bytes(Msg("t/2"), 0, False, None, 0, False, None))[0]
    assert (first.topic, first.properties["topic_alias"]) == ("t/1", 1)
    assert (again.topic, again.properties["topic_alias"]) == ("", 1)
    assert other.topic == "t/2" and "topic_alias" not in other.properties


def test_maximum_packet_size_drops_and_forgets_the_alias() -> None:
    pair = Pair(5)
    pair.connect(properties={"topic_alias_maximum": 4, "maximum_packet_size": 40})
    server = pair.server
    assert server.publish_bytes(Msg("big", b"x" * 100), 0, False, None, 0, False, None) is None
    assert server.aliases_out == {}  # the client never saw that alias
    small = pair.read(server.publish_bytes(Msg("big"), 0, False, None, 0, False, None))[0]
    assert small.topic == "big" and small.properties["topic_alias"] == 1


def test_maximum_packet_size_without_aliases() -> None:
    pair = Pair(5)
    pair.connect(properties={"maximum_packet_size": 40})
    assert pair.server.publish_bytes(Msg("t", b"x" * 100), 1, False, None, 1, False, None) is None


def test_packet_id_and_dup_patched_into_a_shared_template() -> None:
    pair = Pair(4)
    pair.connect()
    server = pair.server
    msg = Msg("t", b"payload")
    first = pair.read(server.publish_bytes(msg, 1, False, None, 7, True, None))[0]
    second = pair.read(server.publish_bytes(msg, 1, False, None, 8, False, None))[0]
    assert (first.packet_id, first.dup, second.packet_id, second.dup) == (7, True, 8, False)
    assert msg.cache is not None and len(msg.cache) == 1
    other = Pair(4)
    other.connect()
    other.server.publish_bytes(msg, 1, False, None, 9, False, None)
    assert len(msg.cache) == 1  # one template for every connection of the same version


def test_first_delivery_encoded_with_its_own_packet_id_then_patched_for_others() -> None:
    pair = Pair(4)
    pair.connect()
    server = pair.server
    msg = Msg("t", b"payload")
    first = server.publish_bytes(msg, 1, False, None, 7, False, None)
    again = server.publish_bytes(msg, 1, False, None, 8, True, None)
    third = server.publish_bytes(msg, 1, False, None, 9, False, None)
    got = [pair.read(data)[0] for data in (first, again, third)]
    assert [(p.packet_id, p.dup) for p in got] == [(7, False), (8, True), (9, False)]
    assert first == server.publish_bytes(Msg("t", b"payload"), 1, False, None, 7, False, None)
    assert msg.cache is not None and len(msg.cache) == 1


def test_v5_outgoing_properties() -> None:
    pair = Pair(5)
    pair.connect()
    msg = Msg("t", b"p", {"content_type": "text/plain"})
    (out,) = pair.read(pair.server.publish_bytes(msg, 2, True, (3, 4), 5, False, 60))
    assert out.properties == {
        "content_type": "text/plain",
        "message_expiry_interval": 60,
        "subscription_identifier": [3, 4],
    }
    assert (out.qos, out.retain, out.packet_id) == (2, True, 5)


# --- PUBLISH in -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("publish", "limits", "reason", "refused"),
    [
        (Publish("a/+", b""), {}, rc.TOPIC_NAME_INVALID, True),
        (Publish("a/b/c", b""), {"max_topic_levels": 2}, rc.TOPIC_NAME_INVALID, True),
        (Publish("abcdef", b""), {"max_topic_length": 5}, rc.TOPIC_NAME_INVALID, True),
        (Publish("a", b"", qos=2, packet_id=1), {"max_qos": 1}, rc.QOS_NOT_SUPPORTED, False),
        (
            Publish("a", b"", retain=True),
            {"retain_available": False},
            rc.RETAIN_NOT_SUPPORTED,
            False,
        ),
        (
            Publish("a", b"", properties={"subscription_identifier": [1]}),
            {},
            rc.PROTOCOL_ERROR,
            False,
        ),
    ],
)
def test_publish_rules(publish: Publish, limits: dict, reason: int, refused: bool) -> None:
    pair = Pair(5, **limits)
    pair.connect()
    exc, out = pair.violation(data=encode(publish, 5))
    assert (exc.reason_code, exc.refused) == (reason, refused)
    assert isinstance(exc.packet, Publish)
    assert out[0].reason_code == reason


def test_empty_topic_without_alias() -> None:
    pair = Pair(5)
    pair.connect()
    exc, _ = pair.violation(Publish("", b""))
    assert exc.reason_code == rc.PROTOCOL_ERROR and exc.refused


def test_payload_format_invalid_is_refused_without_closing() -> None:
    pair = Pair(5)
    pair.connect()
    bad = Publish("t", b"\xff", 1, packet_id=4, properties={"payload_format_indicator": 1})
    (reply,) = pair.send(bad)
    assert isinstance(reply, Reply) and reply.dropped
    (ack,) = pair.read(reply.data)
    assert ack.reason_code == rc.PAYLOAD_FORMAT_INVALID and ack.properties["reason_string"]
    assert pair.server.state is CONNECTED
    quiet = Pair(5)
    quiet.connect(properties={"request_problem_information": 0})
    (reply,) = quiet.send(bad)
    assert quiet.read(reply.data) == [Puback(4, rc.PAYLOAD_FORMAT_INVALID)]


def test_qos1_inbound_flow() -> None:
    pair = Pair(5)
    pair.connect()
    (publish,) = pair.send(Publish("t", b"1", 1, packet_id=3))
    assert publish.packet_id == 3
    assert pair.read(pair.server.ack(PUBACK, 3)) == [Puback(3)]
    assert pair.read(pair.server.ack(PUBACK, 3, rc.NO_MATCHING_SUBSCRIBERS)) == [
        Puback(3, rc.NO_MATCHING_SUBSCRIBERS)
    ]
    v3 = Pair(4)
    v3.connect()
    assert v3.server.ack(PUBACK, 3, rc.NO_MATCHING_SUBSCRIBERS) == b"\x40\x02\x00\x03"


def test_qos2_inbound_flow_with_a_resend() -> None:
    pair = Pair(4)
    pair.connect()
    assert pair.send(Publish("t", b"1", 2, packet_id=9))[0].packet_id == 9
    pair.awaiting[9] = pair.now  # the broker routed it and records the id
    assert pair.read(pair.server.ack(PUBREC, 9)) == [Pubrec(9)]
    (resent,) = pair.send(Publish("t", b"1", 2, dup=True, packet_id=9))
    assert isinstance(resent, Reply) and not resent.dropped
    assert pair.read(resent.data) == [Pubrec(9)]
    assert pair.send(Pubrel(9)) == [Pubrel(9)]
    assert pair.server.release(9) and pair.awaiting == {}
    assert not pair.server.release(9)
    assert pair.read(pair.server.ack(PUBCOMP, 9)) == [Pubcomp(9)]


def test_receive_maximum_exceeded() -> None:
    pair = Pair(5, max_awaiting_rel=2)
    pair.connect()
    pair.awaiting.update({1: 0.0, 2: 0.0})
    exc, out = pair.violation(Publish("t", b"", 2, packet_id=3))
    assert exc.reason_code == rc.RECEIVE_MAXIMUM_EXCEEDED and exc.refused
    assert out[0] == Disconnect(
        rc.RECEIVE_MAXIMUM_EXCEEDED, {"reason_string": "protocol error: too many QoS 2 in flight"}
    )


def test_refused_publish_acknowledged() -> None:
    v5 = Pair(5)
    v5.connect()
    packet = Publish("t", b"", 2, packet_id=5)
    (ack,) = v5.read(v5.server.refuse_publish(packet, rc.NOT_AUTHORIZED, "no", 1.0))
    assert ack == Pubrec(5, rc.NOT_AUTHORIZED, {"reason_string": "no"}) and v5.awaiting == {}
    v3 = Pair(4)
    v3.connect()
    assert v3.read(v3.server.refuse_publish(packet, rc.NOT_AUTHORIZED, "no", 1.0)) == [Pubrec(5)]
    assert v3.awaiting == {5: 1.0}  # MQTT 3 said success: the id awaits its PUBREL
    assert v3.server.refuse_publish(Publish("t", b""), rc.NOT_AUTHORIZED, "no", 1.0) == b""


# --- the rest -----------------------------------------------------------------------------


def test_no_local_on_a_shared_subscription() -> None:
    pair = Pair(5)
    pair.connect()
    sub = Subscribe(1, [SubscriptionOptions("$share/g/t", no_local=True)])
    _, out = pair.violation(sub)
    assert out[0].reason_code == rc.PROTOCOL_ERROR


def test_v3_suback_has_one_failure_code() -> None:
    v5, v3 = Pair(5), Pair(4)
    v5.connect()
    v3.connect()
    assert v5.read(v5.server.suback(1, [1, rc.NOT_AUTHORIZED])) == [Suback(1, [1, 0x87])]
    assert v3.read(v3.server.suback(1, [1, rc.NOT_AUTHORIZED])) == [Suback(1, [1, 0x80])]


def test_unsuback_codes_only_in_v5() -> None:
    v5, v3 = Pair(5), Pair(4)
    v5.connect()
    v3.connect()
    assert v5.read(v5.server.unsuback(2, [0x11])) == [Unsuback(2, [0x11])]
    assert v3.server.unsuback(2, [0x11]) == b"\xb0\x02\x00\x02"


def test_disconnect_may_not_raise_session_expiry_from_zero() -> None:
    pair = Pair(5)
    pair.connect()
    _, out = pair.violation(Disconnect(0, {"session_expiry_interval": 10}))
    assert out[0].reason_code == rc.PROTOCOL_ERROR


def test_disconnect_closes_and_updates_session_expiry() -> None:
    pair = Pair(5)
    pair.connect(properties={"session_expiry_interval": 30})
    (disconnect,) = pair.send(Disconnect(0, {"session_expiry_interval": 0}), Pingreq())
    assert isinstance(disconnect, Disconnect) and pair.server.session_expiry == 0
    assert pair.server.state is CLOSED  # nothing after DISCONNECT is read
    assert pair.server.receive(b"\xc0\x00", 1.0) == 0


def test_auth_without_a_method() -> None:
    pair = Pair(5)
    pair.connect()
    _, out = pair.violation(Auth(0x18))
    assert out[0].reason_code == rc.PROTOCOL_ERROR and "AUTH" in out[0].properties["reason_string"]


def test_malformed_after_connect() -> None:
    pair = Pair(5)
    pair.connect()
    exc, out = pair.violation(data=b"\x36\x00")  # PUBLISH with QoS 3
    assert exc.reason_code == rc.MALFORMED_PACKET and out[0].reason_code == rc.MALFORMED_PACKET
    pair = Pair(4)
    pair.connect()
    assert pair.violation(data=b"\x36\x00")[1] == []


def test_packets_before_a_malformed_one_are_handed_out_first() -> None:
    pair = Pair(4)
    pair.connect()
    pair.server.receive(encode(Publish("t", b"1"), 4) + b"\x36\x00", 0.0)
    taken: list[Any] = []
    with pytest.raises(ProtocolViolation):
        pair.server.dispatch(COLLECT, taken)
    assert [p.payload for p in taken] == [b"1"]


def test_malformed_v5_connect_gets_a_v5_connack() -> None:
    connect = encode(Connect("a", protocol_version=5), 5)
    broken = connect[:-3] + b"\xff\xff\xff"  # the client id runs past the packet
    pair = Pair(5)
    exc, out = pair.violation(data=broken)
    assert out[0].reason_code == exc.reason_code == rc.MALFORMED_PACKET
    pair = Pair(4)
    broken = encode(Connect("a"), 4)[:-3] + b"\xff\xff\xff"
    assert pair.violation(data=broken)[1] == []  # MQTT 3 cannot say it


@pytest.mark.parametrize(("level", "answer"), [(6, 4), (5, 5)])
def test_unsupported_protocol(level: int, answer: int) -> None:
    name = b"MQTT" if level != 5 else b"MQIsdp"
    body = len(name).to_bytes(2, "big") + name + bytes((level, 2, 0, 60)) + b"\x00\x00\x00\x01a"
    pair = Pair(answer)
    exc, out = pair.violation(data=bytes((0x10, len(body))) + body)
    assert exc.reason_code == rc.UNSUPPORTED_PROTOCOL_VERSION
    if answer == 5:
        assert out == [Connack(False, rc.UNSUPPORTED_PROTOCOL_VERSION)]  # no reason string
    else:
        assert out == [Connack(False, rc.V3_UNACCEPTABLE_PROTOCOL_VERSION)]


def test_server_disconnect() -> None:
    v5, v3 = Pair(5), Pair(4)
    v5.connect()
    v3.connect()
    assert v5.read(v5.server.disconnect(rc.SESSION_TAKEN_OVER, "taken")) == [
        Disconnect(rc.SESSION_TAKEN_OVER, {"reason_string": "taken"})
    ]
    assert v3.server.disconnect(rc.SESSION_TAKEN_OVER, "taken") == b""
    assert v5.server.state is CLOSED and v5.server.disconnect(0x8B) == b""
