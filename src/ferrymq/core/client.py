"""One MQTT network connection: decode what the peer sends, drive the broker, encode replies.

A Client is transport-agnostic: it is handed anything with the asyncio
transport methods (``write``, ``close``, ``pause_reading``,
``resume_reading``, ``get_extra_info``) and is fed bytes by the listener's
protocol object (``data_received``), which also forwards ``pause_writing`` /
``resume_writing`` and ``connection_lost``. TCP, TLS and WebSocket listeners
share it.

Rules kept here:
- the first packet is CONNECT, within ``connect_timeout``; nothing else is
  handled before CONNACK 0;
- a malformed or illegal packet closes this connection only (MQTT 5: CONNACK
  or DISCONNECT with the reason code first);
- outgoing packets are collected and written once per event-loop iteration
  (``Broker.mark_dirty``), never one syscall per packet;
- when the socket backs up (``pause_writing``) deliveries wait in the session
  queue; publishers that feed this client are paused only while the broker is
  saturated (core/flow.py);
- acknowledgements (PUBACK, PUBREC, PUBREL, PUBCOMP) leave in the order they
  were made; one confirming durable state waits for the store batch holding it
  (``durability = "acked"``), and those made after it wait with it.
"""

from __future__ import annotations

import logging
import time
import uuid
from typing import TYPE_CHECKING, Any

from ferrymq.core.banned import peer_host
from ferrymq.core.metrics import RECEIVED_KEYS as _RECV_KEYS
from ferrymq.core.metrics import SENT_KEYS as _SENT_KEYS
from ferrymq.model.message import Message
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
    PUBACK,
    PUBCOMP,
    PUBLISH,
    PUBREC,
    PUBREL,
    SUBSCRIBE,
    UNSUBSCRIBE,
    Connack,
    Connect,
    Disconnect,
    Packet,
    Puback,
    Pubcomp,
    Publish,
    Pubrec,
    Pubrel,
    Suback,
    Subscribe,
    Unsuback,
    Unsubscribe,
)
from ferrymq.mqtt.topics import TopicError, validate_topic_name

if TYPE_CHECKING:
    from ferrymq.core.broker import Broker
    from ferrymq.core.session import Session

log = logging.getLogger("ferrymq.client")

_PINGRESP_BYTES = b"\xd0\x00"
# Bytes collected for one connection before they are written without waiting for
# the end of the event-loop iteration.
_FLUSH_AT = 65536
# Seconds a closed connection waits for the peer to close its side before it is aborted.
_LINGER = 2.0
# Encoded variants kept per message (protocol version, QoS, retain, ids, expiry).
_CACHE_VARIANTS = 16
# Properties a PUBLISH carries on to subscribers (the rest are per-hop).
_FORWARDED = (
    "payload_format_indicator",
    "content_type",
    "response_topic",
    "correlation_data",
    "user_property",
)


class Client:
    """The broker's side of one MQTT connection."""

    # Slots, not a __dict__: a broker holds tens of thousands of these.
    __slots__ = (
        "broker",
        "transport",
        "listener",
        "zone",
        "decoder",
        "version",
        "session",
        "client_id",
        "username",
        "cert_username",
        "cert_clientid",
        "proto_name",
        "clean_start",
        "keepalive",
        "connected",
        "closing",
        "write_paused",
        "read_paused",
        "slow",
        "blocked",
        "paused_by",
        "paused_since",
        "out",
        "out_size",
        "send_window",
        "held",
        "held_packets",
        "max_packet_out",
        "alias_max_in",
        "aliases_in",
        "alias_max_out",
        "aliases_out",
        "request_problem_info",
        "disconnect_reason",
        "will_allowed",
        "peer",
        "connected_at",
        "created_at",
        "last_recv",
        "timer",
        "recv_oct",
        "recv_cnt",
        "recv_pkt",
        "recv_msg",
        "send_oct",
        "send_cnt",
        "send_pkt",
        "send_msg",
    )

    def __init__(
        self, broker: Broker, transport: Any, listener: str = "tcp:default", zone: str = "default"
    ) -> None:
        self.broker = broker
        self.transport = transport
        self.listener = listener
        self.zone = zone
        settings = broker.settings
        self.decoder = Decoder(server=True, max_packet_size=settings.max_packet_size)
        self.version = 4
        self.session: Session | None = None
        self.client_id = ""
        self.username: str | None = None
        # Set by a TLS listener (peer_cert_as_username / _clientid): override CONNECT.
        self.cert_username: str | None = None
        self.cert_clientid: str | None = None
        self.proto_name = "MQTT"
        self.clean_start = True
        self.keepalive = 0
        self.connected = False
        self.closing = False
        self.write_paused = False
        self.read_paused = False
        self.slow = False  # stopped pausing publishers after stalling too long
        self.blocked: list[Client] = []  # publishers paused because of this client
        self.paused_by: set[Client] = set()  # subscribers this client waits for
        self.paused_since = 0.0
        self.out: list[bytes] = []
        self.out_size = 0
        self.send_window = settings.max_inflight
        # Acknowledgements waiting for a store commit: [batch, bytes, bytes ...] in order.
        self.held: list[list[Any]] = []
        # Packets after a CONNECT that waits for the restore (Broker.defer_connect).
        self.held_packets: list[Packet] | None = None
        self.max_packet_out = 0  # client's maximum packet size (0: no limit)
        self.alias_max_in = 0
        self.aliases_in: dict[int, str] = {}
        self.alias_max_out = 0
        self.aliases_out: dict[str, int] | None = None
        self.request_problem_info = True
        self.disconnect_reason: str = "closed"
        self.will_allowed = True
        self.peer: tuple[str, int] = _peer(transport)
        self.connected_at = 0.0
        self.created_at = time.time()
        self.last_recv = time.monotonic()
        self.timer: Any = broker.loop.call_later(settings.connect_timeout, self._connect_timeout)
        broker.connections.add(self)
        # statistics (served by the API)
        self.recv_oct = self.recv_cnt = self.recv_pkt = self.recv_msg = 0
        self.send_oct = self.send_cnt = self.send_pkt = self.send_msg = 0

    # --- transport callbacks --------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self.closing:
            return
        self.recv_oct += len(data)
        self.recv_cnt += 1
        self.last_recv = time.monotonic()
        metrics = self.broker.metrics
        metrics["bytes.received"] += len(data)
        error: MQTTError | None = None
        try:
            packets = self.decoder.feed(data)
        except MQTTError as exc:
            packets = getattr(exc, "packets", None) or []
            error = exc
        if packets:
            self.recv_pkt += len(packets)
            metrics["packets.received"] += len(packets)
            handlers = _HANDLERS
            connected = self.connected
            for packet in packets:
                if self.closing:
                    return
                if not connected and packet.type != CONNECT:
                    if self.held_packets is not None:  # the CONNECT waits for the restore
                        self.held_packets.append(packet)
                        continue
                    return self._protocol_error(rc.PROTOCOL_ERROR, "packet before CONNECT")
                metrics[_RECV_KEYS[packet.type]] += 1
                handlers[packet.type](self, packet)
                connected = self.connected
        if error is not None and not self.closing:
            self._on_decode_error(error, data)

    def pause_writing(self) -> None:
        self.broker.flow.pause_writing(self)

    def resume_writing(self) -> None:
        self.broker.flow.resume_writing(self)

    def connection_lost(self, exc: Exception | None) -> None:
        if exc is not None and self.disconnect_reason == "closed":
            self.disconnect_reason = f"connection lost: {exc}"
        self.closing = True
        self.out.clear()
        self.held.clear()
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.broker.client_closed(self)

    # --- writing --------------------------------------------------------

    def write(self, data: bytes) -> None:
        """Queue bytes for the end-of-iteration flush, or flush now once a burst is large.

        The early flush matters under overload: the event loop may feed megabytes of
        input before the iteration ends, and only a real ``transport.write`` lets the
        socket report back-pressure (``pause_writing``) in time to pause publishers.
        """
        out = self.out
        if not out:
            self.broker.mark_dirty(self)
        out.append(data)
        self.out_size += len(data)
        if self.out_size >= _FLUSH_AT:
            self.flush()

    def flush(self) -> None:
        out = self.out
        if not out or self.closing:
            out.clear()
            self.out_size = 0
            return
        data = out[0] if len(out) == 1 else b"".join(out)
        out.clear()
        self.out_size = 0
        self.send_oct += len(data)
        self.send_cnt += 1
        self.broker.metrics["bytes.sent"] += len(data)
        self.transport.write(data)

    def send_packet(self, packet: Packet) -> None:
        metrics = self.broker.metrics
        metrics["packets.sent"] += 1
        metrics[_SENT_KEYS[packet.type]] += 1
        self.send_pkt += 1
        self.write(encode(packet, self.version))

    def _send_ack(self, ptype: int, pid: int, reason: int, durable: bool = False) -> None:
        """PUBACK / PUBREC / PUBREL / PUBCOMP without properties, built directly (the QoS 1/2
        hot path); ``durable``: it confirms store writes just made."""
        metrics = self.broker.metrics
        metrics["packets.sent"] += 1
        metrics[_SENT_KEYS[ptype]] += 1
        self.send_pkt += 1
        first = ptype << 4 | 2 if ptype == PUBREL else ptype << 4
        if reason and self.version == MQTT5:
            data = bytes((first, 3, pid >> 8, pid & 0xFF, reason))
        else:
            data = bytes((first, 2, pid >> 8, pid & 0xFF))
        if durable or self.held:
            self._ack(data, durable)
        else:
            self.write(data)

    def _ack(self, data: bytes, durable: bool) -> None:
        """Write an acknowledgement now, or hold it (in order) until the store has
        committed what it confirms."""
        held = self.held
        if durable and self.broker.ack_on_commit:
            batch = self.broker.hold_batch()
            if not held:
                self.broker.hold_acks(self)
                held.append([batch, data])
            elif held[-1][0] == batch:
                held[-1].append(data)
            else:
                held.append([batch, data])
        elif held:
            held[-1].append(data)
        else:
            self.write(data)

    def release_acks(self, batch: int) -> bool:
        """Store batch ``batch`` committed: send what waited for it. True while more wait."""
        held = self.held
        if self.closing:
            held.clear()
            return False
        while held and held[0][0] <= batch:
            group = held.pop(0)
            for i in range(1, len(group)):
                self.write(group[i])
        return bool(held)

    def send_message(
        self,
        msg: Message,
        qos: int,
        retain: bool,
        sub_ids: tuple[int, ...] | None,
        pid: int,
        dup: bool,
    ) -> bool:
        """Write one PUBLISH of ``msg``; False when it is not sent (expired, or too large)."""
        version = self.version
        left: int | None = None
        if msg.expiry_at:
            now = time.monotonic()
            if msg.expired(now):
                metrics = self.broker.metrics
                metrics["delivery.dropped.expired"] += 1
                metrics["delivery.dropped"] += 1
                return False
            left = msg.remaining_expiry(now)
        if self.aliases_out is not None:
            data, offset = self._encode_aliased(msg, qos, retain, sub_ids, left)
        else:
            key = (version, qos, retain, sub_ids, left)
            cache = msg.cache
            if cache is None:
                cache = msg.cache = {}
            entry = cache.get(key)
            if entry is None:
                if len(cache) >= _CACHE_VARIANTS:
                    # Remaining expiry and subscription ids make new variants over time.
                    cache.clear()
                entry = cache[key] = _encode_template(msg, version, qos, retain, sub_ids, left)
            data, offset = entry
        if self.max_packet_out and len(data) > self.max_packet_out:
            metrics = self.broker.metrics
            metrics["delivery.dropped.too_large"] += 1
            metrics["delivery.dropped"] += 1
            return False
        if qos:
            buf = bytearray(data)
            buf[offset] = pid >> 8
            buf[offset + 1] = pid & 0xFF
            if dup:
                buf[0] |= 0x08
            data = bytes(buf)
            session = self.session
            if qos == 2 and self.broker.ack_on_commit and session and session.expiry_interval:
                self._ack(data, True)  # see Session._send_exactly_once
            elif self.held:
                self._ack(data, False)  # QoS 1/2 packets leave in order
            else:
                self.write(data)
        else:
            self.write(data)
        self.send_pkt += 1
        self.send_msg += 1
        metrics = self.broker.metrics
        metrics["packets.sent"] += 1
        metrics["packets.publish.sent"] += 1
        metrics["messages.sent"] += 1
        metrics["messages.delivered"] += 1
        metrics[_QOS_SENT[qos]] += 1
        return True

    def _encode_aliased(
        self,
        msg: Message,
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
        return data, _pid_offset(data, qos)

    def send_pubrel(self, pid: int) -> None:
        """A resent PUBREL (session resume): in order behind held packets."""
        self._send_ack(PUBREL, pid, 0)

    def send_disconnect(self, reason: int, text: str = "") -> None:
        """MQTT 5: tell the client why we close (code and reason string); MQTT 3 has no
        server DISCONNECT."""
        if self.version == MQTT5 and self.connected:
            self.send_packet(Disconnect(reason, self._reason_string(text)))

    def _reason_string(self, text: str) -> dict[str, Any] | None:
        """The reason string property, unless it could break the client's maximum packet size."""
        if not text or (self.max_packet_out and len(text) + 16 > self.max_packet_out):
            return None
        return {"reason_string": text}

    def close(self, reason: str = "closed") -> None:
        """Flush what is queued and close the connection gracefully.

        The sending side is shut (TCP: ``write_eof``; TLS and WebSocket: their own
        closing handshake in ``transport.close``) and what the peer still sends is
        read and ignored until it closes too, or for ``_LINGER`` seconds. Closing
        over unread input would make the kernel reset the connection, and a peer
        still writing would then lose the DISCONNECT or CONNACK it has not read.
        """
        if self.closing:
            return
        self.disconnect_reason = reason
        self.closing = True
        if self.timer is not None:
            self.timer.cancel()
        transport = self.transport
        if self.out:
            data = b"".join(self.out)
            self.out.clear()
            self.out_size = 0
            transport.write(data)
        if self.read_paused:
            self.read_paused = False
            transport.resume_reading()
        if transport.is_closing():
            self.timer = None
        else:
            if transport.can_write_eof():
                transport.write_eof()
            else:
                transport.close()
            self.timer = self.broker.loop.call_later(_LINGER, transport.abort)
        self.broker.client_closed(self)

    def connection_info(self) -> dict[str, Any]:
        """What an offline session keeps of this connection (shown by the API)."""
        return {
            "ip_address": self.peer[0],
            "port": self.peer[1],
            "proto_name": self.proto_name,
            "proto_ver": self.version,
            "keepalive": self.keepalive,
            "connected_at": self.connected_at,
            "clean_start": self.clean_start,
            "zone": self.zone,
        }

    def kick(self, reason_code: int, reason: str) -> None:
        self.send_disconnect(reason_code, reason)
        self.close(reason)

    # --- errors and timers ----------------------------------------------

    def _connect_timeout(self) -> None:
        self.timer = None
        if not self.connected and not self.closing:
            log.info("%s:%s sent no CONNECT in time; closing", *self.peer)
            self.close("connect timeout")

    def _keepalive_check(self) -> None:
        self.timer = None
        if self.closing:
            return
        limit = self.keepalive * 1.5
        idle = time.monotonic() - self.last_recv
        if idle >= limit:
            log.info("client %s keep alive timeout", self.client_id)
            self.will_allowed = True
            self.kick(rc.KEEP_ALIVE_TIMEOUT, "keepalive timeout")
            return
        self.timer = self.broker.loop.call_later(limit - idle, self._keepalive_check)

    def _on_decode_error(self, error: MQTTError, data: bytes = b"") -> None:
        if not self.connected:
            if isinstance(error, UnsupportedProtocolVersion):
                level = getattr(error, "protocol_version", 4)
                if level == MQTT5:
                    self.version = MQTT5
                    self._send_connack_error(rc.UNSUPPORTED_PROTOCOL_VERSION)
                else:
                    self.version = 4
                    self._send_connack_error(rc.UNSUPPORTED_PROTOCOL_VERSION)
                log.info("%s:%s unsupported protocol: %s", *self.peer, error)
                self.close("unsupported protocol version")
                return
            if self.decoder.version == MQTT5 or _is_v5_connect(data):
                self.version = MQTT5
                self._send_connack_error(error.reason_code, str(error))
            log.info("%s:%s malformed CONNECT: %s", *self.peer, error)
            self.close(f"malformed: {error}")
            return
        self._protocol_error(error.reason_code, str(error))

    def _protocol_error(self, reason_code: int, text: str) -> None:
        log.info("client %s protocol error: %s", self.client_id or self.peer, text)
        self.will_allowed = True
        self.kick(reason_code, f"protocol error: {text}")

    def _send_connack_error(self, reason_code: int, text: str = "") -> None:
        metrics = self.broker.metrics
        metrics["client.connack"] += 1
        metrics["packets.connack.error"] += 1  # EMQX: every CONNACK with a failure code
        if self.version == MQTT5:
            self.send_packet(Connack(False, reason_code, self._reason_string(text)))
        else:
            self.send_packet(Connack(False, rc.v3_connack_code(reason_code)))

    # --- CONNECT ----------------------------------------------------------

    def resume_connect(self, packet: Packet) -> None:
        """The restore is done: handle the CONNECT that waited, then what came after it."""
        held = self.held_packets or []
        self.held_packets = None
        if self.closing:
            return
        self._on_connect(packet)
        metrics = self.broker.metrics
        for p in held:
            if self.closing or not self.connected:
                return
            metrics[_RECV_KEYS[p.type]] += 1
            _HANDLERS[p.type](self, p)
        if not self.closing:
            self.transport.resume_reading()

    def _on_connect(self, packet: Packet) -> None:
        assert isinstance(packet, Connect)
        broker = self.broker
        if broker.restoring and broker.defer_connect(
            self, packet, packet.client_id if self.cert_clientid is None else self.cert_clientid
        ):
            return
        settings = broker.settings
        metrics = broker.metrics
        metrics["client.connect"] += 1
        self.version = version = packet.protocol_version
        self.proto_name = packet.protocol_name
        self.clean_start = packet.clean_start
        self.username = packet.username if self.cert_username is None else self.cert_username
        props = packet.properties
        client_id = packet.client_id if self.cert_clientid is None else self.cert_clientid
        assigned = False
        if not client_id:
            if version == MQTT31 or (version == 4 and not packet.clean_start):
                return self._refuse(rc.CLIENT_IDENTIFIER_NOT_VALID, "empty client id")
            client_id = "ferrymq-" + uuid.uuid4().hex
            assigned = True
        elif len(client_id) > settings.max_clientid_len or (
            version == MQTT31 and len(client_id) > 23
        ):
            return self._refuse(rc.CLIENT_IDENTIFIER_NOT_VALID, "client id too long")
        self.client_id = client_id
        if version == MQTT5 and props.get("authentication_method") is not None:
            return self._refuse(rc.BAD_AUTHENTICATION_METHOD, "no enhanced authentication")
        banned = broker.banned
        if banned and banned.check(client_id, self.username, peer_host(self.peer[0])):
            return self._refuse(rc.BANNED, "banned")
        if (
            settings.max_connections
            and broker.online_count() >= settings.max_connections
            and client_id not in broker.clients  # a takeover adds no connection
        ):
            return self._refuse(rc.QUOTA_EXCEEDED, "too many connections")
        will = packet.will
        if will is not None:
            try:
                validate_topic_name(
                    will.topic, settings.max_topic_levels, settings.max_topic_length
                )
            except TopicError:
                return self._refuse(rc.TOPIC_NAME_INVALID, "invalid will topic")
            if will.qos > settings.max_qos:
                return self._refuse(rc.QOS_NOT_SUPPORTED, "will QoS not supported")
            if will.retain and not settings.retain_available:
                return self._refuse(rc.RETAIN_NOT_SUPPORTED, "retain not supported")
        reason = broker.authenticate(client_id, self.username, packet.password)
        if reason:
            metrics["packets.connack.auth_error"] += 1
            return self._refuse(reason, "not authorised")
        # accepted: negotiate limits
        if version == MQTT5:
            self.send_window = min(settings.max_inflight, props.get("receive_maximum", 65535))
            self.max_packet_out = props.get("maximum_packet_size", 0)
            self.alias_max_out = min(props.get("topic_alias_maximum", 0), 65535)
            if self.alias_max_out:
                self.aliases_out = {}
            self.alias_max_in = settings.topic_alias_maximum
            self.request_problem_info = bool(props.get("request_problem_information", 1))
            expiry = props.get("session_expiry_interval", 0)
            if (
                settings.max_session_expiry_interval
                and expiry > settings.max_session_expiry_interval
            ):
                expiry = settings.max_session_expiry_interval
        else:
            expiry = 0 if packet.clean_start else settings.session_expiry_interval
        keepalive = packet.keepalive
        server_keepalive = None
        if version == MQTT5:
            if settings.server_keepalive:
                server_keepalive = settings.server_keepalive
            elif keepalive > settings.max_keepalive:
                server_keepalive = settings.max_keepalive
            if server_keepalive is not None:
                keepalive = server_keepalive
        self.keepalive = keepalive
        session, present = broker.open_session(self, packet.clean_start, expiry, will)
        self.connected = True
        self.connected_at = time.time()
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if keepalive:
            self.timer = broker.loop.call_later(keepalive * 1.5, self._keepalive_check)
        ack_props: dict[str, Any] = {}
        if version == MQTT5:
            if expiry != props.get("session_expiry_interval", 0):
                ack_props["session_expiry_interval"] = expiry
            ack_props["receive_maximum"] = settings.max_awaiting_rel
            if settings.max_qos < 2:
                ack_props["maximum_qos"] = settings.max_qos
            if not settings.retain_available:
                ack_props["retain_available"] = 0
            ack_props["maximum_packet_size"] = settings.max_packet_size
            if assigned:
                ack_props["assigned_client_identifier"] = client_id
            ack_props["topic_alias_maximum"] = settings.topic_alias_maximum
            ack_props["wildcard_subscription_available"] = int(settings.wildcard_subscription)
            ack_props["subscription_identifier_available"] = 1
            ack_props["shared_subscription_available"] = int(settings.shared_subscription)
            if server_keepalive is not None:
                ack_props["server_keep_alive"] = server_keepalive
        metrics["client.connack"] += 1
        metrics["client.connected"] += 1
        self.send_packet(Connack(present, rc.SUCCESS, ack_props))
        log.info(
            "client %s connected from %s:%s (%s v%d, clean_start=%s, keepalive=%d)",
            client_id,
            *self.peer,
            self.proto_name,
            version,
            packet.clean_start,
            keepalive,
        )
        if present:
            session.resend_inflight()
            session.drain()

    def _refuse(self, reason: int, text: str) -> None:
        log.info("client %s from %s:%s refused: %s", self.client_id, *self.peer, text)
        self._send_connack_error(reason, text)
        self.will_allowed = False
        self.close(f"refused: {text}")

    # --- PUBLISH ----------------------------------------------------------

    def _on_publish(self, packet: Packet) -> None:
        assert isinstance(packet, Publish)
        self.recv_msg += 1
        broker = self.broker
        metrics = broker.metrics
        qos = packet.qos
        topic = packet.topic
        props = packet.properties
        forwarded: dict[str, Any] | None = None
        expiry_at = 0.0
        if props:
            if "subscription_identifier" in props:
                return self._protocol_error(rc.PROTOCOL_ERROR, "subscription identifier in PUBLISH")
            alias = props.get("topic_alias")
            if alias is not None:
                if alias > self.alias_max_in:
                    return self._protocol_error(rc.TOPIC_ALIAS_INVALID, "topic alias out of range")
                if topic:
                    self.aliases_in[alias] = topic
                else:
                    found = self.aliases_in.get(alias)
                    if found is None:
                        return self._protocol_error(rc.PROTOCOL_ERROR, "unknown topic alias")
                    topic = found
            for name in _FORWARDED:
                if name in props:
                    if forwarded is None:
                        forwarded = {}
                    forwarded[name] = props[name]
            interval = props.get("message_expiry_interval")
            if interval is not None:
                expiry_at = time.monotonic() + interval
            if props.get("payload_format_indicator") == 1:
                try:
                    packet.payload.decode("utf-8")
                except UnicodeDecodeError:
                    return self._publish_refused(
                        packet, rc.PAYLOAD_FORMAT_INVALID, "payload is not valid UTF-8"
                    )
        if not topic:
            metrics["packets.publish.error"] += 1
            return self._protocol_error(rc.PROTOCOL_ERROR, "empty topic without a topic alias")
        if "+" in topic or "#" in topic:
            metrics["packets.publish.error"] += 1
            return self._protocol_error(rc.TOPIC_NAME_INVALID, "invalid topic name")
        settings = broker.settings
        if len(topic) > settings.max_topic_length or topic.count("/") >= settings.max_topic_levels:
            metrics["packets.publish.error"] += 1
            return self._protocol_error(rc.TOPIC_NAME_INVALID, "topic name exceeds limits")
        if qos > settings.max_qos:
            return self._protocol_error(rc.QOS_NOT_SUPPORTED, "QoS not supported")
        if packet.retain and not settings.retain_available:
            return self._protocol_error(rc.RETAIN_NOT_SUPPORTED, "retain not supported")
        session = self.session
        assert session is not None
        if qos == 2:
            pid = packet.packet_id
            if pid in session.awaiting_rel:
                # A resent QoS 2 PUBLISH: acknowledge again, never route twice.
                metrics["packets.publish.inuse"] += 1
                self._send_ack(PUBREC, pid, 0)
                return
            if len(session.awaiting_rel) >= settings.max_awaiting_rel:
                metrics["packets.publish.dropped"] += 1
                return self._protocol_error(rc.RECEIVE_MAXIMUM_EXCEEDED, "too many QoS 2 in flight")
        if not broker.acl_publish(self, topic):
            metrics["packets.publish.auth_error"] += 1
            return self._publish_refused(packet, rc.NOT_AUTHORIZED, "not authorized")
        msg = Message(
            topic, packet.payload, qos, packet.retain, forwarded, self.client_id, expiry_at
        )
        if qos == 0:
            broker.publish(msg, self)
            return
        writes = broker.durable_writes
        if qos == 1:
            matched = broker.publish(msg, self)
            ptype = PUBACK
        else:
            matched = broker.publish_exactly_once(msg, self, packet.packet_id)
            ptype = PUBREC
        self._send_ack(
            ptype,
            packet.packet_id,
            rc.SUCCESS if matched else rc.NO_MATCHING_SUBSCRIBERS,
            broker.durable_writes != writes,
        )

    def _publish_refused(self, packet: Publish, reason: int, text: str) -> None:
        """Drop a PUBLISH; acknowledge it so the client's flow completes."""
        metrics = self.broker.metrics
        metrics["messages.dropped"] += 1
        if packet.qos == 0:
            return
        props = None
        if self.version != MQTT5:
            reason = rc.SUCCESS
        elif self.request_problem_info:
            props = self._reason_string(text)
        if packet.qos == 1:
            ack: Packet = Puback(packet.packet_id, reason, props)
        else:
            if reason == rc.SUCCESS and self.session is not None:
                self.session.awaiting_rel[packet.packet_id] = time.monotonic()
            ack = Pubrec(packet.packet_id, reason, props)
        metrics["packets.sent"] += 1
        metrics[_SENT_KEYS[ack.type]] += 1
        self.send_pkt += 1
        self._ack(encode(ack, self.version), False)

    def _on_puback(self, packet: Packet) -> None:
        assert isinstance(packet, Puback)
        session = self.session
        assert session is not None
        if not session.acked(packet.packet_id, 1):
            self.broker.metrics["packets.puback.missed"] += 1

    def _on_pubrec(self, packet: Packet) -> None:
        assert isinstance(packet, Pubrec)
        session = self.session
        assert session is not None
        pid = packet.packet_id
        if self.version == MQTT5 and packet.reason_code >= 0x80:
            session.discard_inflight(pid)
            return
        writes = self.broker.durable_writes
        if session.received(pid):
            # The "PUBREL sent" state is durable before the PUBREL leaves: after a
            # crash the session resends PUBREL, never the PUBLISH (MQTT 4.3.3).
            self._send_ack(PUBREL, pid, 0, self.broker.durable_writes != writes)
        else:
            self.broker.metrics["packets.pubrec.missed"] += 1
            self._send_ack(PUBREL, pid, rc.PACKET_IDENTIFIER_NOT_FOUND)

    def _on_pubrel(self, packet: Packet) -> None:
        assert isinstance(packet, Pubrel)
        session = self.session
        assert session is not None
        pid = packet.packet_id
        broker = self.broker
        if session.awaiting_rel.pop(pid, None) is None:
            broker.metrics["packets.pubrel.missed"] += 1
            self._send_ack(PUBCOMP, pid, rc.PACKET_IDENTIFIER_NOT_FOUND)
        elif session.expiry_interval:
            # The id is free again only once its removal is durable: a new PUBLISH
            # reusing it after a crash must not look like a resend.
            broker.store_awaiting_rel(session, pid, False)
            self._send_ack(PUBCOMP, pid, 0, True)
        else:
            self._send_ack(PUBCOMP, pid, 0)

    def _on_pubcomp(self, packet: Packet) -> None:
        assert isinstance(packet, Pubcomp)
        session = self.session
        assert session is not None
        if not session.acked(packet.packet_id, 2):
            self.broker.metrics["packets.pubcomp.missed"] += 1

    # --- SUBSCRIBE / UNSUBSCRIBE -------------------------------------------

    def _on_subscribe(self, packet: Packet) -> None:
        assert isinstance(packet, Subscribe)
        session = self.session
        assert session is not None
        sub_id = packet.properties.get("subscription_identifier")
        if self.version == MQTT5:
            for opt in packet.subscriptions:
                if opt.no_local and opt.topic_filter.startswith(("$share/", "$queue/")):
                    return self._protocol_error(
                        rc.PROTOCOL_ERROR, "no local on a shared subscription"
                    )
        codes, deliveries = self.broker.subscribe(session, packet.subscriptions, sub_id, self)
        self.send_packet(Suback(packet.packet_id, codes))
        for run in deliveries:
            run()

    def _on_unsubscribe(self, packet: Packet) -> None:
        assert isinstance(packet, Unsubscribe)
        session = self.session
        assert session is not None
        codes = self.broker.unsubscribe(session, packet.topic_filters)
        self.send_packet(Unsuback(packet.packet_id, codes if self.version == MQTT5 else None))

    # --- the rest ------------------------------------------------------------

    def _on_pingreq(self, packet: Packet) -> None:
        metrics = self.broker.metrics
        metrics["packets.sent"] += 1
        metrics["packets.pingresp.sent"] += 1
        self.send_pkt += 1
        self.write(_PINGRESP_BYTES)

    def _on_disconnect(self, packet: Packet) -> None:
        assert isinstance(packet, Disconnect)
        session = self.session
        assert session is not None
        if self.version == MQTT5:
            expiry = packet.properties.get("session_expiry_interval")
            if expiry is not None:
                if session.expiry_interval == 0 and expiry != 0:
                    return self._protocol_error(rc.PROTOCOL_ERROR, "session expiry raised from 0")
                self.broker.set_session_expiry(session, expiry)
            self.will_allowed = packet.reason_code == rc.DISCONNECT_WITH_WILL
        else:
            self.will_allowed = False
        self.close(
            "client disconnect"
            if packet.reason_code == 0
            else f"client disconnect 0x{packet.reason_code:02x}"
        )

    def _on_auth(self, packet: Packet) -> None:
        # No enhanced authentication method is offered, so CONNECT with one was
        # refused (0x8C) and any AUTH afterwards breaks the protocol.
        self._protocol_error(rc.PROTOCOL_ERROR, "AUTH without an authentication method")


# Packet type -> handler; one table for every connection.
_HANDLERS = {
    CONNECT: Client._on_connect,
    PUBLISH: Client._on_publish,
    PUBACK: Client._on_puback,
    PUBREC: Client._on_pubrec,
    PUBREL: Client._on_pubrel,
    PUBCOMP: Client._on_pubcomp,
    SUBSCRIBE: Client._on_subscribe,
    UNSUBSCRIBE: Client._on_unsubscribe,
    PINGREQ: Client._on_pingreq,
    DISCONNECT: Client._on_disconnect,
    AUTH: Client._on_auth,
}


def _peer(transport: Any) -> tuple[str, int]:
    try:
        peer = transport.get_extra_info("peername")
    except Exception:
        peer = None
    if isinstance(peer, tuple) and len(peer) >= 2:
        return str(peer[0]), int(peer[1])
    return ("", 0)


def _is_v5_connect(data: bytes) -> bool:
    """Whether ``data`` starts a v5 CONNECT: a malformed one still gets a v5 CONNACK."""
    if len(data) < 2 or data[0] != 0x10:
        return False
    i = 1
    while i < 4 and data[i] & 0x80 and i + 1 < len(data):
        i += 1
    return data[i + 1 : i + 8] == b"\x00\x04MQTT\x05"


def _props_for(msg: Message, sub_ids: tuple[int, ...] | None, left: int | None) -> dict[str, Any]:
    props: dict[str, Any] = dict(msg.properties) if msg.properties else {}
    if left is not None:
        props["message_expiry_interval"] = left
    if sub_ids:
        props["subscription_identifier"] = list(sub_ids)
    return props


def _pid_offset(data: bytes, qos: int) -> int:
    """Offset of the packet id in an encoded PUBLISH (after header, length and topic);
    0 for QoS 0, which has none."""
    if not qos:
        return 0
    i = 2
    while data[i - 1] & 0x80:
        i += 1
    return i + 2 + (data[i] << 8 | data[i + 1])


def _encode_template(
    msg: Message,
    version: int,
    qos: int,
    retain: bool,
    sub_ids: tuple[int, ...] | None,
    left: int | None,
) -> tuple[bytes, int]:
    props = _props_for(msg, sub_ids, left) if version == MQTT5 else None
    data = encode_publish(
        msg.topic, msg.payload, qos, retain, False, 1 if qos else 0, props, version
    )
    return data, _pid_offset(data, qos)


_QOS_SENT = ("messages.qos0.sent", "messages.qos1.sent", "messages.qos2.sent")
