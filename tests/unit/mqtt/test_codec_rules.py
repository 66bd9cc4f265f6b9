"""One raw-bytes packet per decoding rule, asserting the error class and reason code,
plus the encoder's short forms and version-dependent omissions."""

from __future__ import annotations

import pytest

from ferrymq.mqtt import reason_codes as rc
from ferrymq.mqtt.codec import MAX_PACKET_SIZE, Decoder, encode, encode_publish
from ferrymq.mqtt.errors import (
    MalformedPacket,
    MQTTError,
    PacketTooLarge,
    ProtocolError,
    UnsupportedProtocolVersion,
)
from ferrymq.mqtt.packets import (
    CONNECT,
    PUBLISH,
    Auth,
    Connack,
    Connect,
    Disconnect,
    Pingreq,
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
from ferrymq.mqtt.properties import WILL, encode_properties
from rawclient import frame, utf8

s = utf8


def connect_wire(
    version: int = 4, flags: int = 0x02, tail: bytes = b"", props: bytes = b"\x00"
) -> bytes:
    name = "MQIsdp" if version == 3 else "MQTT"
    body = s(name) + bytes((version, flags)) + b"\x00\x3c"
    body += (props if version == 5 else b"") + s("cid") + tail
    return frame(0x10, body)


def server(version: int = 4) -> Decoder:
    """A server-side decoder that has decoded a real CONNECT."""
    decoder = Decoder(server=True)
    assert len(decoder.feed(connect_wire(version))) == 1
    return decoder


def fails(decoder: Decoder, wire: bytes, error: type[MQTTError]) -> MQTTError:
    with pytest.raises(error) as info:
        decoder.feed(wire)
    assert type(info.value) is error
    return info.value


def publish_v5(props: bytes) -> bytes:
    return frame(0x30, s("t") + props + b"payload")


# --- direction and connection state --------------------------------------------------------

CLIENT_ONLY = {
    "subscribe": frame(0x82, b"\x00\x01" + s("a") + b"\x00"),
    "unsubscribe": frame(0xA2, b"\x00\x01" + s("a")),
    "pingreq": b"\xc0\x00",
    "connect": connect_wire(4),
}
SERVER_ONLY = {
    "connack": b"\x20\x02\x00\x00",
    "suback": b"\x90\x03\x00\x01\x00",
    "unsuback": b"\xb0\x02\x00\x01",
    "pingresp": b"\xd0\x00",
}


@pytest.mark.parametrize("version", [3, 4, 5])
@pytest.mark.parametrize("name", sorted(SERVER_ONLY))
def test_server_refuses_packets_only_a_server_sends(version: int, name: str) -> None:
    err = fails(server(version), SERVER_ONLY[name], ProtocolError)
    assert err.reason_code == rc.PROTOCOL_ERROR


@pytest.mark.parametrize("version", [3, 4, 5])
@pytest.mark.parametrize("name", sorted(CLIENT_ONLY))
def test_client_refuses_packets_only_a_client_sends(version: int, name: str) -> None:
    fails(Decoder(server=False, version=version), CLIENT_ONLY[name], ProtocolError)


@pytest.mark.parametrize("decoder", [lambda: server(5), lambda: Decoder(server=False, version=5)])
def test_packet_type_zero_is_malformed(decoder) -> None:  # type: ignore[no-untyped-def]
    err = fails(decoder(), b"\x00\x00", MalformedPacket)
    assert err.reason_code == rc.MALFORMED_PACKET


@pytest.mark.parametrize("version", [3, 4])
def test_auth_is_reserved_before_v5(version: int) -> None:
    fails(server(version), b"\xf0\x00", MalformedPacket)
    fails(Decoder(server=False, version=version), b"\xf0\x00", MalformedPacket)


@pytest.mark.parametrize("version", [3, 4])
def test_v3_server_never_sends_disconnect(version: int) -> None:
    fails(Decoder(server=False, version=version), b"\xe0\x00", ProtocolError)


def test_v5_disconnect_and_auth_go_both_ways() -> None:
    for decoder in (server(5), Decoder(server=False, version=5)):
        assert decoder.feed(b"\xe0\x00\xf0\x00") == [Disconnect(), Auth()]


def test_first_packet_must_be_connect() -> None:
    fails(Decoder(), b"\xc0\x00", ProtocolError)
    fails(Decoder(), frame(0x30, s("t") + b"x"), ProtocolError)


def test_second_connect_is_a_protocol_error() -> None:
    fails(server(4), connect_wire(4), ProtocolError)


def test_refusal_comes_before_the_body_is_buffered() -> None:
    fails(Decoder(), b"\x30\xff\xff\x7f", ProtocolError)  # a 2 MB PUBLISH before CONNECT


@pytest.mark.parametrize("version", [3, 4, 5])
def test_connect_sets_the_version(version: int) -> None:
    decoder = Decoder()
    assert decoder.version is None
    (connect,) = decoder.feed(connect_wire(version))
    assert decoder.version == connect.protocol_version == version
    assert connect.protocol_name == ("MQIsdp" if version == 3 else "MQTT")


def test_client_side_defaults_to_311() -> None:
    assert Decoder(server=False).version == 4


@pytest.mark.parametrize(
    ("name", "level"), [("MQTT", 3), ("MQTT", 6), ("MQIsdp", 4), ("HTTP", 4), ("mqtt", 4)]
)
def test_unsupported_protocol_reports_the_level(name: str, level: int) -> None:
    body = s(name) + bytes((level, 0x02)) + b"\x00\x3c" + s("cid")
    err = fails(Decoder(), frame(0x10, body), UnsupportedProtocolVersion)
    assert err.protocol_version == level  # type: ignore[attr-defined]
    assert err.reason_code == rc.UNSUPPORTED_PROTOCOL_VERSION


# --- fixed header --------------------------------------------------------------------------

# (decoder side, version, valid packet) for every type whose flags are fixed.
FIXED_FLAGS = [
    ("client", connect_wire(4)),
    ("server", b"\x20\x02\x00\x00"),
    ("client", b"\x40\x02\x00\x01"),
    ("client", b"\x50\x02\x00\x01"),
    ("client", b"\x62\x02\x00\x01"),
    ("client", b"\x70\x02\x00\x01"),
    ("client", frame(0x82, b"\x00\x01" + s("a") + b"\x00")),
    ("server", b"\x90\x03\x00\x01\x00"),
    ("client", frame(0xA2, b"\x00\x01" + s("a"))),
    ("server", b"\xb0\x02\x00\x01"),
    ("client", b"\xc0\x00"),
    ("server", b"\xd0\x00"),
    ("client", b"\xe0\x00"),
]


def _decoder_for(side: str) -> Decoder:
    return Decoder() if side == "client" else Decoder(server=False, version=4)


@pytest.mark.parametrize(("side", "wire"), FIXED_FLAGS, ids=lambda v: str(v)[:12])
def test_fixed_header_flags_are_checked(side: str, wire: bytes) -> None:
    prefix = b"" if wire[0] == 0x10 or side == "server" else connect_wire(4)
    assert len(_decoder_for(side).feed(prefix + wire)) == (2 if prefix else 1)
    for wrong in (wire[0] ^ 0x02, wire[0] ^ 0x01, wire[0] ^ 0x08):
        bad = bytes((wrong,)) + wire[1:]
        fails(_decoder_for(side), prefix + bad, MalformedPacket)


def test_auth_flags_must_be_zero() -> None:
    fails(server(5), b"\xf1\x00", MalformedPacket)


@pytest.mark.parametrize(
    "wire",
    [
        frame(0x36, s("t") + b"\x00\x01"),  # QoS 3
        frame(0x38, s("t")),  # DUP on QoS 0
        frame(0x32, s("t") + b"\x00\x00"),  # QoS 1, packet id 0
        frame(0x34, s("t") + b"\x00\x00"),  # QoS 2, packet id 0
        frame(0x32, s("t") + b"\x00"),  # packet id cut short
    ],
)
def test_publish_header_rules(wire: bytes) -> None:
    fails(server(4), wire, MalformedPacket)


def test_publish_flags_are_decoded() -> None:
    (p,) = server(4).feed(frame(0x3D, s("a/b") + b"\x12\x34data"))
    assert p == Publish("a/b", b"data", qos=2, retain=True, dup=True, packet_id=0x1234)
    assert type(p.payload) is bytes


# --- remaining length and size -------------------------------------------------------------


def test_remaining_length_longer_than_four_bytes_is_malformed() -> None:
    fails(server(4), b"\x30\xff\xff\xff\xff", MalformedPacket)  # fails before a 5th byte


def test_packet_too_large_is_raised_from_the_header_alone() -> None:
    decoder = Decoder(server=True, version=4, max_packet_size=100)
    err = fails(decoder, b"\x30\x63", PacketTooLarge)  # 2 + 99 bytes, body not yet sent
    assert err.reason_code == rc.PACKET_TOO_LARGE


def test_packet_size_limit_counts_the_whole_packet() -> None:
    ok = frame(0x30, s("t") + b"x" * 95)  # 2 + 98 = 100 bytes
    assert len(ok) == 100
    assert len(Decoder(server=True, version=4, max_packet_size=100).feed(ok)) == 1
    fails(Decoder(server=True, version=4, max_packet_size=99), ok[:2], PacketTooLarge)


def test_packet_size_limit_can_change_after_connect() -> None:
    decoder = server(5)
    big = frame(0x30, s("t") + b"\x00" + b"x" * 500)
    assert len(decoder.feed(big)) == 1
    decoder.max_packet_size = 256
    fails(decoder, big, PacketTooLarge)
    assert MAX_PACKET_SIZE == 1 + 4 + 268_435_455


@pytest.mark.parametrize(
    ("version", "wire"),
    [
        (4, b"\xc0\x01\x00"),  # PINGREQ with a body
        (4, b"\xe0\x01\x00"),  # v3 DISCONNECT with a body
        (4, b"\x40\x03\x00\x01\x00"),  # v3 PUBACK longer than 2
        (4, b"\x40\x01\x00"),  # PUBACK shorter than its packet id
        (5, b"\x40\x05\x00\x01\x00\x00\x00"),  # v5 PUBACK with a byte past its properties
        (5, b"\x40\x05\x00\x01\x00\x05\x1f"),  # properties longer than the packet
        (4, frame(0x30, b"\x00\x09abc")),  # topic runs past the end
        (4, frame(0x30, b"\x00")),  # topic length cut short
        (4, frame(0x82, b"\x00\x01" + s("a"))),  # filter without options byte
        (4, frame(0xA2, b"\x00\x01" + s("a") + b"\x00")),  # half a string at the end
        (5, frame(0xE0, b"\x00\x00\x00")),  # DISCONNECT past its properties
        (5, frame(0xF0, b"\x18\x01")),  # AUTH properties past the end
    ],
)
def test_declared_length_must_match_content(version: int, wire: bytes) -> None:
    fails(server(version), wire, MalformedPacket)


def test_connect_with_trailing_bytes_is_malformed() -> None:
    fails(Decoder(), connect_wire(4, tail=b"\x00"), MalformedPacket)


def test_connack_length_rules() -> None:
    fails(Decoder(server=False, version=4), b"\x20\x03\x00\x00\x00", MalformedPacket)
    fails(Decoder(server=False, version=4), b"\x20\x02\x02\x00", MalformedPacket)  # reserved
    assert Decoder(server=False, version=5).feed(b"\x20\x02\x00\x84") == [Connack(False, 0x84)]


def test_unsuback_v3_has_no_payload() -> None:
    fails(Decoder(server=False, version=4), b"\xb0\x03\x00\x01\x00", MalformedPacket)


@pytest.mark.parametrize("wire", [b"\x90\x03\x00\x01\x00", b"\xb0\x03\x00\x01\x00"])
def test_v5_suback_and_unsuback_need_reason_codes(wire: bytes) -> None:
    fails(Decoder(server=False, version=5), wire, ProtocolError)


# --- UTF-8 strings -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [b"\xff", b"a\x00b", b"\xed\xa0\x80", b"\xc0\xaf", b"\xe2\x82"],
    ids=["invalid", "nul", "surrogate", "overlong", "truncated"],
)
def test_bad_utf8_is_malformed_everywhere(raw: bytes) -> None:
    fails(server(4), frame(0x30, s(raw) + b"x"), MalformedPacket)
    fails(server(4), frame(0xA2, b"\x00\x01" + s(raw)), MalformedPacket)
    body = s("MQTT") + b"\x04\x02\x00\x3c" + s(raw)
    fails(Decoder(), frame(0x10, body), MalformedPacket)
    fails(server(5), publish_v5(bytes((1 + 2 + len(raw), 0x03)) + s(raw)), MalformedPacket)


def test_non_bmp_and_multibyte_text_decodes() -> None:
    (p,) = server(4).feed(frame(0x30, s("é/日本/😀") + b"x"))
    assert p.topic == "é/日本/😀"


# --- CONNECT -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("version", "flags"),
    [
        (4, 0x03),  # reserved bit
        (5, 0x03),
        (4, 0x0A),  # will QoS 1 without will flag
        (4, 0x22),  # will retain without will flag
        (5, 0x12),  # will QoS 2 without will flag
        (4, 0x1E),  # will QoS 3
        (4, 0x42),  # password without username
        (3, 0x42),
    ],
)
def test_connect_flag_rules(version: int, flags: int) -> None:
    # The tail matches the flags, so only the broken rule can fail the packet.
    tail = (s("w") + s("p") if flags & 0x04 else b"") + (s("pw") if flags & 0x40 else b"")
    fails(Decoder(), connect_wire(version, flags, tail), MalformedPacket)


def test_v5_allows_password_without_username() -> None:
    (connect,) = Decoder().feed(connect_wire(5, 0x42, s(b"\x00secret")))
    assert connect.username is None
    assert connect.password == b"\x00secret"


def test_connect_fields_are_parsed() -> None:
    will_props = b"\x05\x18\x00\x00\x00\x0a"  # will_delay_interval 10
    tail = will_props + s("w/t") + s(b"\xffbye") + s("bob") + s(b"pw")
    (c,) = Decoder().feed(connect_wire(5, 0xEC | 0x02, tail, props=b"\x03\x21\x00\x0a"))
    assert c == Connect(
        "cid",
        protocol_name="MQTT",
        protocol_version=5,
        clean_start=True,
        keepalive=60,
        will=Will("w/t", b"\xffbye", qos=1, retain=True, properties={"will_delay_interval": 10}),
        username="bob",
        password=b"pw",
        properties={"receive_maximum": 10},
    )


def test_connect_cut_inside_the_header_is_malformed() -> None:
    fails(Decoder(), frame(0x10, s("MQTT") + b"\x04\x02"), MalformedPacket)
    fails(Decoder(), frame(0x10, s("MQTT")), MalformedPacket)


# --- SUBSCRIBE / UNSUBSCRIBE / packet ids --------------------------------------------------


def test_subscribe_needs_a_filter() -> None:
    fails(server(4), frame(0x82, b"\x00\x01"), ProtocolError)
    fails(server(5), frame(0x82, b"\x00\x01\x00"), ProtocolError)


def test_unsubscribe_needs_a_filter() -> None:
    fails(server(4), frame(0xA2, b"\x00\x01"), ProtocolError)
    fails(server(5), frame(0xA2, b"\x00\x01\x00"), ProtocolError)


@pytest.mark.parametrize(("version", "options"), [(4, 0x03), (4, 0x04), (4, 0x80), (3, 0x10)])
def test_v3_requested_qos_rules(version: int, options: int) -> None:
    fails(server(version), frame(0x82, b"\x00\x01" + s("a") + bytes((options,))), MalformedPacket)


@pytest.mark.parametrize("options", [0x03, 0x30, 0x40, 0x80])
def test_v5_subscription_option_rules(options: int) -> None:
    wire = frame(0x82, b"\x00\x01\x00" + s("a") + bytes((options,)))
    fails(server(5), wire, MalformedPacket)


def test_v5_subscription_options_are_decoded() -> None:
    wire = frame(0x82, b"\x00\x07\x02\x0b\x05" + s("a/#") + b"\x2e" + s("b") + b"\x00")
    assert server(5).feed(wire) == [
        Subscribe(
            7,
            [SubscriptionOptions("a/#", 2, True, True, 2), SubscriptionOptions("b")],
            {"subscription_identifier": 5},
        )
    ]


@pytest.mark.parametrize(
    "wire",
    [
        frame(0x82, b"\x00\x00" + s("a") + b"\x00"),
        frame(0xA2, b"\x00\x00" + s("a")),
        b"\x40\x02\x00\x00",
        b"\x50\x02\x00\x00",
        b"\x62\x02\x00\x00",
        b"\x70\x02\x00\x00",
    ],
)
def test_packet_id_zero_is_malformed(wire: bytes) -> None:
    fails(server(4), wire, MalformedPacket)


@pytest.mark.parametrize("wire", [b"\x90\x03\x00\x00\x00", b"\xb0\x02\x00\x00"])
def test_server_packet_id_zero_is_malformed(wire: bytes) -> None:
    fails(Decoder(server=False, version=4), wire, MalformedPacket)


# --- v5 short forms ------------------------------------------------------------------------


@pytest.mark.parametrize(("cls", "first"), [(Puback, 0x40), (Pubrec, 0x50), (Pubrel, 0x62)])
def test_v5_ack_lengths(cls: type, first: int) -> None:
    wire = bytes((first, 2, 0, 9, first, 3, 0, 9, 0x10, first, 4, 0, 9, 0x10, 0))
    wire += frame(first, b"\x00\x09\x83" + encode_properties({"reason_string": "no"}, first >> 4))
    assert server(5).feed(wire) == [
        cls(9),
        cls(9, 0x10),
        cls(9, 0x10),
        cls(9, 0x83, {"reason_string": "no"}),
    ]


def test_v5_disconnect_and_auth_short_forms() -> None:
    wire = b"\xe0\x00\xe0\x01\x04\xe0\x02\x8e\x00"
    assert server(5).feed(wire) == [Disconnect(), Disconnect(4), Disconnect(0x8E)]
    assert server(5).feed(b"\xf0\x00\xf0\x01\x18") == [Auth(), Auth(0x18)]


def test_encoder_uses_short_forms() -> None:
    assert encode(Puback(1), 5) == b"\x40\x02\x00\x01"
    assert encode(Pubcomp(1, 0x92), 5) == b"\x70\x03\x00\x01\x92"
    assert (
        encode(Pubrec(1, 0, {"reason_string": "x"}), 5) == b"\x50\x08\x00\x01\x00\x04\x1f\x00\x01x"
    )
    assert encode(Disconnect(), 5) == b"\xe0\x00"
    assert encode(Disconnect(0x8E), 5) == b"\xe0\x01\x8e"
    assert encode(Auth(), 5) == b"\xf0\x00"
    assert encode(Auth(0x18), 5) == b"\xf0\x02\x18\x00"


def test_encoder_drops_v5_fields_for_v3() -> None:
    assert encode(Puback(1, 0x80, {"reason_string": "x"}), 4) == b"\x40\x02\x00\x01"
    assert encode(Disconnect(0x04, {"reason_string": "x"}), 4) == b"\xe0\x00"
    assert encode(Unsuback(3, [0x11]), 4) == b"\xb0\x02\x00\x03"
    assert encode(Connack(False, 5, {"maximum_qos": 1}), 3) == b"\x20\x02\x00\x05"
    assert encode(Suback(3, [0x80]), 4) == b"\x90\x03\x00\x03\x80"
    sub = Subscribe(1, [SubscriptionOptions("a", 1, True, True, 2)], {"subscription_identifier": 3})
    assert encode(sub, 4) == frame(0x82, b"\x00\x01" + s("a") + b"\x01")
    publish = Publish("t", b"x", properties={"content_type": "c"})
    assert encode(publish, 4) == encode_publish("t", b"x", 0, False, False, 0, None, 4)
    with pytest.raises(ValueError):
        encode(Auth(), 4)


# --- properties ----------------------------------------------------------------------------


def test_property_not_allowed_on_packet() -> None:
    fails(server(5), publish_v5(b"\x05\x11\x00\x00\x00\x01"), ProtocolError)  # session expiry
    fails(server(5), frame(0x40, b"\x00\x01\x00\x03\x23\x00\x01"), ProtocolError)  # topic alias


def test_will_properties_are_checked_against_the_will_table() -> None:
    fails(Decoder(), connect_wire(5, props=b"\x05\x18\x00\x00\x00\x01"), ProtocolError)
    will = b"\x05\x11\x00\x00\x00\x01" + s("w") + s("p")
    fails(Decoder(), connect_wire(5, 0x06, will), ProtocolError)


def test_unknown_property_is_malformed() -> None:
    fails(server(5), publish_v5(b"\x02\x7f\x00"), MalformedPacket)
    fails(server(5), publish_v5(b"\x02\x80\x01"), MalformedPacket)


def test_duplicate_property_is_a_protocol_error() -> None:
    fails(server(5), publish_v5(b"\x08\x03" + s("a") + b"\x03" + s("b")), ProtocolError)
    sub_ids = b"\x04\x0b\x01\x0b\x02"
    fails(server(5), frame(0x82, b"\x00\x01" + sub_ids + s("a") + b"\x00"), ProtocolError)


def test_repeatable_properties_keep_order() -> None:
    users = b"\x26" + s("k") + s("1") + b"\x26" + s("k") + s("2") + b"\x26" + s("a") + s("")
    (p,) = server(5).feed(publish_v5(bytes((len(users) + 4,)) + users + b"\x0b\x07\x0b\x01"))
    assert p.properties == {
        "user_property": [("k", "1"), ("k", "2"), ("a", "")],
        "subscription_identifier": [7, 1],
    }
    assert p.payload == b"payload"


@pytest.mark.parametrize(
    ("kind", "prop"),
    [
        ("publish", b"\x0b\x00"),  # subscription_identifier 0
        ("publish", b"\x23\x00\x00"),  # topic_alias 0
        ("publish", b"\x01\x02"),  # payload_format_indicator 2
        ("subscribe", b"\x0b\x00"),
        ("connect", b"\x21\x00\x00"),  # receive_maximum 0
        ("connect", b"\x27\x00\x00\x00\x00"),  # maximum_packet_size 0
        ("connect", b"\x17\x02"),  # request_problem_information 2
        ("connect", b"\x19\x02"),  # request_response_information 2
        ("connack", b"\x24\x02"),  # maximum_qos 2
        ("connack", b"\x25\x02"),  # retain_available 2
        ("connack", b"\x28\x02"),  # wildcard_subscription_available 2
        ("connack", b"\x29\x02"),  # subscription_identifier_available 2
        ("connack", b"\x2a\x02"),  # shared_subscription_available 2
        ("connack", b"\x21\x00\x00"),  # receive_maximum 0
    ],
)
def test_property_value_rules(kind: str, prop: bytes) -> None:
    props = bytes((len(prop),)) + prop
    if kind == "publish":
        fails(server(5), publish_v5(props), ProtocolError)
    elif kind == "subscribe":
        fails(server(5), frame(0x82, b"\x00\x01" + props + s("a") + b"\x00"), ProtocolError)
    elif kind == "connect":
        fails(Decoder(), connect_wire(5, props=props), ProtocolError)
    else:
        fails(Decoder(server=False, version=5), frame(0x20, b"\x00\x00" + props), ProtocolError)


def test_largest_subscription_identifier_is_accepted() -> None:
    wire = frame(0x82, b"\x00\x01\x05\x0b\xff\xff\xff\x7f" + s("a") + b"\x00")
    (sub,) = server(5).feed(wire)
    assert sub.properties == {"subscription_identifier": 268_435_455}


def test_property_encoding_is_ordered_and_checked() -> None:
    encoded = encode_properties({"user_property": [("a", "b")], "content_type": "c"}, 3)
    assert encoded == b"\x0b\x03" + s("c") + b"\x26" + s("a") + s("b")
    assert encode_properties({"content_type": None}, 3) == b"\x00"
    for bad in ({"no_such_property": 1}, {"topic_alias": 0}, {"session_expiry_interval": 1}):
        with pytest.raises(ValueError):
            encode_properties(bad, 3)


# --- errors and the stream -----------------------------------------------------------------


def test_error_carries_packets_decoded_before_it() -> None:
    decoder = server(4)
    good = encode(Publish("a", b"1"), 4) + encode(Pingreq(), 4)
    err = fails(decoder, good + b"\xc0\x01\x00" + good, MalformedPacket)
    assert err.packets == [Publish("a", b"1"), Pingreq()]  # type: ignore[attr-defined]
    err = fails(decoder, encode(Pingreq(), 4), ProtocolError)  # the decoder is spent
    assert err.packets == []  # type: ignore[attr-defined]


def test_error_in_a_later_feed_reports_only_that_feeds_packets() -> None:
    decoder = server(4)
    assert decoder.feed(b"\xc0\x00\x30") == [Pingreq()]
    err = fails(decoder, b"\x01\x00", MalformedPacket)  # topic length cut short
    assert err.packets == []  # type: ignore[attr-defined]


def test_empty_and_bytearray_feeds() -> None:
    decoder = server(4)
    assert decoder.feed(b"") == []
    assert decoder.feed(bytearray(b"\xc0")) == []
    assert decoder.feed(memoryview(b"\x00\xc0\x00")) == [Pingreq(), Pingreq()]


# --- property rules --------------------------------------------------------------------------


def test_authentication_data_needs_an_authentication_method() -> None:
    data = encode_properties({"authentication_data": b"x"}, CONNECT)
    err = fails(Decoder(), connect_wire(5, props=data), ProtocolError)
    assert err.reason_code == rc.PROTOCOL_ERROR
    both = encode_properties({"authentication_method": "m", "authentication_data": b"x"}, CONNECT)
    assert len(Decoder().feed(connect_wire(5, props=both))) == 1


@pytest.mark.parametrize("topic", ["a/+", "#", "a/#", "+"])
def test_response_topic_must_be_a_topic_name(topic: str) -> None:
    fails(
        server(5), publish_v5(encode_properties({"response_topic": topic}, PUBLISH)), ProtocolError
    )
    will = encode_properties({"response_topic": topic}, WILL) + s("wt") + s("wp")
    fails(Decoder(), connect_wire(5, flags=0x06, tail=will), ProtocolError)
    (p,) = server(5).feed(publish_v5(encode_properties({"response_topic": "a/b"}, PUBLISH)))
    assert p.properties["response_topic"] == "a/b"
