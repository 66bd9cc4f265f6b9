"""Where S3a's latency tail comes from: per-message timestamps inside the broker.

usage: python bench/s3a_trace.py [--seconds 10] [--rate 5000] [--top 1.0]

Runs ferrymq in this process (the compiled build when there is one) with hooks on
its plain-TCP transport (``transport/poller.py``, which is not compiled) and on the
collector, loads it with mqttbench's S3a (50 QoS 1 pairs), and records for every
message the time mqttbench stamped into its payload when it sent it (the same
CLOCK_MONOTONIC), when the broker read it and when the broker wrote its delivery.
It then prints where the slowest messages spent their time and what else the
broker did meanwhile: collector passes, the size of the poll batch that read
them, the periodic work between reads (flushes, timers: the gaps where no read
ran).

The hooks cost a few microseconds per read and write, so the absolute figures are
somewhat higher than ``bench/run.py``'s; the comparison between messages is what
this is for.
"""

from __future__ import annotations

import argparse
import bisect
import gc
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import BROKER_CPU, GEN_CPU, MQTTBENCH, WORK, ensure_mqttbench, log
from scenarios import S3_ARGS

PORT = 18845


def _stamp(data: bytes | memoryview, at: int = 0) -> tuple[int, int] | None:
    """(mqttbench's send time, publisher index) of the QoS 1 PUBLISH at ``at``, if any."""
    if len(data) < at + 40 or data[at] & 0xF0 != 0x30:
        return None
    i = at + 1
    while data[i] & 0x80:
        i += 1
    i += 1
    topic = (data[i] << 8) | data[i + 1]
    i += 2 + topic + (2 if data[at] & 0x06 else 0)
    if len(data) < i + 12:
        return None
    return int.from_bytes(data[i : i + 8], "little"), int.from_bytes(data[i + 8 : i + 12], "little")


class Trace:
    """What the hooks record, as flat lists (appends only on the broker's thread)."""

    def __init__(self) -> None:
        self.on = False
        # stamp -> (read time, ready fds of that poll, poll number)
        self.reads: dict[tuple[int, int], tuple[int, int, int]] = {}
        self.writes: dict[tuple[int, int], int] = {}  # stamp -> write time
        self.polls: list[tuple[int, int, int]] = []  # (start, end, ready fds)
        self.gcs: list[tuple[int, int, int]] = []  # (start, end, generation)
        self._gc_start = 0


TRACE = Trace()


class _EpollTap:
    """A listener's epoll that counts what each poll found ready."""

    def __init__(self, epoll: Any, state: dict[str, int]) -> None:
        self._epoll = epoll
        self._state = state

    def poll(self, timeout: float = -1) -> list[tuple[int, int]]:
        events = self._epoll.poll(timeout)
        self._state["batch"] = len(events)
        self._state["poll"] += 1
        return events

    def __getattr__(self, name: str) -> Any:
        return getattr(self._epoll, name)


class _ClientTap:
    """A connection's client as its transport sees it: notes the stamp of each read."""

    def __init__(self, client: Any, state: dict[str, int]) -> None:
        self._client = client
        self._state = state

    def data_received(self, data: bytes) -> None:
        if TRACE.on:
            stamp = _stamp(data)
            if stamp is not None:
                state = self._state
                TRACE.reads[stamp] = (time.monotonic_ns(), state["batch"], state["poll"])
        self._client.data_received(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


def install_hooks() -> None:
    from ferrymq.transport import poller

    trace = TRACE
    mono = time.monotonic_ns
    state = {"batch": 0, "poll": 0}
    orig_init = poller.Poller.__init__
    orig_ready = poller.Poller._ready
    orig_attach = poller.Poller.attach
    orig_write = poller.SocketTransport.write

    def __init__(self: poller.Poller, *args: Any) -> None:
        orig_init(self, *args)
        self.epoll = _EpollTap(self.epoll, state)  # type: ignore[assignment]

    def _ready(self: poller.Poller) -> None:
        start = mono()
        orig_ready(self)
        if trace.on:
            trace.polls.append((start, mono(), state["batch"]))

    def attach(self: poller.Poller, *args: Any) -> poller.SocketTransport:
        transport = orig_attach(self, *args)
        transport.client = _ClientTap(transport.client, state)  # type: ignore[assignment]
        return transport

    def write(self: poller.SocketTransport, data: bytes) -> None:
        if trace.on:
            stamp = _stamp(data)
            if stamp is not None:
                trace.writes[stamp] = mono()
        orig_write(self, data)

    poller.Poller.__init__ = __init__  # type: ignore[method-assign]
    poller.Poller._ready = _ready  # type: ignore[method-assign]
    poller.Poller.attach = attach  # type: ignore[method-assign]
    poller.SocketTransport.write = write  # type: ignore[method-assign]

    def on_gc(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            trace._gc_start = mono()
        elif trace.on:
            trace.gcs.append((trace._gc_start, mono(), info["generation"]))

    gc.callbacks.insert(0, on_gc)


def pct(values: list[float], q: float) -> float:
    return sorted(values)[min(len(values) - 1, int(q * len(values)))] if values else 0.0


def report(top: float) -> None:
    trace = TRACE
    rows = []
    for stamp, (read, batch, poll) in trace.reads.items():
        wrote = trace.writes.get(stamp)
        if wrote is not None:
            rows.append((stamp[0], read, wrote, batch, poll))
    if not rows:
        print("no message traced")
        return
    us = 1e-3
    to_read = [(r - s) * us for s, r, _, _, _ in rows]
    inside = [(w - r) * us for _, r, w, _, _ in rows]
    total = [(w - s) * us for s, _, w, _, _ in rows]
    print(
        f"messages traced: {len(rows)}; polls {len(trace.polls)}; collector passes {len(trace.gcs)}"
    )
    print("| µs | p50 | p90 | p99 | p99.9 | max |")
    print("|---|---:|---:|---:|---:|---:|")
    legs = (("sent -> read", to_read), ("read -> written", inside), ("sent -> written", total))
    for name, vals in legs:
        print(
            f"| {name} | {pct(vals, 0.5):.0f} | {pct(vals, 0.9):.0f} | {pct(vals, 0.99):.0f} |"
            f" {pct(vals, 0.999):.0f} | {max(vals):.0f} |"
        )
    batches = [b for *_, b, _ in rows]
    print(
        f"poll batch (ready fds) of a message's read: p50 {pct(batches, 0.5)},"
        f" p99 {pct(batches, 0.99)}"
    )
    gc_times = [(e - s) * us for s, e, _ in trace.gcs]
    if gc_times:
        print(f"collector pass µs: p50 {pct(gc_times, 0.5):.0f}, max {max(gc_times):.0f}")
    # The slowest `top` % by sent -> written: what was going on.
    rows.sort(key=lambda r: r[2] - r[0])
    slow = rows[-max(1, int(len(rows) * top / 100)) :]
    cut = (slow[0][2] - slow[0][0]) * us
    in_gc = sum(1 for s, _, w, _, _ in slow if any(gs < w and ge > s for gs, ge, _ in trace.gcs))
    late_read = sum(1 for s, r, w, _, _ in slow if r - s > w - r)
    big = sum(1 for *_, b, _ in slow if b > 2)
    print(
        f"slowest {top} % (sent -> written >= {cut:.0f} µs): {len(slow)}; a collector pass"
        f" between send and write: {in_gc}; waited longer to be read than inside: {late_read};"
        f" read in a poll batch of more than 2 fds: {big}"
    )
    # Gaps before a slow message's read where the broker ran something other than a poll.
    starts = [p[0] for p in trace.polls]
    ends = [p[1] for p in trace.polls]
    busy_gap = 0
    for s, r, _, _, _ in slow:
        i = bisect.bisect_left(starts, r) - 1  # the poll that read it
        if i >= 1 and starts[i] - ends[i - 1] > 50_000 and ends[i - 1] > s:
            busy_gap += 1
    print(f"  of which read after a gap of over 50 µs without a poll since it was sent: {busy_gap}")
    # When in the second do the slow ones fall (a periodic cause clusters).
    phase = [((s // 1000) % 1_000_000) // 50_000 for s, *_ in slow]
    hist = [phase.count(k) for k in range(20)]
    print(f"  by 50 ms slot of the second (periodic causes cluster): {hist}")
    phase = [((s // 1000) % 50_000) // 5_000 for s, *_ in slow]
    hist = [phase.count(k) for k in range(10)]
    print(f"  by 5 ms slot of each 50 ms (the load probe's period): {hist}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--rate", type=int, default=5000)
    ap.add_argument("--top", type=float, default=1.0, help="percent of slowest messages to explain")
    args = ap.parse_args()
    ensure_mqttbench()
    os.sched_setaffinity(0, {int(BROKER_CPU)})
    data = tempfile.mkdtemp(prefix="ferrymq-trace-", dir=WORK)
    install_hooks()
    from ferrymq.cli import main as ferrymq_main

    argv = ["start", "--port", str(PORT), "--data-dir", data, "--log-level", "warning"]
    argv += ["--api-port", "0", "--dashboard-port", "0"]

    def load() -> None:
        time.sleep(1.5)
        cmd = ["taskset", "-c", GEN_CPU, str(MQTTBENCH), "-p", str(PORT)]
        cmd += [*S3_ARGS, "-R", str(args.rate), "-d", str(args.seconds + 2), "-w", "1"]
        cmd += ["--drain", "2", "--broker-pid", str(os.getpid())]
        gen = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
        time.sleep(2.5)
        TRACE.on = True
        time.sleep(args.seconds)
        TRACE.on = False
        out = gen.communicate(timeout=60)[0]
        log(out.strip()[-400:])
        report(args.top)
        os.kill(os.getpid(), 2)

    threading.Thread(target=load, daemon=True).start()
    ferrymq_main(argv)


if __name__ == "__main__":
    main()
