"""What X3a costs per message in Redis commands, syscalls and context switches.

usage: python bench/x3a_counts.py [--strace]

Runs X3a as bench/cluster.py does (same placement, same generator arguments) and, over
the publishers' run, reads the difference in ``INFO commandstats`` of redis-server and
in each node's and redis-server's context switches (``/proc/PID/status``) and CPU time,
each divided by the messages delivered. With ``--strace`` both nodes are also traced
(``strace -c -f``) for their syscalls: that slows them, so take its latency as noise and
its counts as the figure. Counts are repeatable whatever else runs; no quiet needed.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

import cluster
import scenarios
from common import WORK, ensure_mqttbench

PIDS: dict[str, int] = {}


def switches(pid: int) -> tuple[int, int]:
    """(voluntary, involuntary) context switches of every thread of ``pid`` so far."""
    total = [0, 0]
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/status") as f:
            for line in f:
                if line.startswith("voluntary_ctxt_switches"):
                    total[0] += int(line.split()[1])
                elif line.startswith("nonvoluntary_ctxt_switches"):
                    total[1] += int(line.split()[1])
    return total[0], total[1]


def commandstats() -> dict[str, int]:
    info: dict[str, Any] = cluster._redis().info("commandstats")
    return {name.removeprefix("cmdstat_"): int(stat["calls"]) for name, stat in info.items()}


def snapshot() -> dict[str, Any]:
    return {
        "commands": commandstats(),
        **{f"{who} switches": switches(pid) for who, pid in PIDS.items()},
        **{f"{who} cpu": cluster.cpu_seconds(pid) for who, pid in PIDS.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--strace", action="store_true", help="count both nodes' syscalls")
    opts = parser.parse_args()
    ensure_mqttbench()
    two_nodes = cluster.two_nodes

    @contextlib.contextmanager
    def recorded(scen: str = "") -> Iterator[Any]:
        with two_nodes(scen) as (node1, node2, redis_pid):
            PIDS.update({"node 1": node1.pid, "node 2": node2.pid, "redis": redis_pid})
            yield node1, node2, redis_pid

    run = cluster.run_mqttbench
    marks: dict[str, Any] = {}
    traces: list[tuple[str, subprocess.Popen[bytes], Path]] = []

    def measured(broker: Any, label: str, args: list[str], limit: int = 150) -> dict[str, Any]:
        if not label.endswith("-pub"):
            return run(broker, label, args, limit)
        if opts.strace:
            for who in ("node 1", "node 2"):
                out = WORK / f"strace-{who.replace(' ', '')}.txt"
                cmd = ["strace", "-c", "-f", "-o", str(out), "-p", str(PIDS[who])]
                traces.append((who, subprocess.Popen(cmd, stderr=subprocess.DEVNULL), out))
            time.sleep(1.0)  # attached
        marks["before"] = snapshot()
        result = run(broker, label, args, limit)
        marks["after"] = snapshot()
        marks["published"] = int(result.get("pub_total") or 0)
        for _who, proc, _out in traces:
            proc.send_signal(signal.SIGINT)
            proc.wait(10)
        return result

    cluster.two_nodes = recorded  # type: ignore[assignment]
    cluster.run_mqttbench = measured  # type: ignore[assignment]
    s3a = scenarios.SCENARIOS["S3a"]
    d = cluster.cross_node("X3a", s3a.args("ferrymq"), list(s3a.timing))
    before, after = marks["before"], marks["after"]
    lat = d.get("lat_ms") or {}
    print(
        f"delivered p50 {lat.get('p50')} ms, p99 {lat.get('p99')} ms; node 1 accepted "
        f"{d.get('pub_rate')} msg/s"
    )
    # Every message the publishers sent in the counted span (warm-up and tail included).
    messages = max(1, marks["published"])
    print(f"messages counted over: {messages}")
    calls = after["commands"]
    for name in sorted(calls):
        delta = calls[name] - before["commands"].get(name, 0)
        if delta:
            print(f"  redis {name:24s} {delta:9d}  {delta / messages:6.3f} per message")
    for who in PIDS:
        vol = after[f"{who} switches"][0] - before[f"{who} switches"][0]
        invol = after[f"{who} switches"][1] - before[f"{who} switches"][1]
        cpu = after[f"{who} cpu"] - before[f"{who} cpu"]
        print(
            f"  {who:7s} switches vol {vol / messages:.3f} invol {invol / messages:.3f} "
            f"per message; CPU {1e6 * cpu / messages:.1f} µs per message"
        )
    for who, _proc, out in traces:
        lines = out.read_text().splitlines()
        # "% time  seconds  usecs/call  calls  [errors]  syscall", then a "total" row
        total = next((ln.split() for ln in lines if ln.split()[-1:] == ["total"]), None)
        calls = int(total[3]) if total else 0
        print(f"  {who} syscalls: {calls} ({calls / messages:.2f} per message); the most:")
        for ln in lines[2:12]:
            print("    " + ln)


if __name__ == "__main__":
    main()
