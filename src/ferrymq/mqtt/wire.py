"""MQTT's wire primitives: variable byte integers, two- and four-byte integers, strings, binary.

The one home of these encodings (MQTT 5 §1.5, 3.1.1 §1.5); the codec, the
property table and whoever patches encoded packets use them from here.

Rules this module keeps:
- readers take ``(buf, pos, end)`` and return ``(value, new_pos)``; they never
  read at or past ``end``, so a field that claims more bytes than its packet
  holds is a MalformedPacket rather than a read into the next packet;
- ``buf`` is ``bytes``, so a slice is already the value the caller keeps;
- a variable byte integer has at most 4 bytes; a fifth is malformed, while
  bytes that simply stop early are "incomplete" to ``decode_varint`` (a stream
  reader waits for more) and malformed to ``read_varint`` (inside a packet);
- strings are strict UTF-8 without U+0000; lengths above 65535 (or a varint
  above 268,435,455) are refused on encode with ValueError: the peer would
  reject the packet.
"""

from __future__ import annotations

from ferrymq.mqtt.errors import MalformedPacket

MAX_VARINT = 268_435_455

_PROTOCOL_V5 = b"\x00\x04MQTT\x05"  # protocol name and level at the start of a v5 CONNECT body


# --- reading -------------------------------------------------------------------------------


def decode_varint(buf: bytes, pos: int, end: int) -> tuple[int, int]:
    """A Variable Byte Integer: 7 bits a byte, least significant first.

    ``(-1, -1)`` when ``end`` comes before its last byte.
    """
    value = 0
    shift = 0
    while pos < end:
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7
        if shift == 28:
            raise MalformedPacket("variable byte integer longer than 4 bytes")
    return -1, -1


def read_varint(buf: bytes, pos: int, end: int) -> tuple[int, int]:
    """A Variable Byte Integer that must end before ``end``."""
    value, pos = decode_varint(buf, pos, end)
    if pos < 0:
        raise MalformedPacket("variable byte integer runs past the end of the packet")
    return value, pos


def read_u16(buf: bytes, pos: int, end: int) -> tuple[int, int]:
    if pos + 2 > end:
        raise MalformedPacket("two-byte integer runs past the end of the packet")
    return (buf[pos] << 8) | buf[pos + 1], pos + 2


def read_u32(buf: bytes, pos: int, end: int) -> tuple[int, int]:
    if pos + 4 > end:
        raise MalformedPacket("four-byte integer runs past the end of the packet")
    return int.from_bytes(buf[pos : pos + 4], "big"), pos + 4


def read_binary(buf: bytes, pos: int, end: int) -> tuple[bytes, int]:
    if pos + 2 > end:
        raise MalformedPacket("binary length runs past the end of the packet")
    stop = pos + 2 + ((buf[pos] << 8) | buf[pos + 1])
    if stop > end:
        raise MalformedPacket("binary data runs past the end of the packet")
    return buf[pos + 2 : stop], stop


def read_string(buf: bytes, pos: int, end: int) -> tuple[str, int]:
    """A UTF-8 string; strict decoding rejects invalid sequences and encoded surrogates."""
    if pos + 2 > end:
        raise MalformedPacket("string length runs past the end of the packet")
    stop = pos + 2 + ((buf[pos] << 8) | buf[pos + 1])
    if stop > end:
        raise MalformedPacket("string runs past the end of the packet")
    try:
        text = buf[pos + 2 : stop].decode()
    except UnicodeDecodeError:
        raise MalformedPacket("string is not valid UTF-8") from None
    if "\x00" in text:
        raise MalformedPacket("string contains U+0000")
    return text, stop


# --- writing -------------------------------------------------------------------------------


def encode_varint(value: int) -> bytes:
    if value < 0x80:
        if value < 0:
            raise ValueError("variable byte integer cannot be negative")
        return bytes((value,))
    if value < 0x4000:  # two bytes: a PUBLISH of 128 bytes to 16 KiB, without the loop
        return bytes(((value & 0x7F) | 0x80, value >> 7))
    if value > MAX_VARINT:
        raise ValueError(f"{value} does not fit a variable byte integer")
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def encode_binary(data: bytes) -> bytes:
    size = len(data)
    if size > 0xFFFF:
        raise ValueError("binary data longer than 65535 bytes")
    return size.to_bytes(2, "big") + data


def encode_string(text: str) -> bytes:
    return encode_binary(text.encode())


# --- looking into encoded packets ----------------------------------------------------------


def publish_packet_id_offset(data: bytes, qos: int) -> int:
    """Where the packet id sits in an encoded PUBLISH (after the fixed header and the
    topic), so a shared encoding can be patched per receiver; 0 for QoS 0, which has none.
    """
    if not qos:
        return 0
    # Most PUBLISH fit a one-byte remaining length (once per encoded variant, not per delivery).
    pos = 2 if data[1] < 0x80 else decode_varint(data, 1, len(data))[1]
    return pos + 2 + ((data[pos] << 8) | data[pos + 1])


def is_v5_connect(data: bytes) -> bool:
    """Whether ``data`` starts an MQTT 5 CONNECT, judged by its first bytes only: a
    malformed one still deserves a v5 CONNACK."""
    if len(data) < 2 or data[0] != 0x10:
        return False
    try:
        _size, pos = decode_varint(data, 1, len(data))
    except MalformedPacket:
        return False
    return pos > 0 and data[pos : pos + 7] == _PROTOCOL_V5
