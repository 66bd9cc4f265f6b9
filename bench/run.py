"""Run the benchmark: ferrymq, Mosquitto and amqtt side by side, one after the other.

usage: python bench/run.py [--rounds 3] [--quick] [--brokers ferrymq,mosquitto,amqtt]
                           [--scenarios S0,S1,S2,S3a,S3b,S8,S4,S4b,S5a,S5b,S6a,S6b,S6c,S6d,S7,
                                        X1,X3a,L1,L3a]
                           [--soak 300]

Each measurement starts its broker fresh, pinned to BROKER_CPU (default 1),
with the C load generator pinned to GEN_CPU (default 0), and stops it by pid
afterwards, so one scenario's backlog cannot leak into the next. The S2
publisher rate is the knee of a per-broker sweep run first. Within a round the
brokers alternate, and the broker that goes first flips every round. A run
disturbed by other programs (``other_cpu_pct`` > 15) is repeated once while
the rerun budget lasts. X1, X3a, L1 and L3a are ferrymq's cluster scenarios
(bench/cluster.py: two nodes and a redis-server started here). Raw JSON lines
and the markdown report (medians, ratios, targets) go to ``--out``
(bench/results/).

Settings from the environment: MQTTBENCH (generator binary), MQTTBENCH_SRC
(its source, built when the binary is missing), MOSQUITTO, AMQTT_VENV,
GEN_CPU, BROKER_CPU, BENCH_WORK, FERRYMQ_BENCH_FLAGS (extra broker flags).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import IO, Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import cluster
import report
import scenarios
from common import (
    API_PORT,
    BENCH,
    BROKERS,
    GEN_CPU,
    HOST,
    MQTTBENCH,
    ROOT,
    RssSampler,
    RunningBroker,
    ensure_amqtt,
    ensure_mosquitto,
    ensure_mqttbench,
    log,
    machine,
    read_rss_kb,
    run_mqttbench,
    spawn_broker,
    start_broker,
    stop_broker,
    versions,
)

INTERFERENCE_PCT = 15.0
# A latency row's p99 is a few dozen slowest messages: a hypervisor that takes a core away
# for milliseconds (steal) decides it for either broker, so such a run is repeated too.
STEAL_PCT = 1.0
LATENCY = frozenset({"S3a", "S4", "S4b", "S6a", "S6b"})
MAX_RERUNS = 6
SWEEP_START = 100
SWEEP_STEPS = 10
S5_TIMEOUT = {"amqtt": 40.0}  # amqtt needs minutes for 100k subscriptions; cap its attempt
# Durability scenarios: ferrymq flags, and whether Mosquitto (persistence on) runs it too.
# S6a-d: QoS 1 to 10 persistent subscribers (10 publisher/subscriber pairs, 64 B);
# S7: SIGTERM restart with 100,000 retained messages and 1,000 sessions x 100 messages.
DURABLE: dict[str, tuple[list[str], bool]] = {
    "S6a": (["--durability", "acked"], True),
    "S6b": (["--durability", "batched"], False),
    "S6c": (["--durability", "acked"], True),
    "S6d": (["--durability", "batched"], False),
    "S7": ([], True),
}
S6_INTERVAL_MS = {"S6a": "5", "S6b": "5", "S6c": "0", "S6d": "0"}  # 5 ms: 2,000 msg/s in all
S6_SECONDS = 8
START_SETTLE_S = 1.0  # S0: how long a started broker is left alone before its RSS is read


class Campaign:
    def __init__(self, out: IO[str], rounds: int) -> None:
        self.out = out
        self.rounds = rounds
        self.reruns = 0

    def emit(self, d: dict[str, Any]) -> None:
        self.out.write(json.dumps(d, separators=(",", ":")) + "\n")
        self.out.flush()

    # --- S2 sweep ---------------------------------------------------------

    def sweep(self, name: str) -> int:
        """Doubling ladder of S2 publisher rates on one broker, plus one step halfway past the
        best when the next doubling fell off. The knee is the lowest rate reaching 95 % of the
        best deliveries/s among the steps that did not stall."""
        broker = start_broker(BROKERS[name])
        steps: list[tuple[int, float, bool]] = []
        try:
            rate = SWEEP_START
            best = 0.0
            for _ in range(SWEEP_STEPS):
                got, ok = self._sweep_step(broker, name, rate)
                steps.append((rate, got, ok))
                if got <= 0 or broker.proc.poll() is not None or got < best * 1.10:
                    break
                best = got
                rate *= 2
            top_rate, top, _ = max(steps, key=lambda s: s[1] if s[2] else -1)
            last_rate, last, _ = steps[-1]
            if last < top and last_rate == 2 * top_rate and broker.proc.poll() is None:
                mid = top_rate * 3 // 2
                got, ok = self._sweep_step(broker, name, mid)
                steps.append((mid, got, ok))
        finally:
            stop_broker(broker)
        good = [(rate, got) for rate, got, ok in steps if ok and got > 0]
        if not good:
            return SWEEP_START
        top = max(got for _, got in good)
        return min(rate for rate, got in good if got >= 0.95 * top)

    def _sweep_step(self, broker: RunningBroker, name: str, rate: int) -> tuple[float, bool]:
        d = run_mqttbench(broker, "S2-sweep", scenarios.sweep_args(rate), limit=60)
        got = float(d.get("recv_rate") or 0)
        d.update(broker=name, phase="sweep", rate=rate)
        self.emit(d)
        p99 = d.get("lat_ms", {}).get("p99")
        log(f"{name:9s} S2 sweep {rate:>6d}/s -> {got:>10,.0f} deliveries/s (p99 {p99} ms)")
        return got, d.get("status") == "ok"

    # --- one measurement --------------------------------------------------

    def measure(self, name: str, scen: str, rnd: int) -> dict[str, Any]:
        extra = {"broker": name, "phase": "round", "round": rnd, "scenario": scen}
        spec = BROKERS[name]
        if scen in cluster.SCENARIOS:
            return self._cluster(name, scen, extra) if name == "ferrymq" else {}
        if scen in DURABLE:
            flags, with_mosquitto = DURABLE[scen]
            if name == "amqtt" or (name == "mosquitto" and not with_mosquitto):
                return {}
            spec = dataclasses.replace(spec, flags=flags, persist=True)
        for attempt in (1, 2):
            broker = start_broker(spec)
            try:
                d = self._run(broker, scen)
                d["broker_alive_after"] = broker.proc.poll() is None
            finally:
                stop_broker(broker)
            d.update(extra, attempt=attempt)
            other = float(d.get("other_cpu_pct") or 0)
            steal = max((d.get("cpu") or {}).get("steal_pct") or [0.0])
            stolen = scen in LATENCY and steal > STEAL_PCT
            d["interference"] = other > INTERFERENCE_PCT or stolen
            self.emit(d)
            log(f"{name:9s} {scen:4s} r{rnd} {report.one_line(d)}")
            if not d["interference"] or attempt == 2 or self.reruns >= MAX_RERUNS:
                return d
            self.reruns += 1
            if stolen:
                log(f"  the hypervisor took {steal:.1f} % of a CPU during the run: repeating it")
            else:
                log(f"  other programs used {other:.0f} % CPU during the run: repeating it")
        return d

    def _cluster(self, name: str, scen: str, extra: dict[str, Any]) -> dict[str, Any]:
        """One cluster measurement (bench/cluster.py); a local one is repeated once when
        other programs disturbed it, as standalone ones are."""
        for attempt in (1, 2):
            if scen in cluster.CROSS:
                mirrored = scenarios.SCENARIOS[cluster.CROSS[scen]]
                d = cluster.cross_node(scen, mirrored.args(name), list(mirrored.timing))
                d["interference"] = False
            else:
                d = cluster.local(scen, scenarios.SCENARIOS[cluster.LOCAL[scen]].full_args(name))
                d["interference"] = float(d.get("other_cpu_pct") or 0) > INTERFERENCE_PCT
            d.update(extra, attempt=attempt)
            self.emit(d)
            log(f"{name:9s} {scen:4s} r{extra['round']} {report.one_line(d)}")
            if not d["interference"] or attempt == 2 or self.reruns >= MAX_RERUNS:
                return d
            self.reruns += 1
            log("  other programs disturbed the run: repeating it")
        return d

    def _run(self, broker: RunningBroker, scen: str) -> dict[str, Any]:
        name = broker.spec.name
        if scen == "S0":
            return self._start_rss(broker)
        if scen in scenarios.SCENARIOS:
            return run_mqttbench(broker, scen, scenarios.SCENARIOS[scen].full_args(name))
        if scen == "S5a":
            return self._s5_routing(broker)
        if scen == "S5b":
            return self._s5_retained(broker)
        if scen in S6_INTERVAL_MS:
            return self._durable_qos1(broker, scen)
        if scen == "S7":
            return self._restart(broker)
        raise ValueError(scen)

    def _start_rss(self, broker: RunningBroker) -> dict[str, Any]:
        """Memory of a fresh broker with an empty data directory: RSS once it has been left
        alone for START_SETTLE_S after its MQTT port accepted; for ferrymq, also after its
        management API has answered ``GET /status`` with running (its first use)."""
        time.sleep(START_SETTLE_S)
        d: dict[str, Any] = {"label": "S0", "rss_start_kb": read_rss_kb(broker.pid)}
        if broker.spec.name != "ferrymq":
            return {**d, "status": "ok"}
        url = f"http://{HOST}:{API_PORT}/status"
        deadline = time.monotonic() + 20
        asked = time.monotonic()
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(url, timeout=10) as r:
                    if r.status == 200:
                        break
            except OSError:  # 503 while starting, or not listening yet
                time.sleep(0.05)
        else:
            return {**d, "status": "api_not_running"}
        d["api_first_answer_s"] = round(time.monotonic() - asked, 3)
        time.sleep(0.3)
        return {**d, "status": "ok", "rss_after_api_kb": read_rss_kb(broker.pid)}

    def _durable_qos1(self, broker: RunningBroker, scen: str) -> dict[str, Any]:
        """QoS 1 from 10 publishers to 10 persistent subscribers, with ``ferrymq bench``
        (mqttbench has no persistent sessions), pinned to the generator's CPU."""
        gen = ["taskset", "-c", GEN_CPU, sys.executable, "-m", "ferrymq", "bench"]
        common = ["-p", str(broker.spec.port), "-c", "10", "-q", "1", "-t", "dur/%i"]
        common += ["-w", "1", "--json", "--quiet", "--connect-timeout", "20"]
        sub = subprocess.Popen(
            [*gen, "sub", *common, "--no-clean", "-d", str(S6_SECONDS + 5)],
            stdout=subprocess.PIPE,
            text=True,
        )
        time.sleep(2.0)  # subscribers connected and subscribed
        sampler = RssSampler(broker.pid)
        sampler.start()
        rate = ["-I", S6_INTERVAL_MS[scen], "-s", "64", "-d", str(S6_SECONDS)]
        pub = subprocess.run(
            [*gen, "pub", *common, *rate],
            capture_output=True,
            text=True,
            check=False,
            timeout=S6_SECONDS + 60,
        )
        out, _ = sub.communicate(timeout=S6_SECONDS + 60)
        rss = sampler.stop()
        try:
            p = json.loads(pub.stdout.strip().splitlines()[-1])
            s = json.loads(out.strip().splitlines()[-1])
        except (IndexError, ValueError):
            return {"label": scen, "status": "generator_failed"}
        ok = not p.get("failed") and not s.get("failed") and s["received"] >= p["acked"]
        return {
            "label": scen,
            "status": "ok" if ok else "lost",
            "recv_rate": s.get("recv_rate"),
            "pub_rate": p.get("acked_rate"),
            "lat_ms": s.get("lat_ms"),
            "sent": p.get("sent"),
            "acked": p.get("acked"),
            "received": s.get("received"),
            "rss_peak_kb": max(rss) if rss else None,
        }

    def _restart(self, broker: RunningBroker) -> dict[str, Any]:
        """Build the state, SIGTERM the broker, start it again on the same data: downtime
        until a CONNACK, and memory before and after."""
        helper = ["taskset", "-c", GEN_CPU, sys.executable, str(BENCH / "durable.py")]
        port = ["--port", str(broker.spec.port)]
        r = subprocess.run(
            [*helper, "state", *port], capture_output=True, text=True, check=False, timeout=600
        )
        lines = r.stdout.strip().splitlines()
        built = json.loads(lines[-1]) if lines else {"status": "helper_failed"}
        if built.get("status") != "ok":
            return {"label": "S7", "status": f"state_{built.get('status')}", "state": built}
        time.sleep(2.0)  # let the broker settle (and commit) before measuring
        rss_before = read_rss_kb(broker.pid)
        probe = subprocess.Popen([*helper, "probe", *port], stdout=subprocess.PIPE, text=True)
        assert probe.stdout is not None
        probe.stdout.readline()  # the probe runs
        stopped = time.time()
        broker.proc.terminate()
        broker.proc.wait(timeout=60)
        exited = time.time()
        broker.proc = spawn_broker(broker.spec, reuse=True)
        out, _ = probe.communicate(timeout=180)
        lines = out.strip().splitlines()
        d: dict[str, Any] = json.loads(lines[-1]) if lines else {"status": "probe_failed"}
        time.sleep(1.0)
        up = d.get("up_at")
        resumed = d.get("resumed_at")
        d.update(
            resume_s=round(resumed - stopped, 3) if resumed else None,
            label="S7",
            state=built,
            shutdown_s=round(exited - stopped, 3),
            downtime_s=round(up - stopped, 3) if up else None,
            startup_s=round(up - exited, 3) if up else None,
            broker_rss_before_kb=rss_before,
            broker_rss_kb=read_rss_kb(broker.pid),
        )
        return d

    def _s5_routing(self, broker: RunningBroker) -> dict[str, Any]:
        """Hold 100,000 subscriptions, then run S1 next to them."""
        timeout = S5_TIMEOUT.get(broker.spec.name, 90.0)
        rss0 = read_rss_kb(broker.pid)
        holder = subprocess.Popen(
            [
                "taskset",
                "-c",
                GEN_CPU,
                sys.executable,
                str(BENCH / "s5.py"),
                "subs",
                "--port",
                str(broker.spec.port),
                "--timeout",
                str(timeout),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            line = holder.stdout.readline() if holder.stdout else ""
            info = json.loads(line) if line.strip() else {"status": "helper_failed"}
            if info.get("status") != "ok":
                return {"label": "S5a", "status": f"subscribe_{info.get('status')}", "s5": info}
            info["rss_with_subs_kb"] = read_rss_kb(broker.pid)
            info["rss_before_subs_kb"] = rss0
            d = run_mqttbench(broker, "S5a", scenarios.SCENARIOS["S1"].full_args(broker.spec.name))
            d["s5"] = info
            return d
        finally:
            if holder.stdin:
                holder.stdin.close()
            try:
                holder.wait(timeout=10)
            except subprocess.TimeoutExpired:
                holder.kill()
                holder.wait()

    def _s5_retained(self, broker: RunningBroker) -> dict[str, Any]:
        """Publish 100,000 retained topics, then time a ``#`` subscriber receiving them."""
        timeout = S5_TIMEOUT.get(broker.spec.name, 60.0)
        rss0 = read_rss_kb(broker.pid)
        sampler = RssSampler(broker.pid)
        sampler.start()
        r = subprocess.run(
            [
                "taskset",
                "-c",
                GEN_CPU,
                sys.executable,
                str(BENCH / "s5.py"),
                "retained",
                "--port",
                str(broker.spec.port),
                "--timeout",
                str(timeout),
            ],
            capture_output=True,
            text=True,
            check=False,
            timeout=3 * timeout + 30,
        )
        rss = sampler.stop()
        lines = r.stdout.strip().splitlines()
        d: dict[str, Any] = json.loads(lines[-1]) if lines else {"status": "helper_failed"}
        d.update(label="S5b", broker_rss_before_kb=rss0, broker_rss_kb=read_rss_kb(broker.pid))
        if rss:
            d["rss_peak_kb"] = max(rss)
        return d

    # --- soak -------------------------------------------------------------

    def soak(self, seconds: int, s1_rate: float) -> None:
        """ferrymq under S1's shape at half its maximum rate; RSS sampled every 5 s."""
        rate = max(1000, int(s1_rate / 2))
        broker = start_broker(BROKERS["ferrymq"])
        try:
            sampler = RssSampler(broker.pid, interval=5.0)
            sampler.start()
            args = [
                *scenarios.S1_ARGS[:-2],
                "-R",
                str(rate),
                "-d",
                str(seconds),
                "-w",
                "5",
                "--drain",
                "3",
                "--settle",
                "15",
                "--connect-timeout",
                "20",
            ]
            d = run_mqttbench(broker, "SOAK", args, limit=seconds + 90)
            d["rss_series_kb"] = sampler.stop()
        finally:
            stop_broker(broker)
        d.update(broker="ferrymq", phase="soak", scenario="SOAK", target_rate=rate)
        self.emit(d)
        log(f"ferrymq   SOAK {report.one_line(d)}")


def _shown_path(path: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(ROOT.resolve()))
    except ValueError:
        return Path(path).name


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="one round, no reruns")
    ap.add_argument("--brokers", default="ferrymq,mosquitto,amqtt")
    ap.add_argument(
        "--scenarios", default="S0,S1,S2,S3a,S3b,S8,S4,S4b,S5a,S5b,S6a,S6b,S6c,S6d,S7,X1,X3a,L1,L3a"
    )
    ap.add_argument("--soak", type=int, default=0, help="seconds of ferrymq soak (0: none)")
    ap.add_argument("--s2-rate", action="append", default=[], help="broker=rate: skip its sweep")
    ap.add_argument("--out", type=Path, default=BENCH / "results")
    ap.add_argument("--name", help="results file stem (default: today's date)")
    a = ap.parse_args()
    rounds = 1 if a.quick else a.rounds
    brokers = [b for b in a.brokers.split(",") if b]
    scens = [s for s in a.scenarios.split(",") if s]
    ensure_mqttbench()
    if "mosquitto" in brokers:
        ensure_mosquitto()
    if "amqtt" in brokers:
        ensure_amqtt()
    stem = a.name or time.strftime("%Y-%m-%d") + ("-quick" if a.quick else "")
    a.out.mkdir(parents=True, exist_ok=True)
    jsonl = a.out / f"{stem}.jsonl"
    meta = {
        "phase": "meta",
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
        "machine": machine(),
        "versions": versions(),
        "rounds": rounds,
        "brokers": brokers,
        "scenarios": scens,
        # Relative to the repository when it lives there: results carry no local paths.
        "generator": _shown_path(MQTTBENCH),
    }
    started = time.monotonic()
    with open(jsonl, "w") as out:
        camp = Campaign(out, rounds)
        if a.quick:
            camp.reruns = MAX_RERUNS
        camp.emit(meta)
        for kv in a.s2_rate:
            b, _, v = kv.partition("=")
            scenarios.KNEE[b] = int(v)
        if "S2" in scens:
            for b in brokers:
                if b not in scenarios.KNEE:
                    scenarios.KNEE[b] = camp.sweep(b)
                    log(f"{b}: S2 knee at {scenarios.KNEE[b]} msg/s")
        camp.emit({"phase": "knee", **{f"knee_{b}": k for b, k in scenarios.KNEE.items()}})
        s1_best = 0.0
        for rnd in range(1, rounds + 1):
            order = brokers if rnd % 2 else brokers[::-1]
            for scen in scens:
                for b in order:
                    d = camp.measure(b, scen, rnd)
                    if b == "ferrymq" and scen == "S1":
                        s1_best = max(s1_best, float(d.get("recv_rate") or 0))
        if a.soak and "ferrymq" in brokers:
            camp.soak(a.soak, s1_best or 20000.0)
        camp.emit({"phase": "end", "elapsed_s": round(time.monotonic() - started, 1)})
    md = a.out / f"{stem}.md"
    md.write_text(report.render(report.load(jsonl), jsonl.name))
    log(f"done in {(time.monotonic() - started) / 60:.1f} min: {md} and {jsonl}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
