"""The server side of one MQTT connection as a state machine without I/O.

In the manner of h11: the caller hands in the bytes a client sent with the
current time (``receive``), is handed the packets the broker must act on
(``dispatch``, one handler per packet type), writes the bytes the other
methods return, and wakes the machine at ``deadline`` (``timer_expired``).
Nothing here reads a clock, touches a socket, schedules a timer, logs or
counts: that is the caller's.

Rules kept here, each in one place:

- States: AWAIT_CONNECT -> CONNECT_RECEIVED (the broker decides; ``accept`` or
  a refusal) -> CONNECTED -> CLOSED. "CONNECT first, and once" is the
  decoder's (its per-state tables); what arrives while the broker decides
  waits here, and is handed out after ``accept``.
- Every broken rule raises ``ProtocolViolation(reason_code, text)`` and
  ``violation`` alone turns one into the bytes to send: a v5 CONNACK before
  the CONNECT is accepted, a v5 DISCONNECT after it. MQTT 3 only has CONNACK
  return codes for a CONNECT it refuses; a malformed packet, or none in time,
  closes without a word.
- CONNECT: client id rules (3.1: at most 23 characters; empty only with a
  clean session in 3.1.1, then assigned, as in 5), no enhanced
  authentication, will topic, QoS and retain; from the v5 properties and the
  server's limits the receive maximum, maximum packet size, topic alias
  maxima, the capped session expiry, the server keep alive and the CONNACK
  properties.
- Keep alive: the client sends something within 1.5 x its keep alive
  (counted from the last bytes received); before CONNECT the connect timeout.
- PUBLISH in: a topic alias is resolved into the decoded ``Publish`` itself
  (the broker gets the packet the decoder made, no event object per message);
  topic name rules, QoS and retain availability, UTF-8 when the payload says
  so, no subscription identifier; QoS 2 resend detection and the receive
  maximum on the session's ``awaiting_rel`` (packet id -> time received),
  which ``accept`` is handed.
- PUBLISH out: one encoded template per message variant, shared by every
  connection (``msg.cache``); topic aliases towards a client that accepts
  them; the client's maximum packet size; packet id and DUP patched into a
  copy. Acknowledgements carry a reason code only in v5 and only when not 0;
  an MQTT 3 SUBACK has one failure code (0x80), an MQTT 3 UNSUBACK none.
"""

from __future__ import annotations

import enum
import os
from collections.abc import Callable, Iterator, Mapping, MutableMapping, Sequence
from types import MappingProxyType
from typing import Any, Protocol

from ferrymq.mqtt import reason_codes as rc
from ferrymq.mqtt.codec import Decoder, encode, encode_publish
from ferrymq.mqtt.errors import MQTTError, UnsupportedProtocolVersion
from ferrymq.mqtt.packets import (
    AUTH,
    CONNECT,
    DISCONNECT,
    MQTT5,
    MQTT31,
    PINGREQ,
    PUBCOMP,
    PUBLISH,
    PUBREC,
    PUBREL,
    SUBSCRIBE,
    Connack,
    Connect,
    Disconnect,
    Packet,
    Properties,
    Puback,
    Publish,
    Pubrec,
    Suback,
    Subscribe,
    Unsuback,
    Will,
)
from ferrymq.mqtt.topics import TopicError, validate_topic_name
from ferrymq.mqtt.wire import is_v5_connect, publish_packet_id_offset

_INF = float("inf")
# Read-only stand-ins until a connection needs its own (memory per idle connection):
# the session's awaiting_rel arrives with ``accept``, an alias table only when aliases are
# allowed, and no packet waits between two ``dispatch`` calls.
# (Typed as the abstract mappings, which compiled code does not check at run time.)
_NO_IDS: MutableMapping[int, Any] = MappingProxyType({})  # type: ignore[assignment]
_NO_PROPS: Mapping[str, Any] = MappingProxyType({})
_NO_PACKETS: Sequence[Packet] = ()
_PINGRESP = b"\xd0\x00"
# The CONNACK accepting an MQTT 3.1/3.1.1 CONNECT is the same for every client.
_V3_CONNACK = encode(Connack(False, rc.SUCCESS), 4)
_V3_CONNACK_PRESENT = encode(Connack(True, rc.SUCCESS), 4)
# Encoded variants kept per message (protocol version, QoS, retain, ids, expiry).
_CACHE_VARIANTS = 16
# Reasons MQTT 3 cannot report: the connection closes without a CONNACK.
_SILENT_V3 = frozenset(
    {rc.MALFORMED_PACKET, rc.PROTOCOL_ERROR, rc.PACKET_TOO_LARGE, rc.MAXIMUM_CONNECT_TIME}
)


class State(enum.Enum):
    AWAIT_CONNECT = "await connect"
    CONNECT_RECEIVED = "connect received"  # the broker decides: accept() or a refusal
    CONNECTED = "connected"
    CLOSED = "closed"


AWAIT_CONNECT = State.AWAIT_CONNECT
CONNECT_RECEIVED = State.CONNECT_RECEIVED
CONNECTED = State.CONNECTED
CLOSED = State.CLOSED


class ProtocolViolation(Exception):
    """A rule of the protocol is broken (by the client, the broker's decision or a
    timeout): the connection closes, after the bytes ``violation`` makes of it.

    ``packet`` is the packet that broke the rule, when one did; ``refused`` marks a
    PUBLISH that cannot be published (its topic name, or the receive maximum).
    """

    def __init__(
        self, reason_code: int, text: str, packet: Packet | None = None, refused: bool = False
    ) -> None:
        super().__init__(text)
        self.reason_code = reason_code
        self.text = text
        self.packet = packet
        self.refused = refused


class Reply:
    """A packet the machine answered itself: PINGRESP, the PUBREC of a resent QoS 2
    PUBLISH, the acknowledgement of a PUBLISH refused for its payload. The caller
    writes ``data`` (in order with its acknowledgements) and, if ``dropped``, counts
    a dropped message. Made only off the PUBLISH hot path."""

    __slots__ = ("packet", "data", "dropped")
    type = 0  # no control packet has type 0: a slot of its own in a dispatch table

    def __init__(self, packet: Packet, data: bytes, dropped: bool) -> None:
        self.packet = packet
        self.data = data
        self.dropped = dropped


# What ``dispatch`` calls per packet type: (target, packet or Reply).
Handler = Callable[[Any, Any], None]


class Limits(Protocol):
    """The server limits the machine negotiates with (``ferrymq.config.Settings``)."""

    connect_timeout: float
    max_packet_size: int
    max_clientid_len: int
    max_topic_levels: int
    max_topic_length: int
    max_qos: int
    retain_available: bool
    max_inflight: int
    max_awaiting_rel: int
    topic_alias_maximum: int
    session_expiry_interval: int
    max_session_expiry_interval: int
    server_keepalive: int
    max_keepalive: int
    wildcard_subscription: bool
    shared_subscription: bool


class OutgoingMessage(Protocol):
    """What ``publish_bytes`` reads of a message (``ferrymq.core.message.Message``)."""

    topic: str
    payload: bytes
    properties: Properties | None
    cache: dict[Any, Any] | None


class ServerConnection:
    """The broker's side of one MQTT connection: its protocol state and rules."""

    __slots__ = (
        "limits",
        "state",
        "decoder",
        "version",
        "client_id",
        "clean_start",
        "keepalive",
        "server_keepalive",
        "session_expiry",
        "send_window",
        "max_packet_out",
        "alias_max_in",
        "aliases_in",
        "alias_max_out",
        "aliases_out",
        "request_problem_info",
        "awaiting_rel",
        "last_recv",
        "deadline",
        "_assigned",
        "_connect_props",
        "_batch",
        "_error",
        "on_hold",
    )

    def __init__(self, limits: Limits, now: float) -> None:
        self.limits = limits
        self.state = AWAIT_CONNECT
        self.decoder = Decoder(server=True, max_packet_size=limits.max_packet_size)
        self.version = 4  # the CONNECT's protocol level, once it is known
        self.client_id = ""
        self.clean_start = True
        self.keepalive = 0
        self.server_keepalive: int | None = None
        self.session_expiry = 0
        self.send_window = limits.max_inflight  # the client's receive maximum, capped
        self.max_packet_out = 0  # the client's maximum packet size (0: no limit)
        self.alias_max_in = 0
        self.aliases_in: MutableMapping[int, str] = _NO_IDS
        self.alias_max_out = 0
        self.aliases_out: dict[str, int] | None = None
        self.request_problem_info = True
        self.awaiting_rel: MutableMapping[int, float] = _NO_IDS
        self.last_recv = now
        # When timer_expired is due: the connect timeout, then the keep alive.
        self.deadline = now + limits.connect_timeout
        self._assigned = False
        self._connect_props: Mapping[str, Any] = _NO_PROPS
        self._batch: Sequence[Packet] = _NO_PACKETS  # decoded, not yet handed out by dispatch()
        self._error: ProtocolViolation | None = None  # the decoder's, raised after the batch
        #: Set by the broker while a handler runs: hand out nothing more until it is
        #: cleared and ``dispatch`` is called again (flow control holds a publisher).
        self.on_hold = False

    # --- bytes in, packets out ------------------------------------------------

    def receive(self, data: bytes, now: float) -> int:
        """Take bytes the client sent; how many packets they completed. ``dispatch``
        hands those out, and raises what the decoder found wrong."""
        if self.state is CLOSED or self._error is not None:
            return 0
        self.last_recv = now
        try:
            packets = self.decoder.feed(data)
        except MQTTError as exc:
            packets = list(exc.packets)
            self._error = self._decode_violation(exc, data, not packets)
        held = self._batch
        self._batch = [*held, *packets] if held else packets
        return len(packets)

    def holding(self) -> bool:
        """Whether packets received wait to be handed out (``on_hold``, a pending CONNECT)."""
        return bool(self._batch)

    def dispatch(self, handlers: Sequence[Handler | None], target: Any) -> None:
        """Hand out the packets received and not yet handed out, each checked just
        before, as ``handlers[packet.type](target, packet)`` (index 0: a ``Reply``, a
        packet answered here). Each packet sees the state the broker left after the
        one before. Stops once the connection is CLOSED, after a CONNECT until
        ``accept``, and once ``on_hold`` is set, keeping the rest for the next call.
        Raises ProtocolViolation; the decoder's after the packets before it.

        A push, not a generator or an event object: the broker's handler is the one
        call per packet, as before the machine existed (a generator's resume per
        packet made the in-memory QoS 1 path about 3 % slower).
        """
        state = self.state
        if self.on_hold:
            return
        if state is CONNECTED or state is AWAIT_CONNECT:
            batch = self._batch
            self._batch = _NO_PACKETS
            limits = self.limits
            # What a PUBLISH is checked against, read from the limits at the first one of
            # the batch: four generic attribute reads a message were 800 of the 21,000
            # instructions a retained message costs the loop (callgrind, S5b).
            max_qos = -1
            max_length = max_levels = 0
            retain_available = True
            packets: Iterator[Any] = iter(batch)  # a Packet, or the Reply made in its place
            for packet in packets:
                ptype = packet.type
                if ptype == PUBLISH:
                    # (no isinstance assert: this is the hot path, and the type says it)
                    props = packet.properties  # type: ignore[attr-defined]
                    reply = self._publish_properties(packet, props) if props else None  # type: ignore[arg-type]
                    if reply is not None:
                        packet = reply
                        ptype = 0
                    else:
                        # Inline, not a method: one call less per message.
                        if max_qos < 0:
                            max_qos = limits.max_qos
                            max_length = limits.max_topic_length
                            max_levels = limits.max_topic_levels
                            retain_available = limits.retain_available
                        topic = packet.topic  # type: ignore[attr-defined]
                        if not topic:
                            raise ProtocolViolation(
                                rc.PROTOCOL_ERROR, "empty topic without a topic alias", packet, True
                            )
                        if "+" in topic or "#" in topic:
                            raise ProtocolViolation(
                                rc.TOPIC_NAME_INVALID, "invalid topic name", packet, True
                            )
                        if len(topic) > max_length or topic.count("/") >= max_levels:
                            raise ProtocolViolation(
                                rc.TOPIC_NAME_INVALID, "topic name exceeds limits", packet, True
                            )
                        qos: int = packet.qos  # type: ignore[attr-defined]
                        if qos > max_qos:
                            raise ProtocolViolation(
                                rc.QOS_NOT_SUPPORTED, "QoS not supported", packet
                            )
                        if packet.retain and not retain_available:  # type: ignore[attr-defined]
                            raise ProtocolViolation(
                                rc.RETAIN_NOT_SUPPORTED, "retain not supported", packet
                            )
                        if qos == 2:
                            pid = packet.packet_id  # type: ignore[attr-defined]
                            if pid in self.awaiting_rel:
                                # A resent QoS 2 PUBLISH: acknowledge again, never route twice.
                                packet = Reply(packet, self.ack(PUBREC, pid), False)
                                ptype = 0
                            elif len(self.awaiting_rel) >= limits.max_awaiting_rel:
                                raise ProtocolViolation(
                                    rc.RECEIVE_MAXIMUM_EXCEEDED,
                                    "too many QoS 2 in flight",
                                    packet,
                                    True,
                                )
                elif ptype == CONNECT:
                    assert isinstance(packet, Connect)
                    self.state = CONNECT_RECEIVED
                    self.version = packet.protocol_version
                    self.clean_start = packet.clean_start
                    self._connect_props = packet.properties
                    handlers[CONNECT](target, packet)  # type: ignore[misc]
                    if self.state is CONNECTED:
                        continue
                    if self.state is CONNECT_RECEIVED:
                        self._batch = list(packets)  # wait for the broker's decision
                        break
                    return
                elif ptype > PUBCOMP:  # the acks need no check: the session knows their ids
                    if ptype == PINGREQ:
                        packet = Reply(packet, _PINGRESP, False)
                        ptype = 0
                    else:
                        self._check(packet)  # DISCONNECT closes: nothing after it is read
                handlers[ptype](target, packet)  # type: ignore[misc]
                if self.state is CLOSED:
                    return
                if self.on_hold:
                    self._batch = list(packets)  # the rest waits, the decoder's error too
                    return
        error = self._error
        if error is not None and self.state is not CLOSED:
            self._error = None
            self._batch = _NO_PACKETS
            raise error

    def _check(self, packet: Packet) -> None:
        """The rules of SUBSCRIBE, DISCONNECT and AUTH; DISCONNECT closes."""
        ptype = packet.type
        if ptype == SUBSCRIBE:
            assert isinstance(packet, Subscribe)
            if self.version == MQTT5:
                for opt in packet.subscriptions:
                    if opt.no_local and opt.topic_filter.startswith(("$share/", "$queue/")):
                        raise ProtocolViolation(
                            rc.PROTOCOL_ERROR, "no local on a shared subscription", packet
                        )
        elif ptype == DISCONNECT:
            assert isinstance(packet, Disconnect)
            expiry = packet.properties.get("session_expiry_interval")
            if expiry is not None:
                if self.session_expiry == 0 and expiry != 0:
                    raise ProtocolViolation(
                        rc.PROTOCOL_ERROR, "session expiry raised from 0", packet
                    )
                self.session_expiry = expiry
            self.state = CLOSED
            self.deadline = _INF
        elif ptype == AUTH:
            # No enhanced authentication method is offered, so CONNECT with one was
            # refused (0x8C) and any AUTH afterwards breaks the protocol.
            raise ProtocolViolation(
                rc.PROTOCOL_ERROR, "AUTH without an authentication method", packet
            )

    def _publish_properties(self, packet: Publish, props: Properties) -> Reply | None:
        """The property rules of an incoming PUBLISH; resolves its topic alias. A Reply
        when the PUBLISH is refused without closing the connection."""
        if "subscription_identifier" in props:
            raise ProtocolViolation(rc.PROTOCOL_ERROR, "subscription identifier in PUBLISH", packet)
        alias = props.get("topic_alias")
        if alias is not None:
            if alias > self.alias_max_in:
                raise ProtocolViolation(rc.TOPIC_ALIAS_INVALID, "topic alias out of range", packet)
            if packet.topic:
                self.aliases_in[alias] = packet.topic
            else:
                found = self.aliases_in.get(alias)
                if found is None:
                    raise ProtocolViolation(rc.PROTOCOL_ERROR, "unknown topic alias", packet)
                packet.topic = found
        if props.get("payload_format_indicator") == 1:
            try:
                packet.payload.decode("utf-8")
            except UnicodeDecodeError:
                data = self.refuse_publish(
                    packet, rc.PAYLOAD_FORMAT_INVALID, "payload is not valid UTF-8", self.last_recv
                )
                return Reply(packet, data, True)
        return None

    def _decode_violation(self, exc: MQTTError, data: bytes, first: bool) -> ProtocolViolation:
        """What the decoder found; ``first``: nothing before it decoded, so when no CONNECT
        was taken yet, the CONNECT itself failed and its level says how to answer."""
        if self.state is AWAIT_CONNECT and first:
            if isinstance(exc, UnsupportedProtocolVersion):
                self.version = MQTT5 if exc.protocol_version == MQTT5 else 4
            elif is_v5_connect(data):
                self.version = MQTT5
        return ProtocolViolation(exc.reason_code, str(exc))

    # --- CONNECT ----------------------------------------------------------------

    def negotiate(self, packet: Connect, client_id: str) -> str:
        """The CONNECT rules that need nothing from the broker (``client_id``: the
        CONNECT's, or the one a TLS certificate imposes). Returns the client id to use,
        assigned when the client left it empty. Raises ProtocolViolation to refuse."""
        self._require(CONNECT_RECEIVED)
        limits = self.limits
        version = self.version
        if not client_id:
            if version == MQTT31 or (version == 4 and not packet.clean_start):
                raise ProtocolViolation(rc.CLIENT_IDENTIFIER_NOT_VALID, "empty client id")
            # As long as a uuid4 (the uuid module would import platform).
            client_id = "ferrymq-" + os.urandom(16).hex()
            self._assigned = True
        elif len(client_id) > limits.max_clientid_len or (
            version == MQTT31 and len(client_id) > 23
        ):
            raise ProtocolViolation(rc.CLIENT_IDENTIFIER_NOT_VALID, "client id too long")
        self.client_id = client_id
        props = packet.properties
        keepalive = packet.keepalive
        if version == MQTT5:
            if props.get("authentication_method") is not None:
                raise ProtocolViolation(rc.BAD_AUTHENTICATION_METHOD, "no enhanced authentication")
            expiry = props.get("session_expiry_interval", 0)
            cap = limits.max_session_expiry_interval
            if cap and expiry > cap:
                expiry = cap
            if limits.server_keepalive:
                self.server_keepalive = keepalive = limits.server_keepalive
            elif keepalive > limits.max_keepalive:
                self.server_keepalive = keepalive = limits.max_keepalive
        else:
            expiry = 0 if packet.clean_start else limits.session_expiry_interval
        self.session_expiry = expiry
        self.keepalive = keepalive
        return client_id

    def check_will(self, will: Will | None) -> None:
        """The will must be publishable here; ProtocolViolation refuses the CONNECT."""
        if will is None:
            return
        limits = self.limits
        try:
            validate_topic_name(will.topic, limits.max_topic_levels, limits.max_topic_length)
        except TopicError:
            raise ProtocolViolation(rc.TOPIC_NAME_INVALID, "invalid will topic") from None
        if will.qos > limits.max_qos:
            raise ProtocolViolation(rc.QOS_NOT_SUPPORTED, "will QoS not supported")
        if will.retain and not limits.retain_available:
            raise ProtocolViolation(rc.RETAIN_NOT_SUPPORTED, "retain not supported")

    def accept(self, session_present: bool, awaiting_rel: dict[int, float], now: float) -> bytes:
        """The broker accepted the CONNECT: the CONNACK to send. ``awaiting_rel`` is the
        session's inbound QoS 2 state, checked and updated here from now on."""
        self._require(CONNECT_RECEIVED)
        self.state = CONNECTED
        self.awaiting_rel = awaiting_rel
        self.deadline = now + self.keepalive * 1.5 if self.keepalive else _INF
        if self.version != MQTT5:
            self._connect_props = _NO_PROPS
            return _V3_CONNACK_PRESENT if session_present else _V3_CONNACK
        limits = self.limits
        props = self._connect_props
        self.send_window = min(limits.max_inflight, props.get("receive_maximum", 65535))
        self.max_packet_out = props.get("maximum_packet_size", 0)
        self.alias_max_out = min(props.get("topic_alias_maximum", 0), 65535)
        if self.alias_max_out:
            self.aliases_out = {}
        self.alias_max_in = limits.topic_alias_maximum
        if self.alias_max_in:
            self.aliases_in = {}
        self.request_problem_info = bool(props.get("request_problem_information", 1))
        self._connect_props = _NO_PROPS  # read here only: not kept for the connection's life
        ack: Properties = {}
        if self.session_expiry != props.get("session_expiry_interval", 0):
            ack["session_expiry_interval"] = self.session_expiry
        ack["receive_maximum"] = limits.max_awaiting_rel
        if limits.max_qos < 2:
            ack["maximum_qos"] = limits.max_qos
        if not limits.retain_available:
            ack["retain_available"] = 0
        ack["maximum_packet_size"] = limits.max_packet_size
        if self._assigned:
            ack["assigned_client_identifier"] = self.client_id
        ack["topic_alias_maximum"] = limits.topic_alias_maximum
        ack["wildcard_subscription_available"] = int(limits.wildcard_subscription)
        ack["subscription_identifier_available"] = 1
        ack["shared_subscription_available"] = int(limits.shared_subscription)
        if self.server_keepalive is not None:
            ack["server_keep_alive"] = self.server_keepalive
        return encode(Connack(session_present, rc.SUCCESS, ack), MQTT5)

    def _require(self, state: State) -> None:
        if self.state is not state:
            raise ProtocolViolation(
                rc.UNSPECIFIED_ERROR, f"not allowed in state {self.state.value!r}"
            )

    # --- timers, violations, closing ---------------------------------------------

    def timer_expired(self, now: float) -> None:
        """Called at or after ``deadline``: raises ProtocolViolation when the client
        timed out, else moves ``deadline`` on."""
        state = self.state
        if state is CONNECTED and self.keepalive:
            limit = self.keepalive * 1.5
            idle = now - self.last_recv
            if idle >= limit:
                raise ProtocolViolation(rc.KEEP_ALIVE_TIMEOUT, "keepalive timeout")
            self.deadline = now + limit - idle
        elif state is AWAIT_CONNECT or state is CONNECT_RECEIVED:
            if now >= self.deadline:
                raise ProtocolViolation(rc.MAXIMUM_CONNECT_TIME, "no CONNECT in time")
        else:
            self.deadline = _INF

    def violation(self, exc: ProtocolViolation) -> bytes:
        """The one place reason codes become bytes: what to send before closing for
        ``exc``. The connection is CLOSED afterwards."""
        state = self.state
        self.close()
        reason = exc.reason_code
        if state is CONNECTED:
            text = exc.text if reason == rc.KEEP_ALIVE_TIMEOUT else f"protocol error: {exc.text}"
            return self._disconnect(reason, text)
        if state is CLOSED or reason == rc.MAXIMUM_CONNECT_TIME:
            return b""
        if self.version == MQTT5:
            # A client of an unknown level gets the bare code, nothing it may not parse.
            props = None if reason == rc.UNSUPPORTED_PROTOCOL_VERSION else self._reason(exc.text)
            return encode(Connack(False, reason, props), MQTT5)  # type: ignore[arg-type]
        if reason in _SILENT_V3:
            return b""
        return encode(Connack(False, rc.v3_connack_code(reason)), self.version)

    def disconnect(self, reason: int, text: str = "") -> bytes:
        """The server ends the connection (takeover, kick, shutdown): MQTT 5 says why in
        a DISCONNECT; MQTT 3 has none. The connection is CLOSED afterwards."""
        connected = self.state is CONNECTED
        self.close()
        return self._disconnect(reason, text) if connected else b""

    def _disconnect(self, reason: int, text: str) -> bytes:
        if self.version != MQTT5:
            return b""
        return encode(Disconnect(reason, self._reason(text)), MQTT5)  # type: ignore[arg-type]

    def close(self) -> None:
        """Nothing more is read or sent on this connection."""
        self.state = CLOSED
        self.deadline = _INF
        self._batch = _NO_PACKETS
        self._error = None

    def _reason(self, text: str) -> Properties | None:
        """The reason string property, unless it could break the client's maximum packet size."""
        if not text or (self.max_packet_out and len(text) + 16 > self.max_packet_out):
            return None
        return {"reason_string": text}

    # --- bytes out ----------------------------------------------------------------

    def ack(self, ptype: int, pid: int, reason: int = 0) -> bytes:
        """PUBACK / PUBREC / PUBREL / PUBCOMP without properties (the QoS 1/2 hot path)."""
        first = 0x62 if ptype == PUBREL else ptype << 4
        if reason and self.version == MQTT5:
            return bytes((first, 3, pid >> 8, pid & 0xFF, reason))
        return bytes((first, 2, pid >> 8, pid & 0xFF))

    def refuse_publish(self, packet: Publish, reason: int, text: str, now: float) -> bytes:
        """The acknowledgement of a PUBLISH dropped without closing (not authorised, bad
        payload), so the client's flow completes: MQTT 3 can only say success, and then
        a QoS 2 id awaits its PUBREL as if routed. Empty for QoS 0."""
        qos = packet.qos
        if qos == 0:
            return b""
        props = None
        if self.version != MQTT5:
            reason = rc.SUCCESS
        elif self.request_problem_info:
            props = self._reason(text)
        if qos == 1:
            return encode(Puback(packet.packet_id, reason, props), self.version)
        if reason == rc.SUCCESS:
            self.awaiting_rel[packet.packet_id] = now
        return encode(Pubrec(packet.packet_id, reason, props), self.version)

    def release(self, pid: int) -> bool:
        """PUBREL of an inbound QoS 2 id: False when the id was not awaiting one."""
        return self.awaiting_rel.pop(pid, None) is not None

    def suback(self, pid: int, codes: list[int]) -> bytes:
        """MQTT 3 has one failure return code (0x80) for every v5 reason."""
        if self.version != MQTT5:
            codes = [c if c < 0x80 else rc.V3_SUBACK_FAILURE for c in codes]
        return encode(Suback(pid, codes), self.version)

    def unsuback(self, pid: int, codes: list[int]) -> bytes:
        """MQTT 3 UNSUBACK has no reason codes."""
        return encode(Unsuback(pid, codes if self.version == MQTT5 else None), self.version)  # type: ignore[arg-type]

    def publish_bytes(
        self,
        msg: OutgoingMessage,
        qos: int,
        retain: bool,
        sub_ids: tuple[int, ...] | None,
        pid: int,
        dup: bool,
        left: int | None,
    ) -> bytes | None:
        """One PUBLISH of ``msg`` for this client (``left``: remaining message expiry, or
        None); None when it exceeds the client's maximum packet size."""
        if self.aliases_out is not None:
            data, offset = self._encode_aliased(msg, qos, retain, sub_ids, left)
        else:
            version = self.version
            # The common variant gets a small int key: no tuple made per delivery.
            key: Any = (
                version << 3 | qos << 1 | retain
                if sub_ids is None and left is None
                else (version, qos, retain, sub_ids, left)
            )
            cache = msg.cache
            if cache is None:
                cache = msg.cache = {}
            entry = cache.get(key)
            if entry is None:
                if len(cache) >= _CACHE_VARIANTS:
                    # Remaining expiry and subscription ids make new variants over time.
                    cache.clear()
                entry = _encode_template(msg, version, qos, retain, sub_ids, left, pid)
                cache[key] = entry
                data = entry[0]
                if not dup:
                    # Encoded with this delivery's packet id already: no copy to patch
                    # (a QoS 1 message with one subscriber is encoded once, as it is sent).
                    # Later deliveries patch theirs into a copy of it, as of any template.
                    if self.max_packet_out and len(data) > self.max_packet_out:
                        return None
                    return data
            data, offset = entry
        if self.max_packet_out and len(data) > self.max_packet_out:
            return None
        if qos:
            buf = bytearray(data)
            buf[offset] = pid >> 8
            buf[offset + 1] = pid & 0xFF
            if dup:
                buf[0] |= 0x08
            data = bytes(buf)
        return data

    def _encode_aliased(
        self,
        msg: OutgoingMessage,
        qos: int,
        retain: bool,
        sub_ids: tuple[int, ...] | None,
        left: int | None,
    ) -> tuple[bytes, int]:
        """Per-client encoding for an MQTT 5 client that accepts topic aliases from us."""
        aliases = self.aliases_out
        assert aliases is not None
        props = _props_for(msg, sub_ids, left)
        topic = msg.topic
        alias = aliases.get(topic)
        if alias is not None:
            props["topic_alias"] = alias
            wire_topic = ""
        else:
            wire_topic = topic
            if len(aliases) < self.alias_max_out:
                alias = len(aliases) + 1
                aliases[topic] = alias
                props["topic_alias"] = alias
        data = encode_publish(wire_topic, msg.payload, qos, retain, False, 0, props, self.version)
        if wire_topic and alias is not None and 0 < self.max_packet_out < len(data):
            # A new alias on a packet too large to send: the client never learns it.
            del aliases[topic]
        return data, publish_packet_id_offset(data, qos)


def _props_for(
    msg: OutgoingMessage, sub_ids: tuple[int, ...] | None, left: int | None
) -> Properties:
    props: Properties = dict(msg.properties) if msg.properties else {}
    if left is not None:
        props["message_expiry_interval"] = left
    if sub_ids:
        props["subscription_identifier"] = list(sub_ids)
    return props


def _encode_template(
    msg: OutgoingMessage,
    version: int,
    qos: int,
    retain: bool,
    sub_ids: tuple[int, ...] | None,
    left: int | None,
    pid: int,
) -> tuple[bytes, int]:
    """The encoding of a variant, with ``pid`` (QoS 1/2), and where its packet id sits."""
    props = _props_for(msg, sub_ids, left) if version == MQTT5 else None
    data = encode_publish(msg.topic, msg.payload, qos, retain, False, pid, props, version)
    return data, publish_packet_id_offset(data, qos)
