"""One benchmark client connection: an ``asyncio.Protocol`` that connects, subscribes or publishes.

The packets come from ``mqtt.client.ClientConnection``, the client side that
the blocking helpers and the tests' raw client use too. Publishers encode
their PUBLISH once, split at the packet id (``publish_template``), and per
message only add the packet id and the 16-byte stamp of ``options.STAMP``;
acknowledgements are the connection's ack heads plus the packet id.
Subscribers take the latency from that stamp. All bytes a callback produces
go out in one ``transport.write``.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

from ferrymq.loadgen.options import MAGIC, STAMP, BenchOptions
from ferrymq.mqtt.client import ClientConnection
from ferrymq.mqtt.errors import MQTTError
from ferrymq.mqtt.packets import (
    CONNACK,
    PUBACK,
    PUBCOMP,
    PUBLISH,
    PUBREC,
    PUBREL,
    SUBACK,
    Disconnect,
    Pingreq,
    SubscriptionOptions,
)

if TYPE_CHECKING:
    from ferrymq.loadgen.worker import Worker

BURST = 256  # most messages an unlimited publisher writes per turn
CATCH_UP = 1000  # most messages a rate-limited publisher sends at once to catch up
_MAGIC_BYTES = MAGIC.to_bytes(4, "little")


class BenchConnection(asyncio.Protocol):
    """A publisher, a subscriber or an idle connection, as ``opts.mode`` says."""

    def __init__(self, worker: Worker, index: int) -> None:
        opts: BenchOptions = worker.opts
        self.worker = worker
        self.opts = opts
        self.index = index
        self.transport: asyncio.Transport | None = None
        self.mqtt = ClientConnection(opts.version)
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
        self.head1, self.head2 = self.mqtt.publish_template(
            opts.topic_for(index), opts.size, opts.qos, opts.retain
        )

    # --- asyncio callbacks --------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is no subclass
        transport.set_write_buffer_limits(high=64 * 1024)  # type: ignore[attr-defined]
        opts = self.opts
        password = opts.password.encode() if opts.password is not None else None
        connect = self.mqtt.connect(
            opts.client_id(self.index),
            opts.clean,
            opts.keepalive,
            username=opts.username,
            password=password,
        )
        transport.write(connect)  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        now = time.monotonic_ns()
        try:
            packets = self.mqtt.receive(data)
        except MQTTError as exc:
            packets = getattr(exc, "packets", [])
            self.worker.protocol_error(self, str(exc))
        out: list[bytes] = []
        heads = self.mqtt.heads
        worker = self.worker
        hist = worker.latency
        received = self.received
        for p in packets:
            kind = p.type
            if kind == PUBLISH:
                qos = p.qos  # type: ignore[attr-defined]
                if qos:
                    head = heads[PUBACK if qos == 1 else PUBREC]
                    out.append(head + p.packet_id.to_bytes(2, "big"))  # type: ignore[attr-defined]
                self.received += 1
                payload = p.payload  # type: ignore[attr-defined]
                if len(payload) >= 20 and payload[16:20] == _MAGIC_BYTES:
                    hist.add((now - int.from_bytes(payload[:8], "little")) // 1000)
            elif kind in (PUBACK, PUBCOMP):
                self.inflight -= 1
                self.acked += 1
            elif kind == PUBREC:
                out.append(heads[PUBREL] + p.packet_id.to_bytes(2, "big"))  # type: ignore[attr-defined]
            elif kind == PUBREL:
                out.append(heads[PUBCOMP] + p.packet_id.to_bytes(2, "big"))  # type: ignore[attr-defined]
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
            topic = self.opts.topic_for(self.index)
            out.append(self.mqtt.subscribe([SubscriptionOptions(topic, self.opts.qos)]))
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
            self.transport.write(self.mqtt.encode(Pingreq()))

    def disconnect(self) -> None:
        if self.transport is not None and not self.closed:
            if self.connected:
                self.transport.write(self.mqtt.encode(Disconnect()))
            self.transport.close()
