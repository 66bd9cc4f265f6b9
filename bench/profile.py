"""Profile ferrymq with py-spy while one scenario loads it; print the top functions.

usage: python bench/profile.py [S1|S2|S3b ...] [--top 15] [--rate 100] [--out DIR]

For each scenario: a fresh broker pinned to BROKER_CPU, the C generator on
GEN_CPU, and ``py-spy record --format raw`` on the broker for the middle of the
measurement window. "own" is the share of samples where the function is the
innermost Python frame (time in C code it calls, syscalls included, counts
there); "total" is the share of samples where it is anywhere on the stack.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    BROKERS,
    GEN_CPU,
    MQTTBENCH,
    WORK,
    ensure_mqttbench,
    log,
    start_broker,
    stop_broker,
)
from scenarios import SCENARIOS

_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^():]*)(?::(?P<line>\d+))?\)$")


def short(frame: str) -> str:
    """``func (path/to/file.py:12)`` -> ``func (file.py)``: aggregate per function."""
    m = _FRAME.match(frame)
    if not m:
        return frame
    path = m.group("file")
    path = path.split("/ferrymq/", 1)[1] if "/ferrymq/" in path else path.rsplit("/", 1)[-1]
    return f"{m.group('func')} ({path})"


def summarise(raw: Path, top: int) -> str:
    """Own and total share per function, over the event-loop thread's samples."""
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    samples = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = [short(f) for f in stack.split(";")]
        if any(f.startswith("Thread._bootstrap") for f in frames):
            continue  # a helper thread (the SQLite writer), not the event loop
        samples += n
        own[frames[-1]] += n
        for f in set(frames):
            total[f] += n
    rows = [
        f"samples: {samples}",
        "",
        "| # | function (file) | own % | total % |",
        "|---|---|---:|---:|",
    ]
    for i, (func, n) in enumerate(own.most_common(top), 1):
        rows.append(
            f"| {i} | `{func}` | {100 * n / samples:.1f} | {100 * total[func] / samples:.1f} |"
        )
    return "\n".join(rows)


def profile(scenario: str, seconds: int, rate: int, out: Path, top: int, native: bool) -> str:
    spec = BROKERS["ferrymq"]
    broker = start_broker(spec)
    raw = out / f"profile-{scenario}{'-native' if native else ''}.txt"
    try:
        args = SCENARIOS[scenario].args(broker.spec.name)
        args += ["-d", str(seconds + 6), "-w", "2", "--drain", "3", "--settle", "10"]
        gen = subprocess.Popen(
            [
                "taskset",
                "-c",
                GEN_CPU,
                str(MQTTBENCH),
                "-p",
                str(spec.port),
                "--broker-pid",
                str(broker.pid),
                "-l",
                f"profile-{scenario}",
                *args,
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        time.sleep(5)
        subprocess.run(
            [
                "taskset",
                "-c",
                GEN_CPU,
                "py-spy",
                "record",
                "--format",
                "raw",
                "--native" if native else "--nonblocking",
                "-r",
                str(rate),
                "-d",
                str(seconds),
                "-p",
                str(broker.pid),
                "-o",
                str(raw),
            ],
            check=True,
            capture_output=True,
        )
        result = gen.communicate(timeout=120)[0].strip().splitlines()
    finally:
        stop_broker(broker)
    table = summarise(raw, top)
    return f"### {scenario}\n\n{result[-1][:300] if result else ''}\n\n{table}\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("scenarios", nargs="*", default=["S1", "S2", "S3b"])
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--rate", type=int, default=200, help="py-spy samples per second")
    ap.add_argument("--top", type=int, default=15)
    ap.add_argument("--native", action="store_true", help="include C frames (pauses the broker)")
    ap.add_argument("--out", type=Path, default=WORK / "profiles")
    a = ap.parse_args()
    ensure_mqttbench()
    a.out.mkdir(parents=True, exist_ok=True)
    for scen in a.scenarios:
        log(f"profiling ferrymq under {scen} with {MQTTBENCH.name}")
        print(profile(scen, a.seconds, a.rate, a.out, a.top, a.native), flush=True)


if __name__ == "__main__":
    main()
