"""Codec properties: round-trips for every packet, version and direction, stream splitting,
robustness against arbitrary bytes, and golden bytes from the spec and real clients."""

from __future__ import annotations

import contextlib
from functools import cache

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ferrymq.mqtt.codec import Decoder, encode, encode_publish
from ferrymq.mqtt.errors import MQTTError
from ferrymq.mqtt.packets import (
    AUTH,
    CONNACK,
    CONNECT,
    DISCONNECT,
    PUBACK,
    PUBCOMP,
    PUBLISH,
    PUBREC,
    PUBREL,
    SUBACK,
    SUBSCRIBE,
    UNSUBACK,
    UNSUBSCRIBE,
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
    Unsubscribe,
    Will,
)
from ferrymq.mqtt.properties import (
    BINARY,
    PROPERTIES,
    STRING_PAIR,
    UTF8_STRING,
    WILL,
    is_repeated,
)
from ferrymq.mqtt.wire import encode_varint, read_varint

VERSIONS = (3, 4, 5)
fast = settings(
    max_examples=200, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)

# --- strategies ----------------------------------------------------------------------------

texts = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=12)
topic_names = st.text(st.characters(codec="utf-8", exclude_characters="\x00+#"), max_size=12)
packet_ids = st.integers(1, 0xFFFF)
bytes_ = st.binary(max_size=40)


@cache
def property_values(kind: int) -> st.SearchStrategy[dict]:
    """Valid property dicts for packet ``kind`` (or WILL), in the decoder's shape."""
    optional = {}
    for prop in PROPERTIES:
        if kind not in prop.packets:
            continue
        if prop.name == "response_topic":
            value = topic_names
        elif prop.type == UTF8_STRING:
            value = texts
        elif prop.type == BINARY:
            value = bytes_
        elif prop.type == STRING_PAIR:
            value = st.tuples(texts, texts)
        else:
            value = st.integers(prop.low, prop.high)
        if is_repeated(prop, kind):
            value = st.lists(value, min_size=1, max_size=3)
        optional[prop.name] = value
    # Authentication data only comes with an authentication method (3.1.2.11.10).
    return st.fixed_dictionaries({}, optional=optional).filter(
        lambda d: "authentication_data" not in d or "authentication_method" in d
    )


@cache
def props(kind: int, version: int) -> st.SearchStrategy[dict]:
    return property_values(kind) if version == 5 else st.just({})


def reason(version: int) -> st.SearchStrategy[int]:
    return st.integers(0, 255) if version == 5 else st.just(0)


@st.composite
def publishes(draw: st.DrawFn, version: int) -> Publish:
    qos = draw(st.integers(0, 2))
    return Publish(
        draw(texts),
        draw(bytes_),
        qos,
        draw(st.booleans()),
        draw(st.booleans()) if qos else False,
        draw(packet_ids) if qos else 0,
        draw(props(PUBLISH, version)),
    )


@cache
def acks(version: int) -> st.SearchStrategy[Packet]:
    return st.one_of(
        *(
            st.builds(cls, packet_ids, reason(version), props(kind, version))
            for cls, kind in (
                (Puback, PUBACK),
                (Pubrec, PUBREC),
                (Pubrel, PUBREL),
                (Pubcomp, PUBCOMP),
            )
        )
    )


@st.composite
def connects(draw: st.DrawFn, version: int) -> Connect:
    will = None
    if draw(st.booleans()):
        will = Will(
            draw(texts),
            draw(bytes_),
            draw(st.integers(0, 2)),
            draw(st.booleans()),
            draw(props(WILL, version)),
        )
    username = draw(st.none() | texts)
    password = draw(st.none() | bytes_)
    if version != 5 and username is None:
        password = None
    return Connect(
        draw(texts),
        protocol_name="MQIsdp" if version == 3 else "MQTT",
        protocol_version=version,
        clean_start=draw(st.booleans()),
        keepalive=draw(st.integers(0, 0xFFFF)),
        will=will,
        username=username,
        password=password,
        properties=draw(props(CONNECT, version)),
    )


@cache
def subscription_options(version: int) -> st.SearchStrategy[SubscriptionOptions]:
    if version != 5:
        return st.builds(SubscriptionOptions, texts, st.integers(0, 2))
    return st.builds(
        SubscriptionOptions,
        texts,
        st.integers(0, 2),
        st.booleans(),
        st.booleans(),
        st.integers(0, 2),
    )


@cache
def client_packets(version: int) -> st.SearchStrategy[Packet]:
    """Packets a client sends after CONNECT."""
    choices = [
        publishes(version),
        acks(version),
        st.builds(
            Subscribe,
            packet_ids,
            st.lists(subscription_options(version), min_size=1, max_size=4),
            props(SUBSCRIBE, version),
        ),
        st.builds(
            Unsubscribe,
            packet_ids,
            st.lists(texts, min_size=1, max_size=4),
            props(UNSUBSCRIBE, version),
        ),
        st.just(Pingreq()),
        st.builds(Disconnect, reason(version), props(DISCONNECT, version)),
    ]
    if version == 5:
        choices.append(st.builds(Auth, reason(version), props(AUTH, version)))
    return st.one_of(*choices)


@cache
def server_packets(version: int) -> st.SearchStrategy[Packet]:
    codes = st.lists(st.integers(0, 255), min_size=1, max_size=5)
    choices = [
        st.builds(Connack, st.booleans(), st.integers(0, 255), props(CONNACK, version)),
        publishes(version),
        acks(version),
        st.builds(Suback, packet_ids, codes, props(SUBACK, version)),
        st.builds(
            Unsuback, packet_ids, codes if version == 5 else st.just([]), props(UNSUBACK, version)
        ),
        st.just(Pingresp()),
    ]
    if version == 5:
        choices.append(st.builds(Disconnect, reason(version), props(DISCONNECT, version)))
        choices.append(st.builds(Auth, reason(version), props(AUTH, version)))
    return st.one_of(*choices)


def hello(version: int) -> Connect:
    return Connect(
        "c", protocol_name="MQIsdp" if version == 3 else "MQTT", protocol_version=version
    )


# --- round-trips ---------------------------------------------------------------------------


@pytest.mark.parametrize("version", VERSIONS)
@fast
@given(data=st.data())
def test_connect_round_trips_and_sets_version(version: int, data: st.DataObject) -> None:
    packet = data.draw(connects(version))
    decoder = Decoder(server=True)
    assert decoder.feed(encode(packet, version)) == [packet]
    assert decoder.version == version


@pytest.mark.parametrize("version", VERSIONS)
@fast
@given(data=st.data())
def test_client_packets_round_trip(version: int, data: st.DataObject) -> None:
    packet = data.draw(client_packets(version))
    decoder = Decoder(server=True, version=version)
    assert decoder.feed(encode(packet, version)) == [packet]


@pytest.mark.parametrize("version", VERSIONS)
@fast
@given(data=st.data())
def test_server_packets_round_trip(version: int, data: st.DataObject) -> None:
    packet = data.draw(server_packets(version))
    decoder = Decoder(server=False, version=version)
    assert decoder.feed(encode(packet, version)) == [packet]


@pytest.mark.parametrize("version", VERSIONS)
@fast
@given(data=st.data())
def test_publish_encoder_matches_generic_encoder(version: int, data: st.DataObject) -> None:
    p = data.draw(publishes(version))
    wire = encode_publish(
        p.topic, p.payload, p.qos, p.retain, p.dup, p.packet_id, p.properties, version
    )
    assert wire == encode(p, version)
    if p.qos:
        # Callers patch the packet id in place: it follows the topic string.
        topic = p.topic.encode()
        at = wire.index(len(topic).to_bytes(2, "big") + topic) + 2 + len(topic)
        assert wire[at : at + 2] == p.packet_id.to_bytes(2, "big")


def test_large_publish_round_trips_with_multibyte_length() -> None:
    packet = Publish("big/topic", bytes(range(256)) * 4096, 1, packet_id=9)  # 1 MiB
    wire = encode(packet, 4)
    assert wire[1:4] == encode_varint(len(wire) - 4)  # a three-byte remaining length
    decoder = Decoder(server=True, version=4)
    got: list[Packet] = []
    for i in range(0, len(wire), 4096):
        got += decoder.feed(wire[i : i + 4096])
    assert got == [packet]
    assert type(got[0].payload) is bytes


# --- streaming -----------------------------------------------------------------------------


def _feed_in_pieces(decoder: Decoder, wire: bytes, cuts: list[int]) -> list[Packet]:
    out: list[Packet] = []
    last = 0
    for cut in [*sorted(cuts), len(wire)]:
        out += decoder.feed(wire[last:cut])
        last = cut
    return out


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("server", [True, False], ids=["server", "client"])
@fast
@given(data=st.data())
def test_split_streams_decode_like_whole_ones(
    version: int, server: bool, data: st.DataObject
) -> None:
    packets = data.draw(
        st.lists(client_packets(version) if server else server_packets(version), max_size=6)
    )
    if server:
        packets.insert(0, hello(version))
    wire = b"".join(encode(p, version) for p in packets)

    def fresh() -> Decoder:
        return Decoder(server=True) if server else Decoder(server=False, version=version)

    assert fresh().feed(wire) == packets
    assert _feed_in_pieces(fresh(), wire, list(range(1, len(wire)))) == packets
    cuts = data.draw(st.lists(st.integers(0, len(wire)), max_size=12))
    assert _feed_in_pieces(fresh(), wire, cuts) == packets


# --- robustness ----------------------------------------------------------------------------


def _decoders() -> list[Decoder]:
    return [
        Decoder(server=True),
        *(Decoder(server=True, version=v) for v in VERSIONS),
        *(Decoder(server=False, version=v) for v in VERSIONS),
    ]


def _survives(blob: bytes) -> None:
    for decoder in _decoders():
        with contextlib.suppress(MQTTError):
            decoder.feed(blob)


@fast
@given(st.binary(max_size=300))
def test_arbitrary_bytes_raise_only_mqtt_errors(blob: bytes) -> None:
    _survives(blob)


@fast
@given(st.integers(0, 255), st.binary(max_size=120))
def test_arbitrary_bodies_raise_only_mqtt_errors(first: int, body: bytes) -> None:
    _survives(bytes((first,)) + encode_varint(len(body)) + body)


@fast
@given(st.sampled_from([b"\x00\x04MQTT\x05", b"\x00\x04MQTT\x04", b"\x00\x06MQIsdp\x03"]), bytes_)
def test_arbitrary_connect_bodies_raise_only_mqtt_errors(head: bytes, rest: bytes) -> None:
    body = head + rest
    _survives(b"\x10" + encode_varint(len(body)) + body)


@pytest.mark.parametrize("version", VERSIONS)
@fast
@given(data=st.data())
def test_corrupted_packets_raise_only_mqtt_errors(version: int, data: st.DataObject) -> None:
    packet = data.draw(st.one_of(client_packets(version), server_packets(version)))
    wire = bytearray(encode(packet, version))
    for _ in range(data.draw(st.integers(1, 3))):
        wire[data.draw(st.integers(0, len(wire) - 1))] = data.draw(st.integers(0, 255))
    _survives(bytes(wire))


# --- golden bytes --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "wire"),
    [
        (0, b"\x00"),
        (127, b"\x7f"),
        (128, b"\x80\x01"),
        (16_383, b"\xff\x7f"),
        (16_384, b"\x80\x80\x01"),
        (2_097_151, b"\xff\xff\x7f"),
        (2_097_152, b"\x80\x80\x80\x01"),
        (268_435_455, b"\xff\xff\xff\x7f"),
    ],
)
def test_variable_byte_integers_match_spec_table(value: int, wire: bytes) -> None:
    assert encode_varint(value) == wire
    assert read_varint(wire + b"\xff", 0, len(wire)) == (value, len(wire))


# Captured from mosquitto_pub 2.0.11: CONNECT, PUBLISH, DISCONNECT.
MOSQ_311 = b"\x10\x0c\x00\x04MQTT\x04\x02\x00<\x00\x000\x07\x00\x03a/bhi\xe0\x00"
MOSQ_31 = (
    b"\x10(\x00\x06MQIsdp\x03\xee\x00\x1e\x00\x04pub1\x00\x03w/t\x00\x03bye"
    b"\x00\x04user\x00\x04pass0\n\x00\x03a/bhello\xe0\x00"
)
MOSQ_5 = (
    b"\x10\x17\x00\x04MQTT\x05\x02\x00<\x08\x11\x00\x00\x0e\x10!\x00\x14\x00\x02c5"
    b"0\x1f\x00\x03a/b\x14&\x00\x01k\x00\x01v\x03\x00\ntext/plainhello\xe0\x00"
)


def test_golden_mosquitto_v311_session() -> None:
    decoder = Decoder()
    assert decoder.feed(MOSQ_311) == [
        Connect("", protocol_name="MQTT", protocol_version=4, clean_start=True, keepalive=60),
        Publish("a/b", b"hi"),
        Disconnect(),
    ]
    assert encode(Connect("", keepalive=60), 4) == MOSQ_311[:14]
    assert encode_publish("a/b", b"hi", 0, False, False, 0, None, 4) == MOSQ_311[14:23]


def test_golden_mosquitto_v31_session_with_will_and_credentials() -> None:
    decoder = Decoder()
    connect, publish, disconnect = decoder.feed(MOSQ_31)
    assert decoder.version == 3
    assert connect == Connect(
        "pub1",
        protocol_name="MQIsdp",
        protocol_version=3,
        clean_start=True,
        keepalive=30,
        will=Will("w/t", b"bye", qos=1, retain=True),
        username="user",
        password=b"pass",
    )
    assert publish == Publish("a/b", b"hello")
    assert disconnect == Disconnect()
    assert encode(connect, 3) == MOSQ_31[:42]


def test_golden_mosquitto_v5_session_with_properties() -> None:
    decoder = Decoder()
    connect, publish, disconnect = decoder.feed(MOSQ_5)
    assert connect.protocol_version == 5
    assert connect.client_id == "c5"
    assert connect.properties == {"session_expiry_interval": 3600, "receive_maximum": 20}
    assert publish == Publish(
        "a/b", b"hello", properties={"user_property": [("k", "v")], "content_type": "text/plain"}
    )
    assert disconnect == Disconnect()
    assert encode(connect, 5) == MOSQ_5[:25]


def test_golden_spec_packets() -> None:
    assert encode(Pingreq(), 4) == b"\xc0\x00"
    assert encode(Pingresp(), 5) == b"\xd0\x00"
    assert encode(Connack(True, 0), 4) == b"\x20\x02\x01\x00"
    assert encode(Connack(False, 0), 5) == b"\x20\x03\x00\x00\x00"
    assert encode(Puback(10), 4) == b"\x40\x02\x00\x0a"
    assert encode(Pubrel(10), 5) == b"\x62\x02\x00\x0a"
    assert (
        encode(Subscribe(1, [SubscriptionOptions("a/+", 1)]), 4)
        == b"\x82\x08\x00\x01\x00\x03a/+\x01"
    )
    assert encode(Suback(1, [1, 0x80]), 4) == b"\x90\x04\x00\x01\x01\x80"
    assert encode(Unsubscribe(2, ["a"]), 4) == b"\xa2\x05\x00\x02\x00\x01a"
    assert encode(Unsuback(2), 4) == b"\xb0\x02\x00\x02"
    assert encode(Unsuback(2, [0x11]), 5) == b"\xb0\x04\x00\x02\x00\x11"
    assert encode(Publish("a", b"x", 2, True, True, 0x1234), 4) == b"\x3d\x06\x00\x01a\x12\x34x"
