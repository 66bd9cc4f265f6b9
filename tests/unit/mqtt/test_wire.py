"""The wire primitives and the helpers that look into encoded packets."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ferrymq.mqtt.codec import encode, encode_publish
from ferrymq.mqtt.errors import MalformedPacket
from ferrymq.mqtt.packets import Connect
from ferrymq.mqtt.wire import (
    MAX_VARINT,
    decode_varint,
    encode_varint,
    is_v5_connect,
    publish_packet_id_offset,
    read_varint,
)


@given(st.integers(0, MAX_VARINT))
@settings(max_examples=200, deadline=None)
def test_varint_round_trip_and_cut(value: int) -> None:
    wire = encode_varint(value)
    assert decode_varint(wire, 0, len(wire)) == (value, len(wire))
    assert decode_varint(wire, 0, len(wire) - 1) == (-1, -1)  # incomplete: wait for more
    with pytest.raises(MalformedPacket):
        read_varint(wire, 0, len(wire) - 1)  # inside a packet: malformed


@pytest.mark.parametrize(
    "value", [0, 127, 128, 300, 16383, 16384, 2_097_151, 2_097_152, MAX_VARINT]
)
def test_varint_length_at_each_boundary(value: int) -> None:
    wire = encode_varint(value)
    assert len(wire) == 1 + (value >= 128) + (value >= 16384) + (value >= 2_097_152)
    assert decode_varint(wire, 0, len(wire)) == (value, len(wire))


def test_varint_of_five_bytes_is_malformed() -> None:
    with pytest.raises(MalformedPacket):
        decode_varint(b"\x80\x80\x80\x80\x01", 0, 5)


@pytest.mark.parametrize("version", [3, 4, 5])
@pytest.mark.parametrize("qos", [1, 2])
@pytest.mark.parametrize(("topic", "size"), [("a", 1), ("t/" * 40, 100), ("x" * 300, 20_000)])
def test_publish_packet_id_offset(version: int, qos: int, topic: str, size: int) -> None:
    data = encode_publish(topic, bytes(size), qos, False, False, 0x1234, None, version)
    at = publish_packet_id_offset(data, qos)
    assert data[at : at + 2] == b"\x12\x34"
    assert publish_packet_id_offset(encode_publish(topic, b"", 0, False, False, 0, None, 4), 0) == 0


@pytest.mark.parametrize("version", [3, 4, 5])
def test_is_v5_connect(version: int) -> None:
    name = "MQIsdp" if version == 3 else "MQTT"
    data = encode(Connect("c", protocol_name=name, protocol_version=version), version)
    assert is_v5_connect(data) is (version == 5)
    assert is_v5_connect(data[:1] + b"\x80") is False  # remaining length cut short
    assert is_v5_connect(b"\x20\x02\x00\x00") is False  # not a CONNECT
