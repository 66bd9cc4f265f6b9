"""Where X3a's latency goes: per-message timestamps along the cross-node path.

usage: python bench/x3a_trace.py [--seconds 10] [--rate 5000] [--node2-cpu CPU] [--redis-cpu CPU]

Runs redis-server and two ferrymq nodes as bench/cluster.py's X3a does (node 1 on
BROKER_CPU, node 2 and redis-server beside the generator on GEN_CPU unless
``--node2-cpu`` / ``--redis-cpu`` say otherwise), each node in a process of this script that hooks
its uncompiled parts: the plain-TCP transport (``transport/poller.py``), the
cluster node's forwarding, its sender's and its QoS 1/2 reader's round trips to
Redis and its dispatch of what it read, the collector and the heartbeat thread's
marks. mqttbench's S3a (50 QoS 1 pairs) then publishes on node 1 to subscribers
on node 2, and each message is followed by the send time mqttbench stamped into
its payload (CLOCK_MONOTONIC, the clock of every stamp here) through:

  sent        mqttbench wrote the PUBLISH to node 1
  read        node 1 read it from the publisher's socket
  queued      node 1 put it in its outbox (``ClusterNode.forward``)
  xadd        node 1's sender wrote the XADD carrying it
  xadd ok     node 1 read the XADD's reply
  asked       node 2 wrote the XREADGROUP that returned it
  got         node 2 read that reply
  written     node 2 wrote the delivery to the subscriber's socket

and the per-stage p50 / p99 are printed, with what the slowest messages had in
common. The hooks cost a few microseconds per stage, so the absolute figures are
somewhat higher than ``bench/run.py``'s; the split between stages is what this
is for.
"""

from __future__ import annotations

import argparse
import bisect
import gc
import json
import os
import pickle
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, NoReturn

sys.path.insert(0, str(Path(__file__).resolve().parent))

from cluster import _idle_publishers, _set, redis_server
from common import BROKER_CPU, GEN_CPU, HOST, MQTTBENCH, WORK, ensure_mqttbench, log, port_open
from s3a_trace import _stamp, pct
from scenarios import S3_ARGS

REDIS_PORT = 18848
PORTS = ((18846, 18856), (18847, 18857))  # (MQTT, API) of node 1 and node 2
STAGES = ("sent", "read", "queued", "xadd", "xadd ok", "asked", "got", "written")

Stamp = tuple[int, int]


class Trace:
    """What one node's hooks record (appends on the node's event loop only)."""

    def __init__(self) -> None:
        self.reads: dict[Stamp, int] = {}  # node 1: the publisher's socket
        self.queued: dict[Stamp, int] = {}
        self.sends: list[tuple[int, int, list[Stamp]]] = []  # (xadd, xadd ok, stamps)
        self.batches: list[tuple[int, int, bytes]] = []  # node 2: (asked, got, batch)
        self.writes: dict[Stamp, int] = {}  # node 2: the subscriber's socket
        self.gcs: list[tuple[int, int, int]] = []  # (start, end, generation)
        self.marks: list[int] = []  # the heartbeat thread's marks, as the loop ran them
        self.rounds: list[tuple[int, int]] = []  # the loop's heartbeat rounds: (start, end)
        self._round = 0
        self._gc_start = 0
        self._pending: list[Stamp] = []  # queued since the last take
        self._taken: list[Stamp] = []
        self._read: tuple[int, int] = (0, 0)  # the last XREADGROUP: (asked, got)


TRACE = Trace()


def _payload_stamp(payload: bytes) -> Stamp | None:
    if len(payload) < 12:
        return None
    return int.from_bytes(payload[:8], "little"), int.from_bytes(payload[8:12], "little")


def install_hooks() -> None:
    """Patch the node's uncompiled parts to record every stage this process sees."""
    from ferrymq.cluster import beat, node, outbox, stream_inbox
    from ferrymq.transport import poller

    trace = TRACE
    mono = time.monotonic_ns
    orig_attach = poller.Poller.attach
    orig_write = poller.SocketTransport.write
    orig_forward = node.ClusterNode.forward
    orig_take = outbox.Outbox.take
    orig_round_trip = node._round_trip
    orig_read_write = stream_inbox.write_packed
    orig_entries = stream_inbox._entries
    orig_mark = beat.KeepAlive._mark
    orig_run_id = node.ClusterNode._server_run_id
    orig_membership = node.ClusterNode._membership

    class ClientTap:
        def __init__(self, client: Any) -> None:
            self._client = client

        def data_received(self, data: bytes) -> None:
            stamp = _stamp(data)
            if stamp is not None:
                trace.reads[stamp] = mono()
            self._client.data_received(data)

        def __getattr__(self, name: str) -> Any:
            return getattr(self._client, name)

    def attach(self: poller.Poller, *args: Any) -> poller.SocketTransport:
        transport = orig_attach(self, *args)
        transport.client = ClientTap(transport.client)  # type: ignore[assignment]
        return transport

    def write(self: poller.SocketTransport, data: bytes) -> None:
        stamp = _stamp(data)
        if stamp is not None:
            trace.writes[stamp] = mono()
        orig_write(self, data)

    def forward(self: node.ClusterNode, msg: Any, nodes: tuple[str, ...]) -> None:
        stamp = _payload_stamp(msg.payload)
        if stamp is not None:
            trace.queued[stamp] = mono()
            trace._pending.append(stamp)
        orig_forward(self, msg, nodes)

    def take(self: outbox.Outbox) -> tuple[dict[str, bytes], dict[str, bytes], int]:
        trace._taken, trace._pending = trace._pending, []
        return orig_take(self)

    async def round_trip(conn: Any, commands: list[tuple[Any, ...]]) -> Any:
        first = commands[0][0]
        asked = mono()
        reply = await orig_round_trip(conn, commands)
        if first in ("XADD", "PUBLISH"):
            trace.sends.append((asked, mono(), trace._taken))
            trace._taken = []
        return reply

    if hasattr(node, "Sends"):  # sends written ahead of their replies
        orig_node_write = node._write
        orig_answered = node.Sends.answered
        inflight: list[tuple[int, list[Stamp]]] = []

        async def write_ahead(conn: Any, commands: list[tuple[Any, ...]]) -> None:
            if commands[0][0] in ("XADD", "PUBLISH"):
                inflight.append((mono(), trace._taken))
                trace._taken = []
            await orig_node_write(conn, commands)

        def answered(self: Any) -> None:
            written, stamps = inflight.pop(0)
            trace.sends.append((written, mono(), stamps))
            orig_answered(self)

        node._write = write_ahead
        node.Sends.answered = answered  # type: ignore[method-assign]

    async def read_write(conn: Any, data: list[bytes]) -> None:
        if b"XREADGROUP" in data[-1]:  # the QoS 1/2 reader asks for the next batches
            trace._read = (mono(), 0)
        await orig_read_write(conn, data)

    def entries(reply: Any) -> list[Any]:
        """The reader's reply, just read: every batch it holds was got now."""
        found = orig_entries(reply)
        got = mono()
        for _entry_id, fields in found:
            if fields and len(fields) == 2:
                trace.batches.append((trace._read[0], got, fields[1]))
        return found

    async def run_id(self: node.ClusterNode, redis: Any) -> str:
        trace._round = mono()  # a heartbeat round starts with the run id's INFO
        return await orig_run_id(self, redis)

    async def membership(self: node.ClusterNode, redis: Any) -> None:
        await orig_membership(self, redis)  # and ends with the membership read
        if trace._round:
            trace.rounds.append((trace._round, mono()))
            trace._round = 0

    def mark(self: beat.KeepAlive) -> None:
        trace.marks.append(mono())
        orig_mark(self)

    poller.Poller.attach = attach  # type: ignore[method-assign]
    poller.SocketTransport.write = write  # type: ignore[method-assign]
    node.ClusterNode.forward = forward  # type: ignore[method-assign]
    outbox.Outbox.take = take  # type: ignore[method-assign]
    node._round_trip = round_trip
    stream_inbox.write_packed = read_write
    stream_inbox._entries = entries
    beat.KeepAlive._mark = mark  # type: ignore[method-assign]
    node.ClusterNode._server_run_id = run_id  # type: ignore[method-assign]
    node.ClusterNode._membership = membership  # type: ignore[method-assign]

    def on_gc(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            trace._gc_start = mono()
        else:
            trace.gcs.append((trace._gc_start, mono(), info["generation"]))

    gc.callbacks.insert(0, on_gc)


def run_node(out: str, argv: list[str]) -> None:
    """One traced node: ferrymq in this process; what it recorded goes to ``out`` on exit."""
    install_hooks()
    from ferrymq.cli import main as ferrymq_main
    from ferrymq.cluster.codec import read_batch

    def dump() -> None:
        t = TRACE
        got: dict[Stamp, tuple[int, int]] = {}
        for asked, reply, batch in t.batches:
            for msg in read_batch(batch)[0]:
                stamp = _payload_stamp(msg.payload)
                if stamp is not None:
                    got[stamp] = (asked, reply)
        xadd = {s: (a, b) for a, b, stamps in t.sends for s in stamps}
        data = {
            "reads": t.reads,
            "queued": t.queued,
            "xadd": xadd,
            "got": got,
            "writes": t.writes,
            "gcs": t.gcs,
            "marks": t.marks,
            "rounds": t.rounds,
            "sends": len(t.sends),
            "batches": len(t.batches),
        }
        with open(out, "wb") as f:
            pickle.dump(data, f)

    real_exit = os._exit

    def exit_after_dump(code: int) -> NoReturn:  # ``ferrymq start`` ends with os._exit
        dump()
        real_exit(code)

    os._exit = exit_after_dump
    ferrymq_main(argv)


def _spawn(cpu: str, argv: list[str], log_name: str) -> subprocess.Popen[bytes]:
    with open(WORK / log_name, "ab") as logf:
        return subprocess.Popen(
            ["taskset", "-c", cpu, *argv], stdout=logf, stderr=subprocess.STDOUT
        )


def _wait_port(port: int, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 20
    while not port_open(port):
        if time.monotonic() > deadline or proc.poll() is not None:
            raise RuntimeError(f"nothing listens on {port}; see {WORK}")
        time.sleep(0.05)


def _mqttbench(port: int, args: list[str]) -> dict[str, Any]:
    cmd = ["taskset", "-c", GEN_CPU, str(MQTTBENCH), "-h", HOST, "-p", str(port), *args]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False).stdout.strip()
    try:
        return json.loads(out.splitlines()[-1]) if out else {}
    except json.JSONDecodeError:
        return {"raw": out[-300:]}


def drive(seconds: int, rate: int, node2_cpu: str, redis_cpu: str) -> None:
    """redis-server, two traced nodes, X3a's load; then the report."""
    ensure_mqttbench()
    WORK.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="ferrymq-xtrace-", dir=WORK))
    redis = _spawn(
        redis_cpu,
        [redis_server(), "--port", str(REDIS_PORT), "--bind", HOST, "--save", ""],
        "xtrace-redis.log",
    )
    nodes: list[subprocess.Popen[bytes]] = []
    try:
        _wait_port(REDIS_PORT, redis)
        url = f"redis://{HOST}:{REDIS_PORT}/0"
        for i, ((port, api), cpu) in enumerate(zip(PORTS, (BROKER_CPU, node2_cpu), strict=True), 1):
            argv = [sys.executable, __file__, "--node", str(tmp / f"node{i}.pickle")]
            argv += ["start", "--port", str(port), "--api-port", str(api)]
            argv += ["--dashboard-port", "0", "--data-dir", str(tmp / f"data{i}")]
            argv += ["--log-level", "warning", "--node-name", f"trace{i}@127.0.0.1"]
            argv += ["--cluster-redis-url", url]
            nodes.append(_spawn(cpu, argv, f"xtrace-node{i}.log"))
            _wait_port(port, nodes[-1])
        time.sleep(2.0)  # both joined and saw each other
        base = [*S3_ARGS, "-R", str(rate)]
        timing = ["-d", str(seconds), "-w", "1", "--drain", "2", "--settle", "0"]
        sub_args = [*_idle_publishers(base), *timing]
        pub_timing = _set(_set(timing, "-w", "1"), "-d", str(seconds + 3))
        pub_args = [*_set(base, "-S", "0"), *pub_timing]
        result: dict[str, Any] = {}
        subs = threading.Thread(target=lambda: result.update(_mqttbench(PORTS[1][0], sub_args)))
        subs.start()
        time.sleep(1.5)  # the subscriptions are routed (SUBACK waits for it)
        window = (time.monotonic_ns() + 2 * 10**9, 0)
        pub = _mqttbench(PORTS[0][0], pub_args)
        window = (window[0], time.monotonic_ns() - 2 * 10**9)
        subs.join()
        for proc in nodes:
            proc.send_signal(signal.SIGINT)
        for proc in nodes:
            proc.wait(timeout=20)
        n1 = _load(tmp / "node1.pickle")
        n2 = _load(tmp / "node2.pickle")
        lat, cpu = result.get("lat_ms", {}), result.get("cpu", {})
        log(
            f"mqttbench: delivered {result.get('recv_rate')} msg/s, latency p50 {lat.get('p50')}"
            f" ms, p99 {lat.get('p99')} ms; node 1 accepted {pub.get('pub_rate')} msg/s; idle %"
            f" per CPU {cpu.get('idle_pct')}, steal % {cpu.get('steal_pct')}"
        )
        report(n1, n2, window)
    finally:
        for proc in [*nodes, redis]:
            if proc.poll() is None:
                proc.terminate()
                proc.wait(timeout=10)


def _load(path: Path) -> dict[str, Any]:
    with open(path, "rb") as f:
        data: dict[str, Any] = pickle.load(f)
    return data


def report(n1: dict[str, Any], n2: dict[str, Any], window: tuple[int, int]) -> None:
    rows: list[tuple[int, ...]] = []
    for stamp, written in n2["writes"].items():
        if not window[0] <= stamp[0] <= window[1]:
            continue
        read, queued = n1["reads"].get(stamp), n1["queued"].get(stamp)
        xadd, got = n1["xadd"].get(stamp), n2["got"].get(stamp)
        if read is None or queued is None or xadd is None or got is None:
            continue
        rows.append((stamp[0], read, queued, *xadd, *got, written))
    if not rows:
        print("no message traced")
        return
    print(
        f"messages traced: {len(rows)}; node 1 sends {n1['sends']}, node 2 batches read"
        f" {n2['batches']}; collector passes node 1 {len(n1['gcs'])}, node 2 {len(n2['gcs'])}"
    )
    legs = [(f"{STAGES[i]} -> {STAGES[i + 1]}", i, i + 1) for i in range(len(STAGES) - 1)]
    legs += [("xadd -> got (Redis to node 2)", 3, 6), ("sent -> written", 0, 7)]
    print("| µs | p50 | p90 | p99 | p99.9 | max |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, a, b in legs:
        vals = [(r[b] - r[a]) / 1000 for r in rows]
        print(
            f"| {name} | {pct(vals, 0.5):.0f} | {pct(vals, 0.9):.0f} | {pct(vals, 0.99):.0f} |"
            f" {pct(vals, 0.999):.0f} | {max(vals):.0f} |"
        )
    late = sum(1 for r in rows if r[5] > r[3])
    print(f"node 2 asked only after the XADD was written: {late} of {len(rows)}")
    rows.sort(key=lambda r: r[7] - r[0])
    slow = rows[-max(1, len(rows) // 100) :]
    print(f"slowest 1 % (sent -> written >= {(slow[0][7] - slow[0][0]) / 1000:.0f} µs):")
    for name, a, b in legs[:-2]:
        vals = [(r[b] - r[a]) / 1000 for r in slow]
        print(f"  {name}: p50 {pct(vals, 0.5):.0f} µs, max {max(vals):.0f}")
    for node, data in (("node 1", n1), ("node 2", n2)):
        gcs = data["gcs"]
        hit = sum(1 for r in slow if any(s < r[7] and e > r[0] for s, e, _ in gcs))
        gen2 = [g for g in gcs if g[2] == 2]
        marks = data["marks"]
        near = sum(
            1
            for r in slow
            if (i := bisect.bisect_left(marks, r[0])) < len(marks) and marks[i] < r[7] + 10**6
        )
        print(
            f"  {node}: a collector pass between sent and written: {hit}"
            f" (gen 2 passes in the run: {len(gen2)}); a heartbeat mark within: {near}"
        )
        rounds = data.get("rounds", [])
        if rounds:
            took = [(e - s) / 1000 for s, e in rounds]

            def overlaps(rs: list[Any], rounds: list[tuple[int, int]] = rounds) -> int:
                return sum(1 for r in rs if any(s < r[7] and e > r[0] for s, e in rounds))

            print(
                f"  {node}: heartbeat rounds {len(rounds)}, p50 {pct(took, 0.5):.0f} µs,"
                f" max {max(took):.0f}; overlapping one: {overlaps(slow)} of the slowest"
                f" {len(slow)}, {100 * overlaps(rows) / len(rows):.1f} % of all messages"
            )
    phase = [((r[0] // 1000) % 1_000_000) // 50_000 for r in slow]
    print(f"  by 50 ms slot of the second: {[phase.count(k) for k in range(20)]}")


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--node":
        run_node(sys.argv[2], sys.argv[3:])
        return
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--rate", type=int, default=5000)
    ap.add_argument("--node2-cpu", default=os.environ.get("CLUSTER_NODE2_CPU", GEN_CPU))
    ap.add_argument("--redis-cpu", default=os.environ.get("CLUSTER_REDIS_CPU", GEN_CPU))
    args = ap.parse_args()
    drive(args.seconds, args.rate, args.node2_cpu, args.redis_cpu)


if __name__ == "__main__":
    main()
