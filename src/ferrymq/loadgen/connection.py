"""One benchmark client connection: an ``asyncio.Protocol`` that connects, subscribes or publishes.

Publishers pre-encode their PUBLISH once (fixed header, topic, packet id slot)
and per message only add the packet id and the 16-byte stamp of
``options.STAMP``; subscribers take the latency from that stamp. All bytes a
callback produces go out in one ``transport.write``.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

from ferrymq.loadgen.options import MAGIC, STAMP, BenchOptions
from ferrymq.mqtt.codec import Decoder, encode, encode_publish
from ferrymq.mqtt.errors import MQTTError
from ferrymq.mqtt.packets import (
    CONNACK,
    PUBACK,
    PUBCOMP,
    PUBLISH,
    PUBREC,
    PUBREL,
    SUBACK,
    Connect,
    Disconnect,
    Pingreq,
    Subscribe,
    SubscriptionOptions,
)

if TYPE_CHECKING:
    from ferrymq.loadgen.worker import Worker

BURST = 256  # most messages an unlimited publisher writes per turn
CATCH_UP = 1000  # most messages a rate-limited publisher sends at once to catch up
_MAGIC_BYTES = MAGIC.to_bytes(4, "little")


def _ack(first: int, pid: int) -> bytes:
    return bytes((first, 2, pid >> 8, pid & 0xFF))


class BenchConnection(asyncio.Protocol):
    """A publisher, a subscriber or an idle connection, as ``opts.mode`` says."""

    def __init__(self, worker: Worker, index: int) -> None:
        opts: BenchOptions = worker.opts
        self.worker = worker
        self.opts = opts
        self.index = index
        self.transport: asyncio.Transport | None = None
        self.decoder = Decoder(server=False, version=opts.version)
        self.started_ns = time.monotonic_ns()
        self.connected = False
        self.ready = False  # connected, and subscribed for a subscriber
        self.closed = False
        self.done = False  # reached its limit
        self.paused = False
        self.sent = 0
        self.acked = 0
        self.received = 0
        self.inflight = 0
        self.next_pid = 0
        self.first_ns = 0  # when publishing started
        self.interval_ns = int(opts.msg_interval_ms * 1_000_000)
        self.pad = bytes(opts.size - STAMP.size)
        topic = opts.topic_for(index)
        template = encode_publish(
            topic, bytes(opts.size), opts.qos, opts.retain, False, 1, None, opts.version
        )
        head = template[: len(template) - opts.size]
        if opts.qos:
            # packet id right after the topic; an MQTT 5 property length follows it
            pid_at = len(head) - (3 if opts.version == 5 else 2)
            self.head1, self.head2 = head[:pid_at], head[pid_at + 2 :]
        else:
            self.head1, self.head2 = head, b""

    # --- asyncio callbacks --------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is no subclass
        transport.set_write_buffer_limits(high=64 * 1024)  # type: ignore[attr-defined]
        opts = self.opts
        password = opts.password.encode() if opts.password is not None else None
        connect = Connect(
            self.opts.client_id(self.index),
            protocol_name="MQIsdp" if opts.version == 3 else "MQTT",
            protocol_version=opts.version,
            clean_start=opts.clean,
            keepalive=opts.keepalive,
            username=opts.username,
            password=password,
        )
        transport.write(encode(connect, opts.version))  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        now = time.monotonic_ns()
        try:
            packets = self.decoder.feed(data)
        except MQTTError as exc:
            packets = getattr(exc, "packets", [])
            self.worker.protocol_error(self, str(exc))
        out: list[bytes] = []
        worker = self.worker
        hist = worker.latency
        received = self.received
        for p in packets:
            kind = p.type
            if kind == PUBLISH:
                qos = p.qos  # type: ignore[attr-defined]
                if qos == 1:
                    out.append(_ack(0x40, p.packet_id))  # type: ignore[attr-defined]
                elif qos == 2:
                    out.append(_ack(0x50, p.packet_id))  # type: ignore[attr-defined]
                self.received += 1
                payload = p.payload  # type: ignore[attr-defined]
                if len(payload) >= 20 and payload[16:20] == _MAGIC_BYTES:
                    hist.add((now - int.from_bytes(payload[:8], "little")) // 1000)
            elif kind in (PUBACK, PUBCOMP):
                self.inflight -= 1
                self.acked += 1
            elif kind == PUBREC:
                out.append(_ack(0x62, p.packet_id))  # type: ignore[attr-defined]
            elif kind == PUBREL:
                out.append(_ack(0x70, p.packet_id))  # type: ignore[attr-defined]
            elif kind == CONNACK:
                self._on_connack(p.reason_code, now, out)  # type: ignore[attr-defined]
            elif kind == SUBACK:
                codes = p.reason_codes  # type: ignore[attr-defined]
                if any(code >= 0x80 for code in codes):
                    worker.failed(self, f"subscription refused: {codes}")
                    return
                self.ready = True
                worker.became_ready(self)
        if out and self.transport is not None:
            self.transport.write(b"".join(out))
        if self.received != received:
            worker.mark(now)
        if self.opts.mode == "sub" and self.opts.limit and self.received >= self.opts.limit:
            worker.finished(self)
        elif self.inflight < self.opts.inflight and self.ready and self.opts.mode == "pub":
            worker.kick()

    def _on_connack(self, code: int, now: int, out: list[bytes]) -> None:
        if code:
            self.worker.failed(self, f"CONNACK refused, code {code}")
            return
        self.connected = True
        self.worker.connected(self, (now - self.started_ns) // 1000)
        if self.opts.mode == "sub":
            sub = Subscribe(
                1, [SubscriptionOptions(self.opts.topic_for(self.index), self.opts.qos)]
            )
            out.append(encode(sub, self.opts.version))
        else:
            self.ready = True
            self.first_ns = now
            self.worker.became_ready(self)

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        self.worker.kick()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.worker.lost(self, exc)

    # --- sending ----------------------------------------------------------------

    def pump(self, now: int) -> bool:
        """Write the messages due now; True if this publisher could send more at once."""
        opts = self.opts
        if self.paused or self.done or self.transport is None:
            return False
        if self.interval_ns:
            n = (now - self.first_ns) // self.interval_ns + 1 - self.sent
            n = min(n, CATCH_UP)
        else:
            n = BURST
        if opts.limit:
            n = min(n, opts.limit - self.sent)
        qos = opts.qos
        if qos:
            n = min(n, opts.inflight - self.inflight)
        if n <= 0:
            if opts.limit and self.sent >= opts.limit and self.inflight <= 0:
                self.worker.finished(self)
            return False
        parts: list[bytes] = []
        append = parts.append
        head1, head2, pad, pack = self.head1, self.head2, self.pad, STAMP.pack
        index = self.index
        seq = self.sent
        pid = self.next_pid
        for _ in range(n):
            if qos:
                pid = pid + 1 if pid < 0xFFFF else 1
                append(head1)
                append(pid.to_bytes(2, "big"))
                append(head2)
            else:
                append(head1)
            append(pack(now, index, seq, MAGIC))
            append(pad)
            seq += 1
        self.next_pid = pid
        self.sent = seq
        if qos:
            self.inflight += n
        self.transport.write(b"".join(parts))
        self.worker.count_sent(n, now)
        return not self.interval_ns and not self.paused

    def ping(self) -> None:
        if self.connected and not self.closed and self.transport is not None:
            self.transport.write(encode(Pingreq(), self.opts.version))

    def disconnect(self) -> None:
        if self.transport is not None and not self.closed:
            if self.connected:
                self.transport.write(encode(Disconnect(), self.opts.version))
            self.transport.close()
