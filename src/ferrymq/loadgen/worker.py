"""One worker process: an event loop driving its share of the benchmark's connections.

Clients are dealt to workers round-robin, and client ``i`` starts connecting at
``i * conn_interval_ms`` whichever worker holds it, so the total connection
rate does not depend on the number of workers. Once a second the worker sends
the parent what changed (counters and latency buckets) as a plain dict.
"""

from __future__ import annotations

import asyncio
import signal
import ssl
import time
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Event
from typing import Any

from ferrymq.loadgen.connection import BenchConnection
from ferrymq.loadgen.histogram import Histogram
from ferrymq.loadgen.options import BenchOptions
from ferrymq.loadgen.websocket import WebSocketStream, keep_large_blocks

DRAIN_S = 2.0  # after stopping, how long publishers wait for their last acknowledgements


class Worker:
    def __init__(
        self, wid: int, opts: BenchOptions, indices: list[int], queue: Queue, stop: Event
    ) -> None:
        self.wid = wid
        self.opts = opts
        self.indices = indices
        self.queue = queue
        self.stop_event = stop
        self.loop = asyncio.get_running_loop()
        self.conns: list[BenchConnection] = []
        self.publishers: list[BenchConnection] = []
        self.latency = Histogram()
        self.conn_latency = Histogram()
        self.n_connected = 0
        self.n_failed = 0
        self.n_lost = 0
        self.n_ready = 0
        self.n_finished = 0
        self.attempts_done = 0
        self.sent = self.acked_seen = self.recv_seen = 0
        self.first_ns = self.last_ns = 0  # first and latest message sent or received
        self.errors: list[str] = []
        self.kicked = False
        self.stopping = False
        self.finished_event = asyncio.Event()

    # --- connection events ----------------------------------------------------

    def connected(self, conn: BenchConnection, us: int) -> None:
        self.n_connected += 1
        self.conn_latency.add(us)

    def became_ready(self, conn: BenchConnection) -> None:
        self.n_ready += 1
        self._attempted()
        if self.opts.mode == "pub":
            self.publishers.append(conn)
            self.kick()

    def failed(self, conn: BenchConnection, why: str) -> None:
        if conn.done:
            return
        conn.done = True
        self.n_failed += 1
        self._attempted()
        self._error(why)
        conn.disconnect()
        self._check_finished()

    def lost(self, conn: BenchConnection, exc: Exception | None) -> None:
        if conn.done or self.stopping:
            return
        conn.done = True
        if conn.ready:
            self.n_lost += 1
            self._error(f"connection closed by the broker: {exc or 'EOF'}")
        else:
            self.n_failed += 1
            self._attempted()
            self._error(f"connection closed before it was ready: {exc or 'EOF'}")
        self._check_finished()

    def protocol_error(self, conn: BenchConnection, why: str) -> None:
        self._error(f"protocol error: {why}")
        conn.disconnect()

    def finished(self, conn: BenchConnection) -> None:
        if conn.done:
            return
        conn.done = True
        self.n_finished += 1
        conn.disconnect()
        self._check_finished()

    def count_sent(self, n: int, now: int) -> None:
        self.sent += n
        self.mark(now)

    def mark(self, now: int) -> None:
        """Note message activity at ``now`` (ns): rates are taken over the active period."""
        if not self.first_ns:
            self.first_ns = now
        self.last_ns = now

    def _attempted(self) -> None:
        self.attempts_done += 1
        if self.attempts_done == len(self.indices):
            self.report(tick=False)  # tell the parent at once that every client is up

    def _error(self, why: str) -> None:
        if len(self.errors) < 5:
            self.errors.append(why)

    def _check_finished(self) -> None:
        if all(c.done for c in self.conns) and len(self.conns) == len(self.indices):
            self.finished_event.set()

    # --- publishing -------------------------------------------------------------

    def kick(self) -> None:
        """Schedule a publishing turn soon (after an ack, a resume or a new publisher)."""
        if not self.kicked and not self.stopping:
            self.kicked = True
            self.loop.call_soon(self._turn)

    def _turn(self) -> None:
        self.kicked = False
        if self.stopping:
            return
        now = time.monotonic_ns()
        more = False
        for pub in self.publishers:
            if pub.pump(now):
                more = True
        if more:
            self.kick()

    def _tick(self) -> None:
        """Paced publishers: a turn every millisecond."""
        if self.stopping:
            return
        self._turn()
        self.loop.call_later(0.001, self._tick)

    # --- connecting ---------------------------------------------------------------

    def _ssl_context(self) -> ssl.SSLContext | None:
        if not self.opts.tls:
            return None
        ctx = ssl.create_default_context(cafile=self.opts.cafile)
        if self.opts.insecure:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        return ctx

    async def _open(self, conn: BenchConnection, ctx: ssl.SSLContext | None) -> None:
        opts = self.opts
        try:
            if opts.ws:
                await self._open_ws(conn, ctx)
            else:
                await self.loop.create_connection(lambda: conn, opts.host, opts.port, ssl=ctx)
        except OSError as exc:
            self.failed(conn, f"connect failed: {exc}")
            return
        self.loop.call_later(opts.connect_timeout, self._connect_timeout, conn)

    async def _open_ws(self, conn: BenchConnection, ctx: ssl.SSLContext | None) -> None:
        opts = self.opts

        def on_error(why: str) -> None:
            if conn.ready:
                self.protocol_error(conn, why)
            else:
                self.failed(conn, why)

        stream = WebSocketStream(conn, opts.host, opts.port, opts.ws_path, on_error)
        await self.loop.create_connection(lambda: stream, opts.host, opts.port, ssl=ctx)
        if conn.transport is None:  # so that a connect timeout closes it before the upgrade
            conn.transport = stream  # type: ignore[assignment]

    def _connect_timeout(self, conn: BenchConnection) -> None:
        if not conn.ready and not conn.done:
            self.failed(conn, f"not ready after {self.opts.connect_timeout} s")

    def _start(self, index: int, ctx: ssl.SSLContext | None) -> None:
        if self.stopping:
            return
        conn = BenchConnection(self, index)
        self.conns.append(conn)
        self.loop.create_task(self._open(conn, ctx))

    # --- reporting ------------------------------------------------------------------

    def report(self, final: bool = False, tick: bool = True) -> None:
        acked = sum(c.acked for c in self.conns)
        recv = sum(c.received for c in self.conns)
        msg: dict[str, Any] = {
            "w": self.wid,
            "t": time.monotonic(),
            "sent": self.sent,
            "acked": acked - self.acked_seen,
            "recv": recv - self.recv_seen,
            "connected": self.n_connected,
            "ready": self.n_ready,
            "failed": self.n_failed,
            "lost": self.n_lost,
            "attempts_done": self.attempts_done,
            "clients": len(self.indices),
            "lat": self.latency.to_dict(),
            "conn_lat": self.conn_latency.to_dict(),
            "errors": self.errors,
            "first_ns": self.first_ns,
            "last_ns": self.last_ns,
            "final": final,
            "tick": tick and not final,
        }
        self.sent = 0
        self.acked_seen, self.recv_seen = acked, recv
        self.latency = Histogram()
        self.conn_latency = Histogram()
        self.errors = []
        self.queue.put(msg)

    async def run(self) -> None:
        opts = self.opts
        ctx = self._ssl_context()
        for index in self.indices:
            order = index - opts.start_index
            self.loop.call_later(order * opts.conn_interval_ms / 1000.0, self._start, index, ctx)
        if opts.mode == "pub" and opts.msg_interval_ms > 0:
            self._tick()
        next_report = time.monotonic() + 1.0
        next_ping = time.monotonic() + opts.keepalive / 2 if opts.keepalive else float("inf")
        while not self.stop_event.is_set() and not self.finished_event.is_set():
            await asyncio.sleep(0.05)
            now = time.monotonic()
            if now >= next_report:
                self.report()
                next_report += 1.0
            if now >= next_ping:
                for conn in self.conns:
                    conn.ping()
                next_ping = now + opts.keepalive / 2
        await self._shutdown()
        self.report(final=True, tick=False)

    async def _shutdown(self) -> None:
        self.stopping = True
        deadline = time.monotonic() + DRAIN_S
        while time.monotonic() < deadline and any(
            c.inflight > 0 and not c.closed for c in self.publishers
        ):
            await asyncio.sleep(0.01)
        for conn in self.conns:
            conn.disconnect()
        await asyncio.sleep(0.05)


def worker_main(
    wid: int, opts: BenchOptions, indices: list[int], queue: Queue, stop: Event
) -> None:
    """Process entry point: the parent handles Ctrl-C and tells workers through ``stop``."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if opts.ws:
        keep_large_blocks()
    try:
        import uvloop  # type: ignore[import-not-found]

        runner: Any = uvloop.run
    except ImportError:  # pragma: no cover - platforms without uvloop
        runner = asyncio.run

    async def main() -> None:
        await Worker(wid, opts, indices, queue, stop).run()

    runner(main())
