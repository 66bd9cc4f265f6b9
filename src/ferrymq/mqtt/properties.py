"""MQTT 5 properties: the property table, and reading and writing a property list.

Properties travel as a plain ``dict`` keyed by snake_case name (MQTT 5 §2.2.2.2).
``user_property`` is a list of ``(key, value)`` pairs in wire order;
``subscription_identifier`` is a list of ints on PUBLISH (it may repeat there)
and a single int on SUBSCRIBE.

Rules this module keeps: a property is accepted only on the packets the table
lists for it, at most once unless it repeats by the spec, and integer values
only within the table's bounds (a breach is a ProtocolError on decode and a
ValueError on encode). The field encodings themselves are ``wire.py``'s.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ferrymq.mqtt.errors import MalformedPacket, ProtocolError
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
    Properties,
)
from ferrymq.mqtt.wire import (
    MAX_VARINT,
    decode_varint,
    encode_binary,
    encode_string,
    encode_varint,
    read_binary,
    read_string,
    read_u16,
    read_u32,
    read_varint,
)

# Where a property may appear: a packet type, or WILL for the will properties
# inside CONNECT (packet type 0 is reserved, so the number is free).
WILL = 0

# Property value types (MQTT 5 §1.5).
BYTE = 1
TWO_BYTE_INT = 2
FOUR_BYTE_INT = 3
VARINT = 4
UTF8_STRING = 5
BINARY = 6
STRING_PAIR = 7

_INT_MAX = {BYTE: 0xFF, TWO_BYTE_INT: 0xFFFF, FOUR_BYTE_INT: 0xFFFF_FFFF, VARINT: MAX_VARINT}


@dataclass(slots=True, eq=False)
class Property:
    """One row of the property table; ``low``/``high`` bound integer values
    (``high`` defaults to the largest value the type holds)."""

    id: int
    name: str
    type: int
    packets: frozenset[int]
    low: int = 0
    high: int = -1

    def __post_init__(self) -> None:
        if self.high < 0:
            self.high = _INT_MAX.get(self.type, 0)


def _on(*kinds: int) -> frozenset[int]:
    return frozenset(kinds)


_MESSAGE = _on(PUBLISH, WILL)
_ACKS_AND_MORE = _on(CONNACK, PUBACK, PUBREC, PUBREL, PUBCOMP, SUBACK, UNSUBACK, DISCONNECT, AUTH)
_EVERY_PACKET = _ACKS_AND_MORE | _on(CONNECT, PUBLISH, WILL, SUBSCRIBE, UNSUBSCRIBE)

PROPERTIES: tuple[Property, ...] = (
    Property(0x01, "payload_format_indicator", BYTE, _MESSAGE, high=1),
    Property(0x02, "message_expiry_interval", FOUR_BYTE_INT, _MESSAGE),
    Property(0x03, "content_type", UTF8_STRING, _MESSAGE),
    Property(0x08, "response_topic", UTF8_STRING, _MESSAGE),
    Property(0x09, "correlation_data", BINARY, _MESSAGE),
    Property(0x0B, "subscription_identifier", VARINT, _on(PUBLISH, SUBSCRIBE), low=1),
    Property(0x11, "session_expiry_interval", FOUR_BYTE_INT, _on(CONNECT, CONNACK, DISCONNECT)),
    Property(0x12, "assigned_client_identifier", UTF8_STRING, _on(CONNACK)),
    Property(0x13, "server_keep_alive", TWO_BYTE_INT, _on(CONNACK)),
    Property(0x15, "authentication_method", UTF8_STRING, _on(CONNECT, CONNACK, AUTH)),
    Property(0x16, "authentication_data", BINARY, _on(CONNECT, CONNACK, AUTH)),
    Property(0x17, "request_problem_information", BYTE, _on(CONNECT), high=1),
    Property(0x18, "will_delay_interval", FOUR_BYTE_INT, _on(WILL)),
    Property(0x19, "request_response_information", BYTE, _on(CONNECT), high=1),
    Property(0x1A, "response_information", UTF8_STRING, _on(CONNACK)),
    Property(0x1C, "server_reference", UTF8_STRING, _on(CONNACK, DISCONNECT)),
    Property(0x1F, "reason_string", UTF8_STRING, _ACKS_AND_MORE),
    Property(0x21, "receive_maximum", TWO_BYTE_INT, _on(CONNECT, CONNACK), low=1),
    Property(0x22, "topic_alias_maximum", TWO_BYTE_INT, _on(CONNECT, CONNACK)),
    Property(0x23, "topic_alias", TWO_BYTE_INT, _on(PUBLISH), low=1),
    Property(0x24, "maximum_qos", BYTE, _on(CONNACK), high=1),
    Property(0x25, "retain_available", BYTE, _on(CONNACK), high=1),
    Property(0x26, "user_property", STRING_PAIR, _EVERY_PACKET),
    Property(0x27, "maximum_packet_size", FOUR_BYTE_INT, _on(CONNECT, CONNACK), low=1),
    Property(0x28, "wildcard_subscription_available", BYTE, _on(CONNACK), high=1),
    Property(0x29, "subscription_identifier_available", BYTE, _on(CONNACK), high=1),
    Property(0x2A, "shared_subscription_available", BYTE, _on(CONNACK), high=1),
)

BY_ID: dict[int, Property] = {p.id: p for p in PROPERTIES}
BY_NAME: dict[str, Property] = {p.name: p for p in PROPERTIES}
_ORDER: dict[str, int] = {p.name: p.id for p in PROPERTIES}

_USER_PROPERTY = 0x26
_SUBSCRIPTION_IDENTIFIER = 0x0B


def is_repeated(prop: Property, kind: int) -> bool:
    """Whether the decoded value is a list: user_property anywhere, subscription ids on PUBLISH."""
    return prop.id == _USER_PROPERTY or (prop.id == _SUBSCRIPTION_IDENTIFIER and kind == PUBLISH)


# --- properties ----------------------------------------------------------------------------


def _read_value(prop: Property, buf: bytes, pos: int, end: int) -> tuple[Any, int]:
    kind = prop.type
    if kind == UTF8_STRING:
        return read_string(buf, pos, end)
    if kind == STRING_PAIR:
        key, pos = read_string(buf, pos, end)
        text, pos = read_string(buf, pos, end)
        return (key, text), pos
    if kind == BINARY:
        return read_binary(buf, pos, end)
    if kind == BYTE:
        if pos >= end:
            raise MalformedPacket(f"{prop.name} runs past the end of the properties")
        value, pos = buf[pos], pos + 1
    elif kind == TWO_BYTE_INT:
        value, pos = read_u16(buf, pos, end)
    elif kind == FOUR_BYTE_INT:
        value, pos = read_u32(buf, pos, end)
    else:
        value, pos = read_varint(buf, pos, end)
    if not prop.low <= value <= prop.high:
        raise ProtocolError(f"{prop.name} has the invalid value {value}")
    return value, pos


def decode_properties(buf: bytes, pos: int, end: int, kind: int) -> tuple[Properties, int]:
    """Read a property length and the properties it covers, as allowed on ``kind``."""
    if pos < end and buf[pos] == 0:
        return {}, pos + 1
    length, pos = decode_varint(buf, pos, end)
    stop = pos + length
    if pos < 0 or stop > end:
        raise MalformedPacket("properties run past the end of the packet")
    props: Properties = {}
    while pos < stop:
        prop = BY_ID.get(buf[pos])
        if prop is None:
            raise MalformedPacket(f"unknown property identifier {buf[pos]}")
        if kind not in prop.packets:
            raise ProtocolError(f"{prop.name} is not allowed here")
        value, pos = _read_value(prop, buf, pos + 1, stop)
        name = prop.name
        if is_repeated(prop, kind):
            props.setdefault(name, []).append(value)
        elif name in props:
            raise ProtocolError(f"{name} appears more than once")
        else:
            props[name] = value
    return props, stop


def _encode_value(prop: Property, value: Any) -> bytes:
    kind = prop.type
    if kind == UTF8_STRING:
        return encode_string(value)
    if kind == BINARY:
        return encode_binary(value)
    if kind == STRING_PAIR:
        key, val = value
        return encode_string(key) + encode_string(val)
    if not prop.low <= value <= prop.high:
        raise ValueError(f"{prop.name} cannot be {value}")
    if kind == VARINT:
        return encode_varint(value)
    size = 1 if kind == BYTE else 2 if kind == TWO_BYTE_INT else 4
    return value.to_bytes(size, "big")


def encode_properties(props: Properties | None, kind: int) -> bytes:
    """Property length plus properties, in identifier order; ``None`` values are skipped.

    Raises ValueError for an unknown name, a property not allowed on ``kind``
    or a value out of range: sending those would make the peer disconnect us.
    """
    if not props:
        return b"\x00"
    parts: list[bytes] = []
    try:
        names = sorted(props, key=_ORDER.__getitem__)
    except KeyError as exc:
        raise ValueError(f"unknown property {exc.args[0]!r}") from None
    for name in names:
        value = props[name]
        if value is None:
            continue
        prop = BY_NAME[name]
        if kind not in prop.packets:
            raise ValueError(f"{name} is not allowed on this packet")
        head = bytes((prop.id,))
        if prop.id == _USER_PROPERTY or (
            prop.id == _SUBSCRIPTION_IDENTIFIER and isinstance(value, list | tuple)
        ):
            parts.extend(head + _encode_value(prop, item) for item in value)
        else:
            parts.append(head + _encode_value(prop, value))
    body = b"".join(parts)
    return encode_varint(len(body)) + body
