"""Encode and decode MQTT control packets for 3.1 (level 3), 3.1.1 (level 4) and 5.0 (level 5).

Sans-I/O: ``encode`` turns a packet into bytes, ``Decoder.feed`` turns the
byte stream one peer sends into packets. Rules this file keeps:

- A decoder accepts only what its peer may send: a server decoder takes client
  packets, CONNECT first and only once; a client decoder takes server packets.
  Wrong direction is a ProtocolError; packet type 0 (and AUTH before v5) is
  reserved, so a MalformedPacket.
- Fixed header flags are 0b0010 on PUBREL/SUBSCRIBE/UNSUBSCRIBE, 0 elsewhere,
  and carry DUP/QoS/RETAIN on PUBLISH (QoS 3, or DUP on QoS 0, is malformed).
- A packet larger than ``max_packet_size`` fails as soon as its header is read,
  before its body is buffered.
- Every field must fit inside the packet and, where the spec allows no more,
  fill it exactly; packet identifiers are never 0. Either breach is malformed.
- Decoded PUBLISH payloads are ``bytes``; the decoder works on one ``bytes``
  buffer per ``feed`` call, so slicing it yields the values directly.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from ferrymq.mqtt.errors import (
    MalformedPacket,
    MQTTError,
    PacketTooLarge,
    ProtocolError,
    UnsupportedProtocolVersion,
)
from ferrymq.mqtt.packets import (
    CONNACK,
    CONNECT,
    PUBLISH,
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
    Properties,
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
from ferrymq.mqtt.properties import WILL, decode_properties, encode_properties
from ferrymq.mqtt.wire import (
    decode_varint,
    encode_binary,
    encode_string,
    encode_varint,
    read_binary,
    read_string,
)

MAX_PACKET_SIZE = 268_435_460  # 1 byte of type, 4 of remaining length, 268_435_455 of body

_PROTOCOL_NAMES = {3: b"\x00\x06MQIsdp", 4: b"\x00\x04MQTT", 5: b"\x00\x04MQTT"}
_SUPPORTED = {("MQIsdp", 3), ("MQTT", 4), ("MQTT", 5)}


# --- encoding ------------------------------------------------------------------------------


def _frame(first_byte: int, body: bytes) -> bytes:
    size = len(body)
    if size < 0x80:
        return bytes((first_byte, size)) + body
    return bytes((first_byte,)) + encode_varint(size) + body


def encode_publish(
    topic: str,
    payload: bytes,
    qos: int,
    retain: bool,
    dup: bool,
    packet_id: int,
    properties: Properties | None,
    version: int,
) -> bytes:
    """Encode a PUBLISH; for QoS > 0 the packet id sits right after the topic string."""
    name = topic.encode()
    name_len = len(name)
    first = 0x30 | (qos << 1) | (8 if dup else 0) | (1 if retain else 0)
    if version == 5:
        props = encode_properties(properties, PUBLISH) if properties else b"\x00"
        size = 2 + name_len + len(props) + len(payload)
    else:
        props = b""
        size = 2 + name_len + len(payload)
    if qos:
        size += 2
    if size < 0x80:
        head = bytes((first, size, name_len >> 8, name_len & 0xFF))
    else:
        if name_len > 0xFFFF:
            raise ValueError("topic longer than 65535 bytes")
        head = bytes((first,)) + encode_varint(size) + bytes((name_len >> 8, name_len & 0xFF))
    if qos:
        return b"".join((head, name, packet_id.to_bytes(2, "big"), props, payload))
    return b"".join((head, name, props, payload))


def _encode_publish(p: Publish, version: int) -> bytes:
    return encode_publish(
        p.topic, p.payload, p.qos, p.retain, p.dup, p.packet_id, p.properties, version
    )


def _encode_connect(p: Connect, version: int) -> bytes:
    """Protocol name and level come from ``version``, which also fixes the layout."""
    will = p.will
    flags = 0x02 if p.clean_start else 0
    if will is not None:
        flags |= 0x04 | (will.qos << 3) | (0x20 if will.retain else 0)
    if p.username is not None:
        flags |= 0x80
    if p.password is not None:
        flags |= 0x40
    v5 = version == 5
    parts = [_PROTOCOL_NAMES[version], bytes((version, flags)), p.keepalive.to_bytes(2, "big")]
    if v5:
        parts.append(encode_properties(p.properties, CONNECT))
    parts.append(encode_string(p.client_id))
    if will is not None:
        if v5:
            parts.append(encode_properties(will.properties, WILL))
        parts.append(encode_string(will.topic))
        parts.append(encode_binary(will.payload))
    if p.username is not None:
        parts.append(encode_string(p.username))
    if p.password is not None:
        parts.append(encode_binary(p.password))
    return _frame(0x10, b"".join(parts))


def _encode_connack(p: Connack, version: int) -> bytes:
    body = bytes((1 if p.session_present else 0, p.reason_code))
    if version == 5:
        body += encode_properties(p.properties, CONNACK)
    return _frame(0x20, body)


def _encode_ack(p: Puback | Pubrec | Pubrel | Pubcomp, version: int) -> bytes:
    first = 0x62 if p.type == 6 else p.type << 4
    if version == 5 and (p.reason_code or p.properties):
        body = p.packet_id.to_bytes(2, "big") + bytes((p.reason_code,))
        if p.properties:
            body += encode_properties(p.properties, p.type)
        return _frame(first, body)
    return bytes((first, 2)) + p.packet_id.to_bytes(2, "big")


def _encode_subscribe(p: Subscribe, version: int) -> bytes:
    parts = [p.packet_id.to_bytes(2, "big")]
    v5 = version == 5
    if v5:
        parts.append(encode_properties(p.properties, SUBSCRIBE))
    for sub in p.subscriptions:
        options = sub.qos
        if v5:
            options |= (
                (4 if sub.no_local else 0)
                | (8 if sub.retain_as_published else 0)
                | (sub.retain_handling << 4)
            )
        parts.append(encode_string(sub.topic_filter) + bytes((options,)))
    return _frame(0x82, b"".join(parts))


def _encode_suback(p: Suback, version: int) -> bytes:
    body = p.packet_id.to_bytes(2, "big")
    if version == 5:
        body += encode_properties(p.properties, SUBACK)
    return _frame(0x90, body + bytes(p.reason_codes))


def _encode_unsubscribe(p: Unsubscribe, version: int) -> bytes:
    parts = [p.packet_id.to_bytes(2, "big")]
    if version == 5:
        parts.append(encode_properties(p.properties, UNSUBSCRIBE))
    parts.extend(encode_string(f) for f in p.topic_filters)
    return _frame(0xA2, b"".join(parts))


def _encode_unsuback(p: Unsuback, version: int) -> bytes:
    body = p.packet_id.to_bytes(2, "big")
    if version == 5:
        body += encode_properties(p.properties, UNSUBACK) + bytes(p.reason_codes)
    return _frame(0xB0, body)


def _encode_pingreq(p: Pingreq, version: int) -> bytes:
    return b"\xc0\x00"


def _encode_pingresp(p: Pingresp, version: int) -> bytes:
    return b"\xd0\x00"


def _encode_disconnect(p: Disconnect, version: int) -> bytes:
    if version != 5 or not (p.reason_code or p.properties):
        return b"\xe0\x00"
    body = bytes((p.reason_code,))
    if p.properties:
        body += encode_properties(p.properties, p.type)
    return _frame(0xE0, body)


def _encode_auth(p: Auth, version: int) -> bytes:
    if version != 5:
        raise ValueError("AUTH exists only in MQTT 5")
    if not (p.reason_code or p.properties):
        return b"\xf0\x00"
    return _frame(0xF0, bytes((p.reason_code,)) + encode_properties(p.properties, p.type))


_ENCODERS: dict[type, Callable[[Any, int], bytes]] = {
    Connect: _encode_connect,
    Connack: _encode_connack,
    Publish: _encode_publish,
    Puback: _encode_ack,
    Pubrec: _encode_ack,
    Pubrel: _encode_ack,
    Pubcomp: _encode_ack,
    Subscribe: _encode_subscribe,
    Suback: _encode_suback,
    Unsubscribe: _encode_unsubscribe,
    Unsuback: _encode_unsuback,
    Pingreq: _encode_pingreq,
    Pingresp: _encode_pingresp,
    Disconnect: _encode_disconnect,
    Auth: _encode_auth,
}


def encode(packet: Packet, version: int) -> bytes:
    """Encode ``packet`` for protocol level ``version``; v5-only fields are dropped for 3/4."""
    if version not in _PROTOCOL_NAMES:
        raise ValueError(f"unknown protocol level {version}")
    return _ENCODERS[type(packet)](packet, version)


# --- decoding: one function per packet type ------------------------------------------------
#
# Each takes (decoder, flags, buf, start, end): the low nibble of the first byte and the
# packet body as buf[start:end]; each returns the packet or raises an MQTTError.


def _packet_id(buf: bytes, pos: int, end: int) -> int:
    if pos + 2 > end:
        raise MalformedPacket("packet identifier runs past the end of the packet")
    packet_id = (buf[pos] << 8) | buf[pos + 1]
    if not packet_id:
        raise MalformedPacket("packet identifier is 0")
    return packet_id


def _no_flags(flags: int) -> None:
    if flags:
        raise MalformedPacket("reserved fixed header flags are set")


def _at_end(pos: int, end: int) -> None:
    if pos != end:
        raise MalformedPacket("packet has bytes past its last field")


def _decode_connect(d: Decoder, flags: int, buf: bytes, start: int, end: int) -> Connect:
    _no_flags(flags)
    name, pos = read_string(buf, start, end)
    if pos >= end:
        raise MalformedPacket("CONNECT ends before its protocol level")
    level = buf[pos]
    if (name, level) not in _SUPPORTED:
        err = UnsupportedProtocolVersion(f"unsupported protocol {name!r} level {level}")
        err.protocol_name = name  # type: ignore[attr-defined]
        err.protocol_version = level  # type: ignore[attr-defined]
        raise err
    if pos + 4 > end:
        raise MalformedPacket("CONNECT ends before its keep alive")
    cflags = buf[pos + 1]
    keepalive = (buf[pos + 2] << 8) | buf[pos + 3]
    pos += 4
    if cflags & 0x01:
        raise MalformedPacket("CONNECT reserved flag is set")
    will_qos = (cflags >> 3) & 3
    if cflags & 0x04:
        if will_qos == 3:
            raise MalformedPacket("will QoS is 3")
    elif cflags & 0x38:
        raise MalformedPacket("will QoS or retain set without a will")
    if level != 5 and cflags & 0xC0 == 0x40:
        raise MalformedPacket("password flag set without the username flag")
    props = None
    if level == 5:
        props, pos = decode_properties(buf, pos, end, CONNECT)
        if "authentication_data" in props and "authentication_method" not in props:
            raise ProtocolError("authentication data without an authentication method")
    client_id, pos = read_string(buf, pos, end)
    will = None
    if cflags & 0x04:
        will_props = None
        if level == 5:
            will_props, pos = decode_properties(buf, pos, end, WILL)
            _check_response_topic(will_props)
        will_topic, pos = read_string(buf, pos, end)
        will_payload, pos = read_binary(buf, pos, end)
        will = Will(will_topic, will_payload, will_qos, bool(cflags & 0x20), will_props)  # type: ignore[arg-type]
    username = password = None
    if cflags & 0x80:
        username, pos = read_string(buf, pos, end)
    if cflags & 0x40:
        password, pos = read_binary(buf, pos, end)
    _at_end(pos, end)
    d._set_version(level)
    return Connect(
        client_id,
        protocol_name=name,
        protocol_version=level,
        clean_start=bool(cflags & 0x02),
        keepalive=keepalive,
        will=will,
        username=username,
        password=password,
        properties=props,  # type: ignore[arg-type]
    )


def _decode_connack(d: Decoder, flags: int, buf: bytes, start: int, end: int) -> Connack:
    _no_flags(flags)
    if end - start < 2:
        raise MalformedPacket("CONNACK shorter than 2 bytes")
    ack_flags = buf[start]
    if ack_flags & 0xFE:
        raise MalformedPacket("CONNACK reserved acknowledge flags are set")
    props = None
    pos = start + 2
    # A v5 client may meet a 3.x server refusing it with a 2-byte CONNACK.
    if d.version == 5 and pos < end:
        props, pos = decode_properties(buf, pos, end, CONNACK)
    _at_end(pos, end)
    return Connack(bool(ack_flags), buf[start + 1], props)  # type: ignore[arg-type]


def _decode_publish(d: Decoder, flags: int, buf: bytes, start: int, end: int) -> Publish:
    # The hottest path: the topic is read inline and v3 builds no properties dict.
    if start + 2 > end:
        raise MalformedPacket("PUBLISH ends inside its topic length")
    pos = start + 2 + ((buf[start] << 8) | buf[start + 1])
    if pos > end:
        raise MalformedPacket("PUBLISH topic runs past the end of the packet")
    try:
        topic = buf[start + 2 : pos].decode()
    except UnicodeDecodeError:
        raise MalformedPacket("PUBLISH topic is not valid UTF-8") from None
    if "\x00" in topic:
        raise MalformedPacket("PUBLISH topic contains U+0000")
    qos = flags >> 1 & 3
    if qos:
        if qos == 3:
            raise MalformedPacket("PUBLISH QoS is 3")
        if pos + 2 > end:
            raise MalformedPacket("PUBLISH ends inside its packet identifier")
        packet_id = (buf[pos] << 8) | buf[pos + 1]
        if not packet_id:
            raise MalformedPacket("packet identifier is 0")
        pos += 2
    elif flags & 8:
        raise MalformedPacket("PUBLISH QoS 0 with DUP set")
    else:
        packet_id = 0
    if d.version == 5:
        props, pos = decode_properties(buf, pos, end, PUBLISH)
        if props:
            _check_response_topic(props)
        return Publish(topic, buf[pos:end], qos, flags & 1 == 1, flags & 8 == 8, packet_id, props)
    # An explicit {} here and in the acks: cheaper than the dataclass's default factory.
    return Publish(topic, buf[pos:end], qos, flags & 1 == 1, flags & 8 == 8, packet_id, {})


def _check_response_topic(props: Properties) -> None:
    """A Response Topic is a topic name: no wildcards (MQTT 5 3.3.2.3.5, 3.1.3.2.5)."""
    topic = props.get("response_topic")
    if topic is not None and ("+" in topic or "#" in topic):
        raise ProtocolError("response topic contains a wildcard")


def _ack_decoder(
    cls: type[Puback | Pubrec | Pubrel | Pubcomp],
) -> Callable[[Decoder, int, bytes, int, int], Packet]:
    expected_flags = 2 if cls is Pubrel else 0
    kind = cls.type

    def decode(d: Decoder, flags: int, buf: bytes, start: int, end: int) -> Packet:
        if flags != expected_flags:
            raise MalformedPacket("invalid fixed header flags")
        packet_id = _packet_id(buf, start, end)
        size = end - start
        if size == 2:
            return cls(packet_id, 0, {})
        if d.version != 5:
            raise MalformedPacket("acknowledgement longer than 2 bytes")
        if size == 3:
            return cls(packet_id, buf[start + 2], {})
        props, pos = decode_properties(buf, start + 3, end, kind)
        _at_end(pos, end)
        return cls(packet_id, buf[start + 2], props)

    decode.__name__ = f"_decode_{cls.__name__.lower()}"
    return decode


def _decode_subscribe(d: Decoder, flags: int, buf: bytes, start: int, end: int) -> Subscribe:
    if flags != 2:
        raise MalformedPacket("SUBSCRIBE fixed header flags are not 0b0010")
    packet_id = _packet_id(buf, start, end)
    pos = start + 2
    props = None
    v5 = d.version == 5
    if v5:
        props, pos = decode_properties(buf, pos, end, SUBSCRIBE)
    subscriptions = []
    while pos < end:
        topic_filter, pos = read_string(buf, pos, end)
        if pos >= end:
            raise MalformedPacket("topic filter without subscription options")
        options = buf[pos]
        pos += 1
        qos = options & 3
        if qos == 3:
            raise MalformedPacket("requested QoS is 3")
        if not v5:
            if options & 0xFC:
                raise MalformedPacket("reserved bits of the requested QoS are set")
            subscriptions.append(SubscriptionOptions(topic_filter, qos))
            continue
        if options & 0xC0:
            raise MalformedPacket("reserved subscription option bits are set")
        retain_handling = options >> 4 & 3
        if retain_handling == 3:
            raise MalformedPacket("retain handling is 3")
        subscriptions.append(
            SubscriptionOptions(
                topic_filter, qos, bool(options & 4), bool(options & 8), retain_handling
            )
        )
    if not subscriptions:
        raise ProtocolError("SUBSCRIBE without topic filters")
    return Subscribe(packet_id, subscriptions, props)  # type: ignore[arg-type]


def _decode_suback(d: Decoder, flags: int, buf: bytes, start: int, end: int) -> Suback:
    _no_flags(flags)
    packet_id = _packet_id(buf, start, end)
    pos = start + 2
    props = None
    if d.version == 5:
        props, pos = decode_properties(buf, pos, end, SUBACK)
    if pos >= end:
        raise ProtocolError("SUBACK without reason codes")
    return Suback(packet_id, list(buf[pos:end]), props)  # type: ignore[arg-type]


def _decode_unsubscribe(d: Decoder, flags: int, buf: bytes, start: int, end: int) -> Unsubscribe:
    if flags != 2:
        raise MalformedPacket("UNSUBSCRIBE fixed header flags are not 0b0010")
    packet_id = _packet_id(buf, start, end)
    pos = start + 2
    props = None
    if d.version == 5:
        props, pos = decode_properties(buf, pos, end, UNSUBSCRIBE)
    topic_filters = []
    while pos < end:
        topic_filter, pos = read_string(buf, pos, end)
        topic_filters.append(topic_filter)
    if not topic_filters:
        raise ProtocolError("UNSUBSCRIBE without topic filters")
    return Unsubscribe(packet_id, topic_filters, props)  # type: ignore[arg-type]


def _decode_unsuback(d: Decoder, flags: int, buf: bytes, start: int, end: int) -> Unsuback:
    _no_flags(flags)
    packet_id = _packet_id(buf, start, end)
    if d.version != 5:
        _at_end(start + 2, end)
        return Unsuback(packet_id)
    props, pos = decode_properties(buf, start + 2, end, UNSUBACK)
    if pos >= end:
        raise ProtocolError("UNSUBACK without reason codes")
    return Unsuback(packet_id, list(buf[pos:end]), props)


def _decode_pingreq(d: Decoder, flags: int, buf: bytes, start: int, end: int) -> Pingreq:
    _no_flags(flags)
    _at_end(start, end)
    return Pingreq()


def _decode_pingresp(d: Decoder, flags: int, buf: bytes, start: int, end: int) -> Pingresp:
    _no_flags(flags)
    _at_end(start, end)
    return Pingresp()


def _decode_disconnect(d: Decoder, flags: int, buf: bytes, start: int, end: int) -> Disconnect:
    _no_flags(flags)
    if start == end:
        return Disconnect()
    if d.version != 5:
        raise MalformedPacket("DISCONNECT has a body")
    if end - start == 1:
        return Disconnect(buf[start])
    props, pos = decode_properties(buf, start + 1, end, Disconnect.type)
    _at_end(pos, end)
    return Disconnect(buf[start], props)


def _decode_auth(d: Decoder, flags: int, buf: bytes, start: int, end: int) -> Auth:
    _no_flags(flags)
    if start == end:
        return Auth()
    if end - start == 1:
        return Auth(buf[start])
    props, pos = decode_properties(buf, start + 1, end, Auth.type)
    _at_end(pos, end)
    return Auth(buf[start], props)


# Stand-ins for packet types a decoder must refuse in its current state.


def _reserved(d: Decoder, flags: int, buf: bytes, start: int, end: int) -> Packet:
    raise MalformedPacket("reserved control packet type")


def _wrong_direction(d: Decoder, flags: int, buf: bytes, start: int, end: int) -> Packet:
    side = "client" if d.server else "server"
    raise ProtocolError(f"a {side} may not send this control packet type")


def _before_connect(d: Decoder, flags: int, buf: bytes, start: int, end: int) -> Packet:
    raise ProtocolError("the first packet must be CONNECT")


def _second_connect(d: Decoder, flags: int, buf: bytes, start: int, end: int) -> Packet:
    raise ProtocolError("a second CONNECT on the same connection")


_Handler = Callable[["Decoder", int, bytes, int, int], Packet]
_REFUSALS = frozenset({_reserved, _wrong_direction, _before_connect, _second_connect})
_ACKS = [_ack_decoder(cls) for cls in (Puback, Pubrec, Pubrel, Pubcomp)]


@functools.cache  # one tuple per (side, level), shared by every decoder
def _table(server: bool, version: int | None) -> tuple[_Handler, ...]:
    """Handler per packet type (index = type) for one side, protocol level and state."""
    if server and version is None:
        return (_reserved, _decode_connect, *[_before_connect] * 14)
    v5 = version == 5
    auth = _decode_auth if v5 else _reserved
    if server:
        return (
            _reserved,
            _second_connect,
            _wrong_direction,
            _decode_publish,
            *_ACKS,
            _decode_subscribe,
            _wrong_direction,
            _decode_unsubscribe,
            _wrong_direction,
            _decode_pingreq,
            _wrong_direction,
            _decode_disconnect,
            auth,
        )
    return (
        _reserved,
        _wrong_direction,
        _decode_connack,
        _decode_publish,
        *_ACKS,
        _wrong_direction,
        _decode_suback,
        _wrong_direction,
        _decode_unsuback,
        _wrong_direction,
        _decode_pingresp,
        _decode_disconnect if v5 else _wrong_direction,
        auth,
    )


# The table of a decoder whose feed() raised: it decodes nothing more.
_SPENT: tuple[_Handler, ...] = ()


class Decoder:
    """Incremental decoder of the byte stream one peer sends.

    ``server=True`` decodes what a client sends; ``version`` stays None until a
    CONNECT sets it (passing a version means the CONNECT was already handled).
    ``server=False`` decodes what a server sends, for ``version`` (default 4).
    After ``feed`` raises, the decoder is spent: the connection must close.
    """

    __slots__ = ("_chunks", "_held", "_need", "_table", "max_packet_size", "server", "version")

    def __init__(
        self,
        server: bool = True,
        max_packet_size: int = MAX_PACKET_SIZE,
        version: int | None = None,
    ) -> None:
        if not server and version is None:
            version = 4
        if version is not None and version not in _PROTOCOL_NAMES:
            raise ValueError(f"unknown protocol level {version}")
        self.server = server
        self.version = version
        self.max_packet_size = max_packet_size
        self._table = _table(server, version)  # set to _SPENT once feed() has raised
        # Undecoded bytes, the start of one incomplete packet: a list only while there are.
        self._chunks: list[bytes] | tuple[()] = ()
        self._held = 0  # their total length
        self._need = 0  # how many bytes they must reach before decoding can progress

    def _set_version(self, version: int) -> None:
        self.version = version
        self._table = _table(self.server, version)

    def feed(self, data: bytes | bytearray | memoryview) -> list[Packet]:
        """Append ``data``; return every packet now complete. Errors carry ``.packets``."""
        if self._table is _SPENT:
            err = ProtocolError("the decoder failed earlier; the connection must close")
            err.packets = []  # type: ignore[attr-defined]
            raise err
        chunk: bytes = data if type(data) is bytes else bytes(data)
        if self._chunks:
            self._chunks.append(chunk)  # type: ignore[union-attr]  # a list: non-empty
            self._held += len(chunk)
            if self._held < self._need:
                return []
            buf = b"".join(self._chunks)
            self._chunks = ()
        elif chunk:
            buf = chunk
        else:
            return []
        packets: list[Packet] = []
        try:
            self._decode(buf, packets)
        except MQTTError as exc:
            self._table = _SPENT
            exc.packets = packets  # type: ignore[attr-defined]
            raise
        except (IndexError, ValueError) as exc:  # a safety net: no other error may escape
            self._table = _SPENT
            malformed = MalformedPacket(f"undecodable packet: {exc}")
            malformed.packets = packets  # type: ignore[attr-defined]
            raise malformed from exc
        return packets

    def _decode(self, buf: bytes, packets: list[Packet]) -> None:
        table = self._table
        max_size = self.max_packet_size
        append = packets.append
        n = len(buf)
        pos = 0
        need = 0
        while pos < n:
            if pos + 1 == n:
                need = 2
                break
            first = buf[pos]
            size = buf[pos + 1]
            if size < 0x80:
                start = pos + 2
            else:
                size, start = decode_varint(buf, pos + 1, n)
                if start < 0:
                    need = n - pos + 1
                    break
            end = start + size
            if end - pos > max_size:
                raise PacketTooLarge(f"packet of {end - pos} bytes exceeds {max_size}")
            if end > n:
                handler = table[first >> 4]
                if handler in _REFUSALS:  # refuse now rather than buffer the body first
                    handler(self, first & 0x0F, buf, start, end)
                need = end - pos
                break
            append(table[first >> 4](self, first & 0x0F, buf, start, end))
            if first >> 4 == CONNECT:
                table = self._table
            pos = end
        if pos < n:
            rest = buf[pos:] if pos else buf
            self._chunks = [rest]
            self._held = len(rest)
            self._need = need
