"""FERRYMQ_PURE_PYTHON: what ``ferrymq --version`` says is what the interpreter loads."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

PROBE = (
    "import ferrymq.mqtt.codec as c, ferrymq.mqtt.connection as m, ferrymq.native as n;"
    "print(c.__file__); print(m.__file__); print(n.SUMMARY)"
)


def probe(pure: bool) -> tuple[list[str], str]:
    env = {k: v for k, v in os.environ.items() if k != "FERRYMQ_PURE_PYTHON"}
    if pure:
        env["FERRYMQ_PURE_PYTHON"] = "1"
    out = subprocess.run(
        [sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True
    ).stdout.splitlines()
    version = subprocess.run(
        [sys.executable, "-m", "ferrymq", "--version"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    return out, version


def test_forced_pure_python_loads_the_sources() -> None:
    (codec, machine, summary), version = probe(pure=True)
    assert codec.endswith("codec.py") and machine.endswith("connection.py")
    assert summary == "pure Python (FERRYMQ_PURE_PYTHON is set)"
    assert version.endswith(summary)


def test_the_default_loads_what_the_summary_says() -> None:
    (codec, machine, summary), version = probe(pure=False)
    if not summary.startswith("compiled"):
        pytest.skip(f"no compiled build here: {summary}")
    assert not codec.endswith(".py") and not machine.endswith(".py")
    assert version == f"ferrymq 0.1.0, {summary}"
