"""One MQTT network connection: the glue between a transport, the protocol machine and the broker.

The MQTT rules of a connection (CONNECT first and its negotiation, keep
alive, topic aliases, PUBLISH validation, inbound QoS 2, the v3/v5
differences, which reason code to send) live in the sans-I/O
``ferrymq.mqtt.connection.ServerConnection``. A Client feeds it bytes and the
time, hands the broker the packets it lets through, writes the bytes it
returns, and waits for the machine's ``deadline`` in the broker's shared
deadline slots (``core/deadlines.py``: no event-loop timer per connection).

A Client is transport-agnostic: it is handed anything with the asyncio
transport methods (``core.interfaces.Transport``) and is fed bytes by the
listener's protocol object (``data_received``), which also forwards
``pause_writing`` / ``resume_writing`` and ``connection_lost``. TCP, TLS and
WebSocket listeners share it.

Rules kept here:
- the broker's part of CONNECT (restore, ban list, connection limit,
  authentication, opening the session) decides between the machine's
  ``negotiate`` and ``accept``;
- a violation closes this connection only, after the bytes the machine
  chose (MQTT 5: CONNACK or DISCONNECT with the reason code);
- outgoing packets are collected and written once per event-loop iteration
  (``Broker.mark_dirty``), or once per read while the broker keeps up
  (``Flow.write_at_once``), never one syscall per packet;
- when the socket backs up (``pause_writing``) deliveries wait in the session
  queue; publishers that feed this client are paused only while the broker is
  saturated (core/flow.py);
- acknowledgements (PUBACK, PUBREC, PUBREL, PUBCOMP) leave in the order they
  were made; one confirming durable state waits for the store batch holding it
  (``durability = "acked"``), and those made after it wait with it;
- metrics and logs are counted and written here, never in the machine.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import TYPE_CHECKING, Any, Final

from ferrymq.core.banned import peer_host
from ferrymq.core.broker import Broker
from ferrymq.core.flow import INPUT_BACKLOG
from ferrymq.core.metrics import RECEIVED_KEYS as _RECV_KEYS
from ferrymq.core.metrics import SENT_KEYS as _SENT_KEYS
from ferrymq.model.message import Message
from ferrymq.mqtt import reason_codes as rc
from ferrymq.mqtt.connection import (
    AWAIT_CONNECT,
    CONNECTED,
    ProtocolViolation,
    Reply,
    ServerConnection,
)
from ferrymq.mqtt.packets import (
    CONNACK,
    PUBACK,
    PUBCOMP,
    PUBREC,
    PUBREL,
    SUBACK,
    UNSUBACK,
    Connect,
    Disconnect,
    Packet,
    Puback,
    Pubcomp,
    Publish,
    Pubrec,
    Pubrel,
    Subscribe,
    Unsubscribe,
)

if TYPE_CHECKING:
    from collections.abc import Callable

    from ferrymq.core.deadlines import Slot
    from ferrymq.core.flow import Holder
    from ferrymq.core.interfaces import Transport
    from ferrymq.core.session import Session

log = logging.getLogger("ferrymq.client")

_NOBODY: frozenset[Holder] = frozenset()
_INF = float("inf")
# The one boxed 0.0 that messages without an expiry share: in compiled code a float constant
# is unboxed and boxed anew wherever it becomes an object (24 bytes a message).
_NEVER: Final[Any] = float(0)

# Bytes collected for one connection before they are written without waiting for
# the end of the event-loop iteration.
_FLUSH_AT = 65536
# Seconds a closed connection waits for the peer to close its side before it is aborted.
_LINGER = 2.0
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
        "conn",
        "metrics",
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
        "disconnect_reason",
        "will_allowed",
        "peer",
        "connected_at",
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
        self,
        broker: Broker,
        transport: Transport,
        listener: str = "tcp:default",
        zone: str = "default",
    ) -> None:
        self.broker = broker
        self.transport = transport
        self.listener = listener
        self.zone = zone
        settings = broker.settings
        now = time.monotonic()
        self.conn = ServerConnection(settings, now)
        # The broker's dict as written (``Broker.counters``), one lookup less per message.
        self.metrics = broker.counters
        # Negotiated values the broker, the session and the API read, copied from the
        # machine once the CONNECT is accepted.
        self.version = 4
        self.send_window = settings.max_inflight
        self.keepalive = 0
        self.session: Session | None = None
        self.client_id = ""
        self.username: str | None = None
        # Set by a TLS listener (peer_cert_as_username / _clientid): override CONNECT.
        self.cert_username: str | None = None
        self.cert_clientid: str | None = None
        self.proto_name = "MQTT"
        self.clean_start = True
        self.connected = False
        self.closing = False
        self.write_paused = False
        self.read_paused = False
        self.slow = False  # stopped pausing publishers after stalling too long
        # Publishers paused because of this client, subscribers this client waits for:
        # shared empty stand-ins until flow control first pauses someone (core/flow.py).
        self.blocked: list[Client] | tuple[()] = ()
        self.paused_by: set[Holder] | frozenset[Holder] = _NOBODY
        self.paused_since = 0.0
        self.out: list[bytes] = []
        self.out_size = 0
        # Acknowledgements waiting for a store commit: [batch, bytes, bytes ...] in order.
        # (a shared empty tuple until the first one waits)
        self.held: list[list[Any]] | tuple[()] = ()
        self.disconnect_reason: str = "closed"
        self.will_allowed = True
        self.peer: tuple[str, int] = _peer(transport)
        self.connected_at = 0.0
        # The slot of broker.deadlines this connection waits in (None: none).
        self.timer: Slot | None = broker.deadlines.add(self, self.conn.deadline)
        broker.connections[self] = None
        # statistics (served by the API)
        self.recv_oct = self.recv_cnt = self.recv_pkt = self.recv_msg = 0
        self.send_oct = self.send_cnt = self.send_pkt = self.send_msg = 0

    # --- transport callbacks --------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self.closing:
            return
        size = len(data)
        self.recv_oct += size
        self.recv_cnt += 1
        broker = self.broker
        broker.held_bytes_received += size  # Broker.add_held
        broker.read_at = time.time()
        count = self.conn.receive(data, time.monotonic())
        if count:
            self.recv_pkt += count
            broker.held_packets_received += count
            if count >= INPUT_BACKLOG:
                broker.flow.bound_input(self)
        flow = broker.flow
        if not flow.write_at_once:
            self._handle_packets()
            return
        flow.in_read_flush = True
        try:
            self._handle_packets()
        finally:
            flow.in_read_flush = False
            flow.flush()

    def _handle_packets(self) -> None:
        """The machine hands each packet it lets through to its handler below; the
        broker holds the message path's counts until its metrics are read
        (``Broker.in_read``, ``Broker.add_held``)."""
        broker = self.broker
        outer = broker.in_read  # a publisher resumed from within another client's read
        broker.in_read = True
        try:
            self.conn.dispatch(_HANDLERS, self)
        except ProtocolViolation as exc:
            if not self.closing:
                self._violation(exc)
        finally:
            if not outer:
                broker.in_read = False

    def resume_input(self) -> None:
        """Flow control let this publisher go on: route the rest of the read it held,
        then read again unless that held it once more."""
        if self.closing:
            return
        self.conn.on_hold = False
        self._handle_packets()
        if not self.closing and not self.read_paused:
            self.transport.resume_reading()

    def pause_writing(self) -> None:
        self.broker.flow.pause_writing(self)

    def resume_writing(self) -> None:
        self.broker.flow.resume_writing(self)

    def connection_lost(self, exc: Exception | None) -> None:
        if exc is not None and self.disconnect_reason == "closed":
            self.disconnect_reason = f"connection lost: {exc}"
        self.closing = True
        self.conn.close()
        self.out.clear()
        self.held = ()
        self._unschedule()
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
        self.broker.held_bytes_sent += len(data)
        self.transport.write(data)

    def _send(self, ptype: int, data: bytes) -> None:
        """Count and queue one packet the machine encoded."""
        self._count_sent(ptype)
        self.write(data)

    def _send_ack(self, ptype: int, pid: int, reason: int, durable: bool = False) -> None:
        """PUBACK / PUBREC / PUBREL / PUBCOMP without properties (the QoS 1/2 hot path);
        ``durable``: it confirms store writes just made."""
        self._count_sent(ptype)
        data = self.conn.ack(ptype, pid, reason)
        if durable or self.held:
            self._ack(data, durable)
        else:
            self.write(data)

    def _ack(self, data: bytes, durable: bool) -> None:
        """Write an acknowledgement now, or hold it (in order) until the store has
        committed what it confirms."""
        held = self.held
        if durable and self.broker.holds_acks:
            batch = self.broker.hold_batch()
            if batch:  # 0: what it confirms is safe already
                if not held:
                    self.broker.hold_acks(self)
                    self.held = [[batch, data]]
                elif held[-1][0] == batch:
                    held[-1].append(data)
                else:
                    held.append([batch, data])
                return
        if held:
            held[-1].append(data)
        else:
            self.write(data)

    def release_acks(self, batch: int) -> bool:
        """Store batch ``batch`` committed: send what waited for it. True while more wait."""
        held = self.held
        if self.closing:
            self.held = ()
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
        left: int | None = None
        if msg.expiry_at:
            now = time.monotonic()
            if msg.expired(now):
                metrics = self.metrics
                metrics["delivery.dropped.expired"] += 1
                metrics["delivery.dropped"] += 1
                return False
            left = msg.remaining_expiry(now)
        data = self.conn.publish_bytes(msg, qos, retain, sub_ids, pid, dup, left)
        if data is None:
            metrics = self.metrics
            metrics["delivery.dropped.too_large"] += 1
            metrics["delivery.dropped"] += 1
            return False
        if qos and (self.held or qos == 2):
            session = self.session
            if qos == 2 and self.broker.ack_on_commit and session and session.expiry_interval:
                self._ack(data, True)  # see Session._send_exactly_once
            elif self.held:
                self._ack(data, False)  # QoS 1/2 packets leave in order
            else:
                self.write(data)
        else:
            out = self.out
            size = self.out_size + len(data)
            if out and size < _FLUSH_AT:  # write() without its call: the fan-out hot path
                out.append(data)
                self.out_size = size
            else:
                self.write(data)
        self.send_pkt += 1
        self.send_msg += 1
        broker = self.broker
        broker.held_packets_sent += 1
        broker.held_publish_sent += 1
        if qos == 1:
            broker.held_qos1_sent += 1
        elif qos == 0:
            broker.held_qos0_sent += 1
        else:
            broker.held_qos2_sent += 1
        return True

    def send_pubrel(self, pid: int) -> None:
        """A resent PUBREL (session resume): in order behind held packets."""
        self._send_ack(PUBREL, pid, 0)

    def send_disconnect(self, reason: int, text: str = "") -> None:
        """Tell the client why we close (MQTT 5 only: code and reason string)."""
        data = self.conn.disconnect(reason, text)
        if data:
            self._send(data[0] >> 4, data)

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
        self.conn.close()
        self._unschedule()
        transport = self.transport
        if self.out:
            data = b"".join(self.out)
            self.out.clear()
            self.out_size = 0
            transport.write(data)
        if self.read_paused:
            self.read_paused = False
            transport.resume_reading()
        if not transport.is_closing():
            if transport.can_write_eof():
                transport.write_eof()
            else:
                transport.close()
            # Past the linger the deadline aborts the transport (see deadline_due).
            self.timer = self.broker.deadlines.add(self, time.monotonic() + _LINGER)
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

    # --- the timer and violations -----------------------------------------

    def _schedule(self) -> None:
        """Wait for the machine's deadline in the broker's shared slots (core/deadlines.py)."""
        self._unschedule()
        deadline = self.conn.deadline
        if deadline != _INF:
            self.timer = self.broker.deadlines.add(self, deadline)

    def _unschedule(self) -> None:
        if self.timer is not None:
            self.broker.deadlines.remove(self, self.timer)
            self.timer = None

    def deadline_due(self, slot: Slot) -> None:
        """``slot`` of the shared deadlines came: the machine's deadline, or the end of
        the linger of a closed connection."""
        if slot is not self.timer:
            return  # left that slot meanwhile
        self.timer = None
        if self.closing:
            self.transport.abort()
            return
        try:
            self.conn.timer_expired(time.monotonic())
        except ProtocolViolation as exc:
            self._violation(exc)
            return
        self._schedule()

    def _violation(self, exc: ProtocolViolation) -> None:
        """Send what the machine makes of ``exc``, log it and close."""
        metrics = self.metrics
        packet = exc.packet
        if packet is not None:
            metrics[_RECV_KEYS[packet.type]] += 1
            if isinstance(packet, Publish):
                self.recv_msg += 1
            if exc.refused:
                if exc.reason_code == rc.RECEIVE_MAXIMUM_EXCEEDED:
                    metrics["packets.publish.dropped"] += 1
                else:
                    metrics["packets.publish.error"] += 1
        conn = self.conn
        state = conn.state
        data = conn.violation(exc)
        if data:
            ptype = data[0] >> 4
            if ptype == CONNACK:
                metrics["client.connack"] += 1
                metrics["packets.connack.error"] += 1  # EMQX: every CONNACK with a failure code
            self._send(ptype, data)
        reason = exc.reason_code
        text = exc.text
        if state is CONNECTED:
            self.will_allowed = True  # the server closes: the will is due
            if reason == rc.KEEP_ALIVE_TIMEOUT:
                log.info("client %s keep alive timeout", self.client_id)
                return self.close(text)
            log.info("client %s protocol error: %s", self.client_id or self.peer, text)
            return self.close(f"protocol error: {text}")
        if reason == rc.MAXIMUM_CONNECT_TIME:
            log.info("%s:%s sent no CONNECT in time; closing", *self.peer)
            return self.close("connect timeout")
        if state is AWAIT_CONNECT:
            if reason == rc.UNSUPPORTED_PROTOCOL_VERSION:
                log.info("%s:%s unsupported protocol: %s", *self.peer, text)
                return self.close("unsupported protocol version")
            log.info("%s:%s malformed CONNECT: %s", *self.peer, text)
            return self.close(f"malformed: {text}")
        log.info("client %s from %s:%s refused: %s", conn.client_id, *self.peer, text)
        self.will_allowed = False
        self.close(f"refused: {text}")

    # --- CONNECT ----------------------------------------------------------

    def resume_connect(self, packet: Packet) -> None:
        """The restore is done: handle the CONNECT that waited, then what came after it."""
        if self.closing:
            return
        try:
            self._connect(packet)
        except ProtocolViolation as exc:
            self._violation(exc)
            return
        self._handle_packets()
        if not self.closing and not self.read_paused:
            self.transport.resume_reading()

    def _on_connect(self, packet: Packet) -> None:
        assert isinstance(packet, Connect)
        broker = self.broker
        self.metrics["packets.connect.received"] += 1
        if broker.restoring and broker.defer_connect(self, packet, self._requested_id(packet)):
            return
        self._connect(packet)

    def _requested_id(self, packet: Connect) -> str:
        return packet.client_id if self.cert_clientid is None else self.cert_clientid

    def _connect(self, packet: Packet) -> None:
        """The broker's part of CONNECT, between the machine's ``negotiate`` and ``accept``."""
        assert isinstance(packet, Connect)
        broker = self.broker
        settings = broker.settings
        metrics = self.metrics
        metrics["client.connect"] += 1
        conn = self.conn
        self.version = conn.version
        name = packet.protocol_name
        self.proto_name = _PROTO_NAMES.get(name, name)  # one shared string, not one each
        self.clean_start = packet.clean_start
        self.username = packet.username if self.cert_username is None else self.cert_username
        self.client_id = client_id = conn.negotiate(packet, self._requested_id(packet))
        banned = broker.banned
        if banned and banned.check(client_id, self.username, peer_host(self.peer[0])):
            raise ProtocolViolation(rc.BANNED, "banned")
        if (
            settings.max_connections
            and broker.online_count() >= settings.max_connections
            and client_id not in broker.clients  # a takeover adds no connection
        ):
            raise ProtocolViolation(rc.QUOTA_EXCEEDED, "too many connections")
        will = packet.will
        conn.check_will(will)
        reason = broker.authenticate(client_id, self.username, packet.password)
        if reason:
            metrics["packets.connack.auth_error"] += 1
            raise ProtocolViolation(reason, "not authorised")
        if broker.hold_connect(self, packet):
            return  # cluster mode: the session comes from another node first
        self._open(packet)

    def continue_connect(self, packet: Connect) -> None:
        """``Broker.hold_connect`` is done: open the session, then handle what followed."""
        if self.closing:
            return
        self._open(packet)
        self._handle_packets()
        if not self.closing and not self.read_paused:
            self.transport.resume_reading()

    def _open(self, packet: Connect) -> None:
        """The session opened, the CONNACK sent: the CONNECT is accepted."""
        broker = self.broker
        metrics = self.metrics
        conn = self.conn
        client_id = self.client_id
        session, present = broker.open_session(
            self, packet.clean_start, conn.session_expiry, packet.will
        )
        connack = conn.accept(present, session.awaiting_rel, time.monotonic())
        self.send_window = conn.send_window
        self.keepalive = conn.keepalive
        self.connected = True
        # A session made for this CONNECT was made just now: one float for both.
        self.connected_at = time.time() if present else session.created_at
        self._schedule()
        metrics["client.connack"] += 1
        metrics["client.connected"] += 1
        self._send(CONNACK, connack)
        log.info(
            "client %s connected from %s:%s (%s v%d, clean_start=%s, keepalive=%d)",
            client_id,
            *self.peer,
            self.proto_name,
            self.version,
            packet.clean_start,
            self.keepalive,
        )
        if present:
            session.resend_inflight()
            session.drain()

    # --- PUBLISH ----------------------------------------------------------

    def _on_publish(self, packet: Publish) -> None:
        """A PUBLISH the machine checked (topic alias resolved): route it and acknowledge."""
        self.recv_msg += 1
        broker = self.broker
        broker.held_publish_packets += 1  # added to metrics at the end of the read
        topic = packet.topic
        # Broker.method(broker, ...): a direct call, also on a cluster node (see Broker.publish).
        if not Broker.acl_publish(broker, self, topic):
            self.metrics["packets.publish.auth_error"] += 1
            return self._refuse_publish(
                packet,
                self.conn.refuse_publish(
                    packet, rc.NOT_AUTHORIZED, "not authorized", time.monotonic()
                ),
            )
        props = packet.properties
        forwarded: dict[str, Any] | None = None
        expiry_at: Any = _NEVER
        if props:
            for name in _FORWARDED:
                if name in props:
                    if forwarded is None:
                        forwarded = {}
                    forwarded[name] = props[name]
            interval = props.get("message_expiry_interval")
            if interval is not None:
                expiry_at = time.monotonic() + interval
        qos = packet.qos
        msg = Message(
            topic,
            packet.payload,
            qos,
            packet.retain,
            forwarded,
            self.client_id,
            expiry_at,
            broker.read_at,
        )
        if qos == 0:
            Broker.publish(broker, msg, self)
            return
        writes = broker.durable_writes
        if qos == 1:
            matched = Broker.publish(broker, msg, self)
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

    def _refuse_publish(self, packet: Publish, data: bytes) -> None:
        """Drop a PUBLISH; its acknowledgement (``data``, none for QoS 0) completes the
        client's flow, in order with the others."""
        self.metrics["messages.dropped"] += 1
        if data:
            self._count_sent(data[0] >> 4)
            self._ack(data, False)

    def _count_sent(self, ptype: int) -> None:
        broker = self.broker
        broker.held_packets_sent += 1
        if ptype == PUBACK:
            broker.held_puback_sent += 1
        else:
            self.metrics[_SENT_KEYS[ptype]] += 1
        self.send_pkt += 1

    def _on_reply(self, reply: Reply) -> None:
        """A packet the machine answered itself (PINGRESP, a resent QoS 2 PUBLISH, a
        refused payload); a ``Reply`` is not a ``Packet``, and compiled code checks that."""
        packet = reply.packet
        metrics = self.metrics
        metrics[_RECV_KEYS[packet.type]] += 1
        data = reply.data
        if isinstance(packet, Publish):
            self.recv_msg += 1
            if reply.dropped:
                return self._refuse_publish(packet, data)
            metrics["packets.publish.inuse"] += 1
            self._count_sent(data[0] >> 4)
            self._ack(data, False)
            return
        self._count_sent(data[0] >> 4)
        self.write(data)

    def _on_puback(self, packet: Puback) -> None:
        self.broker.held_puback_received += 1
        session = self.session
        assert session is not None
        if not session.acked(packet.packet_id, 1):
            self.metrics["packets.puback.missed"] += 1

    def _on_pubrec(self, packet: Pubrec) -> None:
        broker = self.broker
        self.metrics["packets.pubrec.received"] += 1
        session = self.session
        assert session is not None
        pid = packet.packet_id
        if packet.reason_code >= 0x80:  # only MQTT 5 has failure codes here
            session.discard_inflight(pid)
            return
        writes = broker.durable_writes
        if session.received(pid):
            # The "PUBREL sent" state is durable before the PUBREL leaves: after a
            # crash the session resends PUBREL, never the PUBLISH (MQTT 4.3.3).
            self._send_ack(PUBREL, pid, 0, broker.durable_writes != writes)
        else:
            self.metrics["packets.pubrec.missed"] += 1
            self._send_ack(PUBREL, pid, rc.PACKET_IDENTIFIER_NOT_FOUND)

    def _on_pubrel(self, packet: Pubrel) -> None:
        broker = self.broker
        self.metrics["packets.pubrel.received"] += 1
        session = self.session
        assert session is not None
        pid = packet.packet_id
        if not self.conn.release(pid):
            self.metrics["packets.pubrel.missed"] += 1
            self._send_ack(PUBCOMP, pid, rc.PACKET_IDENTIFIER_NOT_FOUND)
        elif session.expiry_interval:
            # The id is free again only once its removal is durable: a new PUBLISH
            # reusing it after a crash must not look like a resend.
            broker.store_awaiting_rel(session, pid, False)
            self._send_ack(PUBCOMP, pid, 0, True)
        else:
            self._send_ack(PUBCOMP, pid, 0)

    def _on_pubcomp(self, packet: Pubcomp) -> None:
        metrics = self.metrics
        metrics["packets.pubcomp.received"] += 1
        session = self.session
        assert session is not None
        if not session.acked(packet.packet_id, 2):
            metrics["packets.pubcomp.missed"] += 1

    # --- SUBSCRIBE / UNSUBSCRIBE -------------------------------------------

    def _on_subscribe(self, packet: Packet) -> None:
        assert isinstance(packet, Subscribe)
        self.metrics["packets.subscribe.received"] += 1
        session = self.session
        assert session is not None
        sub_id = packet.properties.get("subscription_identifier")
        broker = self.broker
        codes, deliveries = broker.subscribe(session, packet.subscriptions, sub_id, self)
        data = self.conn.suback(packet.packet_id, codes)
        if broker.after_routes(self, lambda: self._suback(data, deliveries)):
            return
        self._suback(data, deliveries)

    def _suback(self, data: bytes, deliveries: list[Callable[[], None]]) -> None:
        """Send a SUBACK, then the retained messages its subscriptions get."""
        if self.closing:
            return
        self._send(SUBACK, data)
        for run in deliveries:
            run()

    def _on_unsubscribe(self, packet: Packet) -> None:
        assert isinstance(packet, Unsubscribe)
        self.metrics["packets.unsubscribe.received"] += 1
        session = self.session
        assert session is not None
        codes = self.broker.unsubscribe(session, packet.topic_filters)
        self._send(UNSUBACK, self.conn.unsuback(packet.packet_id, codes))

    # --- the rest ------------------------------------------------------------

    def _on_disconnect(self, packet: Packet) -> None:
        """The machine checked it (session expiry never raised from 0) and closed."""
        assert isinstance(packet, Disconnect)
        self.metrics["packets.disconnect.received"] += 1
        session = self.session
        assert session is not None
        expiry = packet.properties.get("session_expiry_interval")
        if expiry is not None:
            self.broker.set_session_expiry(session, expiry)
        # MQTT 3 has no reason code: 0, and the will is discarded.
        self.will_allowed = packet.reason_code == rc.DISCONNECT_WITH_WILL
        self.close(
            "client disconnect"
            if packet.reason_code == 0
            else f"client disconnect 0x{packet.reason_code:02x}"
        )


# Packet type -> handler (index 0: a Reply), for ServerConnection.dispatch; types the
# machine never hands out are None. The index fixes the packet's class, so the hot
# handlers take it typed, without an isinstance assert per message.
_HANDLERS: tuple[Any, ...] = (
    Client._on_reply,
    Client._on_connect,
    None,
    Client._on_publish,
    Client._on_puback,
    Client._on_pubrec,
    Client._on_pubrel,
    Client._on_pubcomp,
    Client._on_subscribe,
    None,
    Client._on_unsubscribe,
    None,
    None,  # PINGREQ: answered by the machine (a Reply)
    None,
    Client._on_disconnect,
    None,  # AUTH: a violation
)


def _peer(transport: Any) -> tuple[str, int]:
    try:
        peer = transport.get_extra_info("peername")
    except Exception:
        peer = None
    if isinstance(peer, tuple) and len(peer) >= 2:
        host = sys.intern(str(peer[0]))  # many clients share a host
        if host is peer[0] and len(peer) == 2 and type(peer[1]) is int:
            return peer  # already in this form (transport/poller.py): kept, not copied
        return host, int(peer[1])
    return ("", 0)


_PROTO_NAMES = {"MQTT": "MQTT", "MQIsdp": "MQIsdp"}
