"""The cluster scenarios: two ferrymq nodes joined through a redis-server the harness starts.

- X1 cross-node fan-in: S1's shape (20 publishers, QoS 0, unlimited), the
  publishers on node 1, the subscriber on node 2;
- X3a cross-node QoS 1: S3a's 50 pairs at 5,000 msg/s in all, every publisher
  on node 1, every subscriber on node 2;
- L1 / L3a: S1 and S3a with publishers and subscribers on node 1 of the
  same two-node cluster (local traffic on a clustered node).

Where each process runs (2 cores): node 1, which the publishers (and in L1 / L3a
every client) connect to, is pinned to BROKER_CPU, the core a standalone broker
gets; redis-server runs beside the generator on GEN_CPU. Node 2 joins node 1 on
BROKER_CPU for the throughput scenarios (X1, L1, L3a), so the cluster is
measured on the CPU budget of one standalone broker, and runs on GEN_CPU for
the latency scenario X3a: there both nodes work on every message (each reads
and writes MQTT and Redis), and on one shared core the tail is each process
waiting for the other's time slice (94 % of the core busy at 5,000 msg/s),
which is the machine's, not the message path's; each node on a core of its
own is what a cluster of machines has. CLUSTER_NODE2_CPU sets node 2's core
for every scenario, CLUSTER_REDIS_CPU redis-server's (X3a leaves the generator's
core 87-99 % busy with node 2, Redis and both generator processes; Redis beside
node 1 balances the two cores). mqttbench drives one port,
so a cross-node run is two generator processes: the subscribers first (on
node 2), then, once their routes are in Redis, the publishers (on node 1),
whose publishing covers the subscribers' whole measurement window (the
subscribers' process keeps idle publishers of the same indexes: mqttbench
counts only messages of publisher indexes it has). The
subscribers' side gives the figures (delivered msg/s, latency: one monotonic
clock on one machine); the publishers' side adds what node 1 accepted and its
CPU. Cross-node runs are not repeated for interference: the other node, Redis
and the other generator process count as other CPU there.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from common import (
    BROKERS,
    GEN_CPU,
    HOST,
    WORK,
    RunningBroker,
    log,
    port_open,
    run_mqttbench,
    start_broker,
    stop_broker,
    stop_process,
)

REDIS_PORT = 18838
NODE2_PORT, NODE2_API_PORT = 18836, 18837
# Where node 2 runs (see the module docstring); CLUSTER_NODE2_CPU for every scenario.
NODE2_CPU = os.environ.get("CLUSTER_NODE2_CPU", "")
REDIS_CPU = os.environ.get("CLUSTER_REDIS_CPU", "")  # where redis-server runs (see above)
NODE2_OWN_CORE = ("X3a",)  # latency: node 2 beside the generator, not beside node 1
CROSS = {"X1": "S1", "X3a": "S3a"}  # cross-node scenario -> the standalone one it mirrors
LOCAL = {"L1": "S1", "L3a": "S3a"}
SCENARIOS = (*CROSS, *LOCAL)


def redis_server() -> str:
    found = shutil.which("redis-server")
    if found is None:
        raise SystemExit("redis-server is missing: apt-get install redis-server")
    return found


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` so far."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextmanager
def two_nodes(scen: str = "") -> Iterator[tuple[RunningBroker, RunningBroker, int]]:
    """redis-server, then two ferrymq nodes joined through it; all stopped afterwards."""
    if port_open(REDIS_PORT):
        raise RuntimeError(f"port {REDIS_PORT} is already in use; stop what listens there")
    WORK.mkdir(parents=True, exist_ok=True)
    with open(WORK / "redis.log", "ab") as logf:
        redis = subprocess.Popen(
            [
                *("taskset", "-c", REDIS_CPU or GEN_CPU, redis_server()),
                *("--port", str(REDIS_PORT), "--bind", HOST, "--save", "", "--appendonly", "no"),
            ],
            stdout=logf,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    nodes: list[RunningBroker] = []
    try:
        deadline = time.monotonic() + 10
        while not port_open(REDIS_PORT):
            if time.monotonic() > deadline or redis.poll() is not None:
                raise RuntimeError("redis-server did not start; see bench/work/redis.log")
            time.sleep(0.05)
        url = f"redis://{HOST}:{REDIS_PORT}/0"
        base = BROKERS["ferrymq"]
        for i, (port, api) in enumerate(((base.port, None), (NODE2_PORT, NODE2_API_PORT)), 1):
            flags = ["--node-name", f"bench{i}@127.0.0.1", "--cluster-redis-url", url]
            if api is not None:
                flags += ["--api-port", str(api)]
            own = GEN_CPU if scen in NODE2_OWN_CORE else ""
            cpu = (NODE2_CPU or own) if api is not None else ""
            spec = dataclasses.replace(base, port=port, flags=flags, data_dir=None, cpu=cpu)
            nodes.append(start_broker(spec))
        wait_joined(2)
        yield nodes[0], nodes[1], redis.pid
    finally:
        for node in nodes:
            stop_broker(node)
        stop_process(redis, 5)


def _redis() -> Any:
    import redis

    return redis.Redis(host=HOST, port=REDIS_PORT)


def wait_joined(count: int, timeout: float = 20.0) -> None:
    r = _redis()
    deadline = time.monotonic() + timeout
    while len(r.keys("ferrymq:alive:*")) < count:
        if time.monotonic() > deadline:
            raise RuntimeError(f"the {count} cluster nodes did not join in {timeout} s")
        time.sleep(0.1)
    time.sleep(1.0)  # each node's first membership read has seen the other


def wait_routes(node: str, count: int, timeout: float = 30.0) -> bool:
    """Whether ``node``'s route set in Redis reached ``count`` filters in time."""
    r = _redis()
    deadline = time.monotonic() + timeout
    while r.scard(f"ferrymq:node-routes:{node}") < count:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _set(args: list[str], flag: str, value: str) -> list[str]:
    """``args`` with the value of ``flag`` set to ``value``."""
    out = list(args)
    out[out.index(flag) + 1] = value
    return out


def _idle_publishers(args: list[str]) -> list[str]:
    """``args`` for the subscribers' process: mqttbench counts only messages from publisher
    indexes it has itself, so it keeps as many publishers, idle (one message per 100 s)
    and on topics nobody subscribes to; the real ones run in the other process."""
    out: list[str] = []
    skip = False
    for i, arg in enumerate(args):
        if skip:
            skip = False
            continue
        if arg in ("-r", "-R"):
            skip = True
            continue
        out.append("idle/%i" if i > 0 and args[i - 1] == "-t" else arg)
    return [*out, "-r", "0.01"]


def cross_node(scen: str, base: list[str], timing: list[str]) -> dict[str, Any]:
    """Publishers on node 1, subscribers on node 2 (see the module docstring)."""
    subs = int(base[base.index("-S") + 1])
    filters = 1 if "%i" not in base[base.index("-f") + 1] else subs
    sub_args = [*_idle_publishers(base), *timing]
    # Publishing starts about a second after the subscribers' clock and runs two seconds
    # past their window, so the window sees steady cross-node traffic only.
    pub_timing = _set(_set(timing, "-w", "1"), "-d", str(float(_get(timing, "-d")) + 3))
    pub_args = [*_set(base, "-S", "0"), *pub_timing]
    with two_nodes(scen) as (node1, node2, redis_pid):
        result: dict[str, Any] = {}

        def subscribers() -> None:
            result.update(run_mqttbench(node2, scen, [*sub_args, "--settle", "0"]))

        t = threading.Thread(target=subscribers)
        t.start()
        routed = wait_routes("bench2@127.0.0.1", filters)
        time.sleep(0.5)  # the route change reached node 1's replica
        started, redis_cpu = time.monotonic(), cpu_seconds(redis_pid)
        pub = run_mqttbench(node1, scen + "-pub", [*pub_args, "--settle", "0"])
        redis_cpu_pct = 100 * (cpu_seconds(redis_pid) - redis_cpu) / (time.monotonic() - started)
        t.join()
        if not routed:
            result["status"] = "not_routed"
        result.update(
            cluster="cross-node",
            pub_rate=pub.get("pub_rate"),
            pub_status=pub.get("status"),
            node1_cpu_pct=pub.get("broker_cpu_pct"),
            node1_rss_peak_kb=pub.get("rss_peak_kb"),
            pub_gen_cpu_pct=pub.get("gen_cpu_pct"),
            redis_cpu_pct=round(redis_cpu_pct, 1),  # over the publishers' whole run
        )
        log(f"  node 1 accepted {pub.get('pub_rate')} msg/s at {pub.get('broker_cpu_pct')} % CPU")
        return result


def local(scen: str, args: list[str]) -> dict[str, Any]:
    """Publishers and subscribers on node 1 of a two-node cluster."""
    with two_nodes(scen) as (node1, _node2, _redis):
        d = run_mqttbench(node1, scen, args)
        d["cluster"] = "local"
        return d


def _get(args: list[str], flag: str) -> str:
    return args[args.index(flag) + 1]
