"""The parent process of ``ferrymq bench``: start workers, print progress, merge the summary.

Workers report once a second; the parent prints one progress line per
report round (rates over the last second, latency of the last second) on
stderr and, at the end, a summary on stdout: totals, average rates over the
active period, and latency percentiles over the whole run (``--json`` prints
it as one JSON line instead).
"""

from __future__ import annotations

import json
import multiprocessing
import queue as queue_mod
import signal
import sys
import time
from typing import Any, TextIO

from ferrymq.loadgen.histogram import Histogram
from ferrymq.loadgen.options import BenchOptions
from ferrymq.loadgen.worker import worker_main


class Totals:
    """Merged view of the workers' reports."""

    def __init__(self, opts: BenchOptions) -> None:
        self.opts = opts
        self.started = time.monotonic()
        self.state: dict[int, dict[str, Any]] = {}
        self.sent = self.acked = self.recv = 0
        self.latency = Histogram()
        self.conn_latency = Histogram()
        self.errors: list[str] = []
        self.first_ns = 0
        self.last_ns = 0
        self.ready_at = 0.0

    def add(self, msg: dict[str, Any]) -> None:
        self.state[msg["w"]] = msg
        self.sent += msg["sent"]
        self.acked += msg["acked"]
        self.recv += msg["recv"]
        if msg["first_ns"] and (not self.first_ns or msg["first_ns"] < self.first_ns):
            self.first_ns = msg["first_ns"]
        self.last_ns = max(self.last_ns, msg["last_ns"])
        self.latency.merge(Histogram.from_dict(msg["lat"]))
        self.conn_latency.merge(Histogram.from_dict(msg["conn_lat"]))
        for e in msg["errors"]:
            if len(self.errors) < 10 and e not in self.errors:
                self.errors.append(e)

    def total(self, key: str) -> int:
        return sum(int(s[key]) for s in self.state.values())

    def all_attempted(self) -> bool:
        return self.total("attempts_done") >= self.opts.count

    def summary(self) -> dict[str, Any]:
        active = max((self.last_ns - self.first_ns) / 1e9, 1e-3) if self.first_ns else 0.0
        opts = self.opts

        def rate(n: int) -> float:
            return round(n / active, 1) if active else 0.0

        return {
            "tool": "ferrymq-bench",
            "mode": opts.mode,
            "host": opts.host,
            "port": opts.port,
            "transport": opts.transport,
            "path": opts.ws_path if opts.ws else None,
            "clients": opts.count,
            "workers": opts.worker_count(),
            "qos": opts.qos,
            "size": opts.size,
            "topic": opts.topic,
            "connected": self.total("connected"),
            "ready": self.total("ready"),
            "failed": self.total("failed"),
            "lost": self.total("lost"),
            "ready_s": round(self.ready_at - self.started, 3) if self.ready_at else None,
            "sent": self.sent,
            "acked": self.acked,
            "received": self.recv,
            "active_s": round(active, 3),
            "sent_rate": rate(self.sent),
            "acked_rate": rate(self.acked),
            "recv_rate": rate(self.recv),
            "lat_ms": self.latency.summary(),
            "connect_ms": self.conn_latency.summary(),
            "elapsed_s": round(time.monotonic() - self.started, 3),
            "errors": self.errors,
        }


def _progress(out: TextIO, t: Totals, window: dict[str, int], lat: Histogram) -> None:
    elapsed = time.monotonic() - t.started
    parts = [
        f"{elapsed:6.1f}s",
        f"conn {t.total('ready')}/{t.opts.count}",
    ]
    failed = t.total("failed") + t.total("lost")
    if failed:
        parts.append(f"({failed} failed)")
    if t.opts.mode == "pub":
        parts.append(f"pub {window['sent']:,}/s")
        if t.opts.qos:
            parts.append(f"acked {window['acked']:,}/s")
    if t.opts.mode == "sub":
        parts.append(f"recv {window['recv']:,}/s")
        if lat.count:
            parts.append(f"lat p50 {lat.percentile(50):.2f} p99 {lat.percentile(99):.2f} ms")
    line = "  ".join(parts)
    if out.isatty():
        out.write("\r\x1b[K" + line)
    else:
        out.write(line + "\n")
    out.flush()


def format_summary(s: dict[str, Any]) -> str:
    where = f"{s['host']}:{s['port']}"
    if s["transport"] != "tcp":
        where = f"{s['transport']}://{where}{s['path'] or ''}"
    lines = [
        f"ferrymq bench {s['mode']}: {s['clients']} clients on {where} "
        f"({s['workers']} workers), QoS {s['qos']}"
        + (f", {s['size']} B payloads" if s["mode"] == "pub" else ""),
        f"  connections: {s['ready']} ready, {s['failed']} failed, {s['lost']} lost"
        + (f"; all ready after {s['ready_s']} s" if s["ready_s"] is not None else ""),
    ]
    c = s["connect_ms"]
    if c["n"]:
        lines.append(
            f"  connect (CONNACK) ms: p50 {c['p50']:.3f}  p99 {c['p99']:.3f}  max {c['max']:.3f}"
        )
    if s["mode"] == "pub":
        lines.append(f"  published: {s['sent']:,} ({s['sent_rate']:,.0f}/s over {s['active_s']} s)")
        if s["qos"]:
            lines.append(f"  acknowledged: {s['acked']:,} ({s['acked_rate']:,.0f}/s)")
    if s["mode"] == "sub":
        lines.append(
            f"  received: {s['received']:,} ({s['recv_rate']:,.0f}/s over {s['active_s']} s)"
        )
        lat = s["lat_ms"]
        if lat["n"]:
            lines.append(
                f"  latency ms: p50 {lat['p50']:.3f}  p90 {lat['p90']:.3f}  p99 {lat['p99']:.3f}  "
                f"p99.9 {lat['p999']:.3f}  max {lat['max']:.3f}  (n={lat['n']:,})"
            )
    for e in s["errors"]:
        lines.append(f"  error: {e}")
    return "\n".join(lines)


def run(opts: BenchOptions, as_json: bool = False, quiet: bool = False) -> int:
    """Run the benchmark to its end (duration, limits or Ctrl-C); 0 when nothing failed."""
    ctx = multiprocessing.get_context("fork")
    n = opts.worker_count()
    queue = ctx.Queue()
    stop = ctx.Event()
    first = opts.start_index
    indices = [list(range(first + w, first + opts.count, n)) for w in range(n)]
    procs = [
        ctx.Process(target=worker_main, args=(w, opts, indices[w], queue, stop), daemon=True)
        for w in range(n)
    ]
    for p in procs:
        p.start()
    totals = Totals(opts)
    interrupted = False

    def on_signal(signum: int, frame: Any) -> None:
        nonlocal interrupted
        interrupted = True
        stop.set()

    old_int = signal.signal(signal.SIGINT, on_signal)
    old_term = signal.signal(signal.SIGTERM, on_signal)
    deadline = time.monotonic() + opts.duration if opts.duration else float("inf")
    finals: set[int] = set()
    window = {"sent": 0, "acked": 0, "recv": 0}
    window_lat = Histogram()
    reports = 0
    try:
        while len(finals) < n:
            if time.monotonic() >= deadline:
                stop.set()
            try:
                msg = queue.get(timeout=0.1)
            except queue_mod.Empty:
                if not any(p.is_alive() for p in procs):
                    break
                continue
            totals.add(msg)
            if not totals.ready_at and totals.all_attempted():
                totals.ready_at = time.monotonic()
                if not quiet:
                    print(
                        f"all {opts.count} clients tried: {totals.total('ready')} ready, "
                        f"{totals.total('failed')} failed, "
                        f"in {totals.ready_at - totals.started:.3f} s",
                        file=sys.stderr,
                        flush=True,
                    )
            for key in window:
                window[key] += msg[key]
            window_lat.merge(Histogram.from_dict(msg["lat"]))
            if msg["final"]:
                finals.add(msg["w"])
                continue
            if not msg["tick"]:
                continue
            reports += 1
            if reports % n == 0:
                if not quiet:
                    _progress(sys.stderr, totals, window, window_lat)
                window = dict.fromkeys(window, 0)
                window_lat = Histogram()
    finally:
        stop.set()
        for p in procs:
            p.join(timeout=5)
            if p.is_alive():
                p.kill()
        signal.signal(signal.SIGINT, old_int)
        signal.signal(signal.SIGTERM, old_term)
    if not quiet and sys.stderr.isatty():
        sys.stderr.write("\n")
    summary = totals.summary()
    summary["interrupted"] = interrupted
    print(json.dumps(summary) if as_json else format_summary(summary), flush=True)
    failed = summary["failed"] or summary["lost"]
    if opts.limit and not interrupted:
        want = opts.limit * opts.count
        got = summary["received"] if opts.mode == "sub" else summary["sent"]
        failed = failed or got < want
    return 1 if failed else 0
