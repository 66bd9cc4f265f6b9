"""Turn the driver's JSON lines into the markdown results: medians, ratios, targets, noise.

usage: python bench/report.py bench/results/2026-11-26.jsonl > bench/results/2026-11-26.md
"""

from __future__ import annotations

import json
import statistics
import sys
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

Row = dict[str, Any]
BROKER_ORDER = ("ferrymq", "mosquitto", "amqtt")


def load(path: Path) -> list[Row]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def get(d: Row, path: str) -> Any:
    for key in path.split("."):
        if not isinstance(d, dict) or key not in d:
            return None
        d = d[key]
    return d


def rss_per_conn(d: Row) -> float | None:
    n = d.get("connected") or 0
    if not n or d.get("broker_rss_kb") is None or d.get("broker_rss_before_kb") is None:
        return None
    return (d["broker_rss_kb"] - d["broker_rss_before_kb"]) / n


def one_line(d: Row) -> str:
    keys = (
        "status",
        "recv_rate",
        "pub_rate",
        "connected",
        "connect_time_s",
        "deliver_s",
        "broker_rss_kb",
        "rss_start_kb",
        "rss_after_api_kb",
        "broker_cpu_pct",
        "gen_cpu_pct",
        "other_cpu_pct",
    )
    parts = [f"{k}={d[k]}" for k in keys if d.get(k) is not None]
    lat = d.get("lat_ms") or {}
    if lat:
        parts.append(f"p50={lat.get('p50')} p99={lat.get('p99')}")
    return " ".join(parts)


def fmt(x: float | None, digits: int = 3) -> str:
    if x is None:
        return "-"
    if abs(x) >= 1000:
        return f"{x:,.0f}"
    if abs(x) >= 100:
        return f"{x:.0f}"
    if abs(x) >= 10:
        return f"{x:.1f}"
    return f"{x:.{digits}g}"


class Results:
    """Round runs grouped by (scenario, broker); an interfered run yields to its clean rerun."""

    def __init__(self, rows: list[Row]) -> None:
        self.meta = next((r for r in rows if r.get("phase") == "meta"), {})
        self.knee = next((r for r in rows if r.get("phase") == "knee"), {})
        self.end = next((r for r in rows if r.get("phase") == "end"), {})
        self.sweeps = [r for r in rows if r.get("phase") == "sweep"]
        self.soak = next((r for r in rows if r.get("phase") == "soak"), None)
        slots: dict[tuple[str, str, int], list[Row]] = defaultdict(list)
        for r in rows:
            if r.get("phase") == "round":
                slots[(r["scenario"], r["broker"], r["round"])].append(r)
        self.groups: dict[tuple[str, str], list[Row]] = defaultdict(list)
        self.all_runs = [r for r in rows if r.get("phase") == "round"]
        for (scen, broker, _), runs in sorted(slots.items()):
            clean = [r for r in runs if not r.get("interference")]
            self.groups[(scen, broker)].append((clean or runs)[-1])
        self.brokers = [b for b in BROKER_ORDER if any(k[1] == b for k in self.groups)]

    def values(self, scen: str, broker: str, metric: str | Callable[[Row], Any]) -> list[float]:
        out = []
        for r in self.groups.get((scen, broker), []):
            v = metric(r) if callable(metric) else get(r, metric)
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                out.append(float(v))
        return out

    def median(self, scen: str, broker: str, metric: str | Callable[[Row], Any]) -> float | None:
        vals = self.values(scen, broker, metric)
        return statistics.median(vals) if vals else None

    def cell(self, scen: str, broker: str, metric: str | Callable[[Row], Any]) -> str:
        vals = self.values(scen, broker, metric)
        if not vals:
            return "-"
        med = statistics.median(vals)
        if len(vals) == 1 or min(vals) == max(vals):
            return f"**{fmt(med)}**"
        return f"**{fmt(med)}** [{fmt(min(vals))} - {fmt(max(vals))}]"


def s5b_held(r: Row) -> Any:
    """RSS the retained messages added: after the run, less the broker's before it."""
    after, before = r.get("broker_rss_kb"), r.get("broker_rss_before_kb")
    return after - before if after and before else None


# (scenario, label, metric, ratio wanted: "higher" is better / "lower" / None)
TABLE: list[tuple[str, str, str | Callable[[Row], Any], str | None]] = [
    ("S0", "S0 broker RSS at start, KiB", "rss_start_kb", "lower"),
    ("S0", "S0 broker RSS after the first API request, KiB", "rss_after_api_kb", None),
    ("S0", "S0 time to the API's first answer, s", "api_first_answer_s", None),
    ("S1", "S1 fan-in 20→1, QoS 0: delivered msg/s", "recv_rate", "higher"),
    ("S1", "S1 published (accepted) msg/s", "pub_rate", "higher"),
    ("S1", "S1 delivered/published after 3 s drain", "delivery_ratio", None),
    ("S1", "S1 seconds of the 10 s window without any delivery", "stall_secs", None),
    ("S1", "S1 broker peak RSS, KiB (overload)", "rss_peak_kb", None),
    ("S1", "S1 latency p99 ms (overload)", "lat_ms.p99", "lower"),
    ("S2", "S2 fan-out 1→100: publisher rate (knee) msg/s", "rate_per_pub", None),
    ("S2", "S2 deliveries/s", "recv_rate", "higher"),
    ("S2", "S2 p99 latency ms (at the knee)", "lat_ms.p99", None),
    ("S2", "S2 deliveries lost (expected minus received, after the drain)", "undelivered", None),
    ("S3a", "S3a QoS 1 pairs at 5,000 msg/s: delivered msg/s", "recv_rate", None),
    ("S3a", "S3a latency p50 ms", "lat_ms.p50", "lower"),
    ("S3a", "S3a latency p99 ms", "lat_ms.p99", "lower"),
    ("S3b", "S3b QoS 1 pairs unlimited: delivered msg/s", "recv_rate", "higher"),
    ("S3b", "S3b latency p99 ms (overload)", "lat_ms.p99", "lower"),
    ("S8", "S8 fan-in 8→1, QoS 0, 16 KiB: delivered msg/s", "recv_rate", "higher"),
    ("S8", "S8 latency p99 ms (overload)", "lat_ms.p99", "lower"),
    ("S4", "S4 10,000 idle connections at 1,000/s: connected", "connected", None),
    ("S4", "S4 time to connect all, s", "connect_time_s", "lower"),
    ("S4", "S4 connect latency p99 ms", "connect_ms.p99", "lower"),
    ("S4", "S4 broker RSS per connection, KiB", rss_per_conn, "lower"),
    ("S4", "S4 alive after 5 s hold", "alive_after_hold", None),
    ("S4b", "S4b the same at 2,000/s: connected", "connected", None),
    ("S4b", "S4b connect latency p99 ms", "connect_ms.p99", "lower"),
    ("S5a", "S5a S1 with 100,000 subscriptions: delivered msg/s", "recv_rate", "higher"),
    ("S5a", "S5a time to make the 100,000 subscriptions, s", "s5.subscribe_s", "lower"),
    ("S5a", "S5a broker RSS holding them, KiB", "s5.rss_with_subs_kb", None),
    ("S5b", "S5b 100,000 retained to a `#` subscriber: time s", "deliver_s", "lower"),
    ("S5b", "S5b retained messages received", "received", None),
    ("S5b", "S5b time to publish them (until PUBACK behind), s", "load_s", "lower"),
    ("S5b", "S5b broker RSS holding them, KiB", "broker_rss_kb", "lower"),
    ("S5b", "S5b of which above the fresh broker, KiB", s5b_held, "lower"),
    ("S6a", "S6a QoS 1 to persistent subs, 2,000 msg/s, acked: p50 ms", "lat_ms.p50", "lower"),
    ("S6a", "S6a latency p99 ms", "lat_ms.p99", "lower"),
    ("S6b", "S6b the same with durability batched: p50 ms", "lat_ms.p50", None),
    ("S6b", "S6b latency p99 ms", "lat_ms.p99", None),
    ("S6c", "S6c QoS 1 to persistent subscribers unlimited, acked: msg/s", "recv_rate", "higher"),
    ("S6d", "S6d the same with durability batched: msg/s", "recv_rate", None),
    ("S7", "S7 SIGTERM restart, 100k retained, 1k x 100 queued: downtime s", "downtime_s", "lower"),
    ("S7", "S7 of which shutdown, s", "shutdown_s", "lower"),
    ("S7", "S7 SIGTERM to the CONNACK of a stored session, s", "resume_s", "lower"),
    ("S7", "S7 broker RSS before the restart, KiB", "broker_rss_before_kb", None),
    ("S7", "S7 broker RSS after the restart, KiB", "broker_rss_kb", "lower"),
]


DURABILITY = ("S6a", "S6b", "S6c", "S6d", "S7")
CLUSTER = ("L1", "X1", "L3a", "X3a")

# Cluster mode side by side with standalone (bench/cluster.py): (label, metric, standalone
# scenario, local-on-a-clustered-node scenario, cross-node scenario).
CLUSTER_TABLE: list[tuple[str, str, str, str, str]] = [
    ("fan-in 20→1, QoS 0, unlimited: delivered msg/s", "recv_rate", "S1", "L1", "X1"),
    ("fan-in: published (accepted) msg/s", "pub_rate", "S1", "L1", "X1"),
    ("fan-in: latency p99 ms (overload)", "lat_ms.p99", "S1", "L1", "X1"),
    ("QoS 1 pairs at 5,000 msg/s: delivered msg/s", "recv_rate", "S3a", "L3a", "X3a"),
    ("QoS 1 at 5,000 msg/s: latency p50 ms", "lat_ms.p50", "S3a", "L3a", "X3a"),
    ("QoS 1 at 5,000 msg/s: latency p99 ms", "lat_ms.p99", "S3a", "L3a", "X3a"),
    ("fan-in: ferrymq CPU %, every node", "ferrymq_cpu", "S1", "L1", "X1"),
    ("fan-in: redis-server CPU %", "redis_cpu_pct", "S1", "L1", "X1"),
    ("QoS 1: ferrymq CPU %, every node", "ferrymq_cpu", "S3a", "L3a", "X3a"),
    ("QoS 1: redis-server CPU %", "redis_cpu_pct", "S3a", "L3a", "X3a"),
]


def ferrymq_cpu(d: Row) -> float | None:
    """The CPU the broker used: both nodes' in a cross-node run (node 1 measured by the
    publishers' generator, node 2 by the subscribers')."""
    cpu = d.get("broker_cpu_pct")
    if cpu is None:
        return None
    return cpu + (d.get("node1_cpu_pct") or 0.0)


def cluster_table(res: Results) -> list[str]:
    """ferrymq standalone, local traffic on a clustered node, and cross-node traffic."""
    f = "ferrymq"
    if not any((scen, f) in res.groups for scen in CLUSTER):
        return []
    lines = [
        "| ferrymq | standalone | clustered node, local | cross-node | local/standalone "
        "| cross-node/standalone |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for label, metric, alone, near, far in CLUSTER_TABLE:
        how: str | Callable[[Row], Any] = ferrymq_cpu if metric == "ferrymq_cpu" else metric
        base = res.median(alone, f, how)
        cells = [res.cell(scen, f, how) for scen in (alone, near, far)]
        ratios = [ratio(res.median(scen, f, how), base) for scen in (near, far)]
        lines.append(f"| {label} | " + " | ".join(cells + ratios) + " |")
    return lines


def ratio(a: float | None, b: float | None) -> str:
    if a is None or b is None or b == 0:
        return "-"
    r = a / b
    return f"1/{1 / r:,.0f}" if 0 < r < 0.01 else f"{r:.2f}"


def results_table(res: Results) -> list[str]:
    heads = [*res.brokers]
    others = [b for b in res.brokers if b != "ferrymq"]
    lines = [
        "| scenario | "
        + " | ".join(heads)
        + " | "
        + " | ".join(f"ferrymq/{b}" for b in others)
        + " |",
        "|---|" + "---:|" * (len(heads) + len(others)),
    ]
    for scen, label, metric, better in TABLE:
        if not any((scen, b) in res.groups for b in res.brokers):
            continue
        cells = [res.cell(scen, b, metric) for b in heads]
        f = res.median(scen, "ferrymq", metric)
        ratios = [ratio(f, res.median(scen, b, metric)) if better else "" for b in others]
        lines.append(f"| {label} | " + " | ".join(cells) + " | " + " | ".join(ratios) + " |")
    return lines


def targets(res: Results) -> list[str]:
    f = "ferrymq"
    lines = ["| target | measured | met |", "|---|---|---|"]

    def add(text: str, measured: str, ok: bool | None) -> None:
        lines.append(
            f"| {text} | {measured} | {'-' if ok is None else 'yes' if ok else '**no**'} |"
        )

    start = res.median("S0", f, "rss_start_kb")
    if start is not None:
        add("S0 broker RSS at start ≤ 25 MiB", f"{fmt(start / 1024)} MiB", start <= 25 * 1024)
    for scen, what in (("S1", "S1"), ("S2", "S2"), ("S3b", "S3b"), ("S8", "S8")):
        fm, mm = res.median(scen, f, "recv_rate"), res.median(scen, "mosquitto", "recv_rate")
        if fm is not None and mm:
            add(f"{what} throughput ≥ 0.5x Mosquitto", f"{fm / mm:.2f}x", fm / mm >= 0.5)
    lost = res.values("S2", f, "undelivered")
    if lost:
        add("S2 fan-out with every message delivered", f"max {fmt(max(lost))} lost", max(lost) == 0)
    for metric, what in (("load_s", "time to publish"), ("broker_rss_kb", "RSS holding them")):
        fm, mm = res.median("S5b", f, metric), res.median("S5b", "mosquitto", metric)
        if fm is not None and mm:
            add(f"S5b 100,000 retained: {what} ≤ 1.5x Mosquitto", f"{fm / mm:.2f}x", fm / mm <= 1.5)
    p99 = res.median("S3a", f, "lat_ms.p99")
    rate = res.median("S3a", f, "recv_rate")
    if p99 is not None:
        add(
            "S3a p99 ≤ 1 ms at 5,000 msg/s",
            f"p99 {fmt(p99)} ms at {fmt(rate)} msg/s",
            p99 <= 1.0 and (rate or 0) >= 4950,
        )
    conn = res.values("S4", f, "connected")
    errs = res.values("S4", f, "connect_errors")
    if conn:
        ok = min(conn) >= 10000 and max(errs or [0]) == 0
        add(
            "S4 10,000 connections, no failure",
            f"min {fmt(min(conn))} connected, max {fmt(max(errs or [0]))} errors",
            ok,
        )
    per = res.median("S4", f, rss_per_conn)
    if per is not None:
        add("S4 ≤ 8 KiB RSS per idle connection", f"{per:.1f} KiB", per <= 8.0)
    fm = res.median("S4b", f, "connect_ms.p99")
    mm = res.median("S4b", "mosquitto", "connect_ms.p99")
    if fm is not None and mm:
        add(
            "S4b connect p99 at 2,000/s ≤ 3x Mosquitto",
            f"{fmt(fm)} vs {fmt(mm)} ms: {fm / mm:.2f}x",
            fm / mm <= 3.0,
        )
    s5a, s1 = res.median("S5a", f, "recv_rate"), res.median("S1", f, "recv_rate")
    if s5a is not None and s1:
        add(
            "S5a routing with 100,000 subscriptions within 20 % of S1",
            f"{s5a / s1:.2f}x S1 ({fmt(s5a)} vs {fmt(s1)} msg/s)",
            s5a / s1 >= 0.8,
        )
    s5b = res.values("S5b", f, "deliver_s")
    got = res.values("S5b", f, "received")
    if s5b:
        ok = statistics.median(s5b) < 5.0 and min(got or [0]) >= 100000
        add("S5b 100,000 retained delivered in < 5 s", f"{fmt(statistics.median(s5b))} s", ok)
    down = res.median("S7", f, "downtime_s")
    if down is not None:
        add("S7 SIGTERM restart downtime < 0.3 s with the state", f"{fmt(down)} s", down < 0.3)
    before = res.median("S7", f, "broker_rss_before_kb")
    after = res.median("S7", f, "broker_rss_kb")
    if before and after:
        add(
            "S7 memory after the restart no higher than before",
            f"{fmt(before / 1024)} → {fmt(after / 1024)} MiB",
            after <= before,
        )
    cluster_targets(res, add)
    peak = res.median("S1", f, "rss_peak_kb")
    if peak is not None:
        add(
            "memory bounded under overload (S1, unlimited publishers)",
            f"peak RSS {fmt(peak / 1024)} MiB",
            None,
        )
    if res.soak:
        series = res.soak.get("rss_series_kb") or []
        if len(series) >= 4:
            q = len(series) // 4
            growth = (series[-1] - series[q]) / 1024
            add(
                f"flat memory over a {res.soak.get('duration_s')} s soak at half the max rate",
                f"{fmt(res.soak.get('target_rate'))} msg/s offered, "
                f"{fmt(res.soak.get('recv_rate'))} delivered; RSS {fmt(series[q] / 1024)} → "
                f"{fmt(series[-1] / 1024)} MiB ({growth:+.1f} MiB after the first quarter), "
                f"{res.soak.get('stall_secs')} s without delivery, "
                f"seq_gaps {res.soak.get('seq_gaps')}",
                growth < 5.0,
            )
    return lines


def cluster_targets(res: Results, add: Callable[[str, str, bool | None], None]) -> None:
    """The cluster targets of issue 11, against standalone S1 of the same run."""
    f = "ferrymq"
    s1 = res.median("S1", f, "recv_rate")
    l1 = res.median("L1", f, "recv_rate")
    if l1 is not None and s1:
        add(
            "cluster: local traffic on a clustered node ≥ 90 % of standalone (S1 shape)",
            f"{l1 / s1:.2f}x ({fmt(l1)} vs {fmt(s1)} msg/s)",
            l1 / s1 >= 0.9,
        )
    p99 = res.median("X3a", f, "lat_ms.p99")
    rate = res.median("X3a", f, "recv_rate")
    if p99 is not None:
        add(
            "cluster: cross-node QoS 1 p99 ≤ 2 ms at 5,000 msg/s",
            f"p99 {fmt(p99)} ms at {fmt(rate)} msg/s",
            p99 <= 2.0 and (rate or 0) >= 4950,
        )
    x1 = res.median("X1", f, "recv_rate")
    if x1 is not None and s1:
        add(
            "cluster: cross-node throughput ≥ 40 % of standalone S1",
            f"{x1 / s1:.2f}x ({fmt(x1)} vs {fmt(s1)} msg/s)",
            x1 / s1 >= 0.4,
        )


def noise(res: Results) -> list[str]:
    lines = [
        "| broker | scenario | runs | statuses | gen CPU % (max) | broker CPU % (median) | "
        "other CPU % (max) | steal % (max) | reruns |",
        "|---|---|---:|---|---:|---:|---:|---:|---:|",
    ]
    for b in res.brokers:
        for scen in (
            "S0",
            "S1",
            "S2",
            "S3a",
            "S3b",
            "S8",
            "S4",
            "S4b",
            "S5a",
            "S5b",
            *DURABILITY,
            *CLUSTER,
        ):
            runs = res.groups.get((scen, b))
            if not runs:
                continue
            statuses: dict[str, int] = defaultdict(int)
            for r in runs:
                statuses[str(r.get("status"))] += 1
            gen = res.values(scen, b, "gen_cpu_pct")
            cpu = res.values(scen, b, "broker_cpu_pct")
            other = res.values(scen, b, "other_cpu_pct")
            steal = [max(get(r, "cpu.steal_pct") or [0]) for r in runs]
            reruns = sum(
                1
                for r in res.all_runs
                if r["broker"] == b and r["scenario"] == scen and r.get("attempt") == 2
            )
            st = ", ".join(f"{k} {v}" for k, v in statuses.items())
            lines.append(
                f"| {b} | {scen} | {len(runs)} | {st} | {fmt(max(gen) if gen else None)} | "
                f"{fmt(statistics.median(cpu) if cpu else None)} | "
                f"{fmt(max(other) if other else None)} | {fmt(max(steal))} | {reruns} |"
            )
    return lines


def sweep_table(res: Results) -> list[str]:
    if not res.sweeps:
        return []
    lines = [
        "| broker | publisher msg/s | deliveries/s | p99 ms | broker CPU % | delivered |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in res.sweeps:
        lines.append(
            f"| {r['broker']} | {fmt(r.get('rate'))} | {fmt(r.get('recv_rate'))} | "
            f"{fmt(get(r, 'lat_ms.p99'))} | {fmt(r.get('broker_cpu_pct'))} | "
            f"{fmt(r.get('delivery_ratio'))} |"
        )
    return lines


def render(rows: list[Row], source: str) -> str:
    res = Results(rows)
    m = res.meta.get("machine", {})
    v = res.meta.get("versions", {})
    knees = ", ".join(f"{k[5:]} {val}" for k, val in res.knee.items() if k.startswith("knee_"))
    elapsed = res.end.get("elapsed_s")
    out = [
        f"# ferrymq benchmark results, {res.meta.get('date', '?')}",
        "",
        f"- Machine: {m.get('cpus')} CPUs ({m.get('model')}), {m.get('mem_gib')} GiB RAM, "
        f"kernel {m.get('kernel')}; broker on CPU {m.get('broker_cpu')}, "
        f"generator on CPU {m.get('gen_cpu')}.",
        f"- Brokers: ferrymq {v.get('ferrymq')} (Python {v.get('python')}, uvloop "
        f"{v.get('uvloop')}, {v.get('build', 'pure Python')}), Mosquitto {v.get('mosquitto')}, "
        f"amqtt {v.get('amqtt')}.",
        f"- Load generator: mqttbench (C, epoll); S5 helpers: bench/s5.py; S6: "
        f"`ferrymq bench` (mqttbench has no persistent sessions); S7: bench/durable.py. "
        f"Mosquitto runs S6 and S7 with persistence on. "
        f"Rounds: {res.meta.get('rounds')}, brokers alternated, a fresh broker for every "
        f"measurement; S2 knees (publisher msg/s): {knees or '-'}.",
        f"- Raw data: `{source}`"
        + (f"; the whole run took {elapsed / 60:.1f} min." if elapsed else "."),
        "",
        "Values are medians over the rounds, [min - max] when they differ. Ratios are "
        "ferrymq's median over the other broker's, from this run (for latency, time and "
        "memory rows a ratio below 1 favours ferrymq).",
        "",
        *results_table(res),
        "",
        "## Targets",
        "",
        *targets(res),
        "",
        "## Noise and self-checks",
        "",
        "`gen CPU` near 100 % would mean the generator, not the broker, was the limit; "
        "`other CPU` is CPU used by other programs during the run (above 15 % the run is "
        "repeated once and the clean rerun is used).",
        "",
        *noise(res),
    ]
    clustered = cluster_table(res)
    if clustered:
        out += [
            "",
            "## Cluster mode (two nodes and redis-server, bench/cluster.py)",
            "",
            "Node 1 runs on the standalone broker's core (CPU "
            f"{m.get('broker_cpu')}), node 2 beside it except in X3a (beside the "
            "generator, see bench/cluster.py); redis-server runs beside the generator. Local: "
            "publishers and subscribers on node 1; cross-node: publishers on node 1, "
            "subscribers on node 2. Ratios against standalone ferrymq of this run.",
            "",
            *clustered,
        ]
    sweep = sweep_table(res)
    if sweep:
        out += ["", "## S2 sweep (3 s steps, doubling until deliveries/s stop growing)", "", *sweep]
    return "\n".join(out) + "\n"


def main() -> int:
    path = Path(sys.argv[1])
    print(render(load(path), path.name), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
