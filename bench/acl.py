"""The ACL benchmark: S1 (fan-in 20 -> 1, QoS 0, unlimited rate) with and without rules.

usage: python bench/acl.py [--rounds 3] [--quick] [--variants none,rules,checked]
                           [--out bench/results/acl-DATE.md]
       python bench/acl.py --in-process [--rounds 7]

Three variants of ferrymq, run in alternating rounds on a fresh broker each
time (so a noisy machine spreads over all of them), medians reported:

- ``none``: no ACL rule at all;
- ``rules``: 1,000 rules (clientid, username and all-clients; pub and sub;
  allow and deny; with and without placeholders), none of which can narrow
  S1's ``bench/#`` subscription: the common path, where deliveries pay one
  integer comparison and each PUBLISH a cached ACL decision;
- ``checked``: the same 1,000 rules plus one all-clients ``sub`` deny rule on
  ``bench/private/#``, which the ``bench/#`` subscriber could receive: every
  delivered message's topic is checked (a cached decision per topic). No
  message is actually denied (S1 publishes on ``bench/<i>``), so the
  delivered counts stay comparable.

Rules go in through ``POST /api/v4/acl`` (one batch) before the load starts.
The target of the ACL work: ``rules`` within 5 % of ``none``.

``--in-process`` measures the same three variants without sockets or a load
generator: S1's packets (20 publishers, 50 PUBLISH per read) are fed to the
broker's own ``Client`` objects in one process, so what is left is the CPU
cost of the message path itself, far less noisy on a shared machine (best
and median of the rounds, messages per second of one core).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    BENCH,
    BrokerSpec,
    ensure_mqttbench,
    log,
    machine,
    run_mqttbench,
    start_broker,
    stop_broker,
)
from scenarios import SCENARIOS

# Ports of their own, so a campaign of bench/run.py elsewhere on the machine does not collide.
PORT = int(os.environ.get("ACL_BENCH_PORT", "18845"))
API_PORT = int(os.environ.get("ACL_BENCH_API_PORT", "18849"))
APP_ID, APP_SECRET = "bench", "bench-secret"
VARIANTS = ("none", "rules", "checked")


def thousand_rules() -> list[dict[str, str]]:
    """1,000 rules of every kind, none able to narrow a ``bench/#`` subscription."""
    rules: list[dict[str, str]] = []
    for i in range(1000):
        kind = i % 4
        topic = (f"devices/{i}/#", f"fleet/%c/{i}", f"users/%u/{i}/+", f"reports/+/{i}")[kind]
        rule = {
            "topic": topic,
            "action": ("pub", "sub", "pubsub")[i % 3],
            "access": "deny" if i % 2 else "allow",
        }
        if i % 5 == 1:
            rule["clientid"] = f"device-{i}"
        elif i % 5 == 2:
            rule["username"] = f"user-{i}"
        rules.append(rule)
    return rules


def variant_rules(variant: str) -> list[dict[str, str]]:
    if variant == "none":
        return []
    rules = thousand_rules()
    if variant == "checked":
        rules.append({"topic": "bench/private/#", "action": "sub", "access": "deny"})
    return rules


def api(method: str, path: str, body: object = None) -> dict:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(
        f"http://127.0.0.1:{API_PORT}/api/v4{path}", data=data, method=method
    )
    token = base64.b64encode(f"{APP_ID}:{APP_SECRET}".encode()).decode()
    req.add_header("Authorization", f"Basic {token}")
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read())


def run_one(variant: str, args: list[str]) -> dict:
    broker = start_broker(BrokerSpec("ferrymq", PORT))
    try:
        rules = variant_rules(variant)
        if rules:
            added = api("POST", "/acl", rules)["data"]
            assert all(r["result"] == "ok" for r in added), added[:3]
        result = run_mqttbench(broker, f"acl-{variant}", args)
        metrics = api("GET", "/metrics")["data"][0]["metrics"]
        result["acl_rules"] = len(rules)
        result["delivery_dropped_acl"] = metrics["delivery.dropped.acl"]
        return result
    finally:
        stop_broker(broker)


def in_process(rounds: int) -> list[str]:
    import asyncio

    from ferrymq.access.acl import make_rules
    from ferrymq.config import Settings
    from ferrymq.core.broker import Broker
    from ferrymq.core.client import Client
    from ferrymq.mqtt.codec import encode, encode_publish
    from ferrymq.mqtt.packets import Connect, Subscribe, SubscriptionOptions

    class Transport:
        def write(self, data: bytes) -> None:
            pass

        def get_extra_info(self, key: str, default: object = None) -> object:
            return ("127.0.0.1", 1) if key == "peername" else default

        def is_closing(self) -> bool:
            return False

        def close(self) -> None:
            pass

        def get_write_buffer_size(self) -> int:
            return 0

    def one(variant: str, reads: int = 400) -> float:
        loop = asyncio.new_event_loop()
        try:
            broker = Broker(Settings(), None, loop)
            rules = []
            for r in variant_rules(variant):
                kind = "clientid" if "clientid" in r else "username" if "username" in r else "all"
                rules += make_rules(kind, r.get(kind), r["topic"], r["action"], r["access"])
            broker.acl.load(rules)
            sub = Client(broker, Transport())
            sub.data_received(encode(Connect("sub", keepalive=0), 4))
            sub.data_received(encode(Subscribe(1, [SubscriptionOptions("bench/#", 0)]), 4))
            pubs = []
            for i in range(20):
                pub = Client(broker, Transport())
                pub.data_received(encode(Connect(f"pub{i}", keepalive=0), 4))
                data = encode_publish(f"bench/{i}", b"x" * 64, 0, False, False, 0, None, 4)
                pubs.append((pub, data * 50))
            start = time.perf_counter()
            for _ in range(reads):
                for pub, data in pubs:
                    pub.data_received(data)
            elapsed = time.perf_counter() - start
            assert broker.metrics["messages.delivered"] == reads * 20 * 50
            return reads * 20 * 50 / elapsed
        finally:
            loop.close()

    rates: dict[str, list[float]] = {v: [] for v in VARIANTS}
    for _ in range(rounds):
        for v in VARIANTS:
            rates[v].append(one(v))
    base = statistics.median(rates["none"])
    lines = [
        f"In-process S1 message path, {rounds} alternating rounds:",
        "",
        "| variant | best msg/s | median msg/s | median vs no rules |",
        "| --- | ---: | ---: | ---: |",
    ]
    for v, xs in rates.items():
        med = statistics.median(xs)
        lines.append(f"| {v} | {max(xs):,.0f} | {med:,.0f} | {med / base:.3f} |")
    return lines


def ferrymq_version() -> dict[str, str]:
    from ferrymq import __version__

    commit = subprocess.run(
        ["git", "-C", str(BENCH.parent), "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    return {"ferrymq": f"{__version__} ({commit})", "python": sys.version.split()[0]}


def report(rows: dict[str, list[dict]], rounds: int) -> list[str]:
    def med(variant: str, key: str) -> float:
        return statistics.median(r[key] for r in rows[variant] if r.get("status") == "ok")

    def best(variant: str) -> float:
        return max(r["recv_rate"] for r in rows[variant] if r.get("status") == "ok")

    base = med("none", "recv_rate")
    lines = [
        f"# ACL benchmark, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
        "",
        "S1 shape (20 publishers -> 1 `bench/#` subscriber, QoS 0, 64 B, unlimited rate), "
        f"ferrymq only, median and best of {rounds} alternating rounds (on a shared machine "
        "the best round is the closest to an uncontended one). Generated by `bench/acl.py`.",
        "",
        f"Machine: {json.dumps(machine())}  ",
        f"Versions: {json.dumps(ferrymq_version())}",
        "",
        "| variant | rules | delivered msg/s | vs no rules | best round | best vs no rules "
        "| each round |",
        "| --- | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    best_base = best("none")
    for v in rows:
        recv = med(v, "recv_rate")
        each = ", ".join(f"{r.get('recv_rate', 0):,.0f}" for r in rows[v])
        lines.append(
            f"| {v} | {rows[v][0].get('acl_rules', 0)} | {recv:,.0f} | {recv / base:.3f} "
            f"| {best(v):,.0f} | {best(v) / best_base:.3f} | {each} |"
        )
    dropped = sum(r.get("delivery_dropped_acl", 0) for rs in rows.values() for r in rs)
    lines += ["", f"`delivery.dropped.acl` over every run: {dropped} (no S1 topic is denied)."]
    if "rules" in rows:
        lines.append(
            f"Target: `rules` within 5 % of `none`: {med('rules', 'recv_rate') / base:.3f}."
        )
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="one round, 5 s measured")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--variants", default=",".join(VARIANTS), help="a subset, comma-separated")
    parser.add_argument("--in-process", action="store_true", help="the message path alone")
    opts = parser.parse_args()
    if opts.in_process:
        print("\n".join(in_process(opts.rounds)))
        return 0
    variants = tuple(v for v in VARIANTS if v in opts.variants.split(","))
    rounds = 1 if opts.quick else opts.rounds
    ensure_mqttbench()
    os.environ["FERRYMQ_BENCH_API_PORT"] = str(API_PORT)  # read by common.ferrymq_extra_flags
    os.environ["FERRYMQ_API_APP_ID"] = APP_ID
    os.environ["FERRYMQ_API_APP_SECRET"] = APP_SECRET
    args = SCENARIOS["S1"].full_args("ferrymq")
    if opts.quick:
        args = [*args, "-d", "5"]
    rows: dict[str, list[dict]] = {v: [] for v in variants}
    for n in range(rounds):
        k = n % len(variants)
        order = variants[k:] + variants[:k]  # rotate who goes first
        for v in order:
            result = run_one(v, args)
            log(f"round {n + 1} {v}: {result.get('recv_rate')} msg/s ({result.get('status')})")
            rows[v].append(result)
    lines = report(rows, rounds)
    out = opts.out or BENCH / "results" / f"acl-{time.strftime('%Y-%m-%d')}.md"
    out.write_text("\n".join(lines) + "\n")
    (out.with_suffix(".jsonl")).write_text(
        "".join(json.dumps({"variant": v, **r}) + "\n" for v in rows for r in rows[v])
    )
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
