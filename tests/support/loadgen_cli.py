"""``ferrymq bench`` run as a subprocess, as a user runs it: one run, or subscribers kept
running in the background while a publishing run goes on; results read from its JSON summary."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from typing import Any


def bench(*args: str, timeout: float = 30.0) -> tuple[int, dict[str, Any], str]:
    r = subprocess.run(
        [sys.executable, "-m", "ferrymq", "bench", *args, "--json", "--quiet"],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    lines = r.stdout.strip().splitlines()
    assert lines, f"no summary; stderr:\n{r.stderr}"
    return r.returncode, json.loads(lines[-1]), r.stderr


def start_subscribers(*args: str) -> subprocess.Popen[str]:
    """Start ``bench sub`` and return once every subscriber is ready (its stderr says so)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "ferrymq", "bench", "sub", *args, "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if "clients tried" in line:
            assert " 0 failed" in line, line
            return proc
        if not line and proc.poll() is not None:
            break
    proc.kill()
    raise AssertionError("subscribers did not get ready: " + proc.communicate()[1])


def finish(proc: subprocess.Popen[str]) -> tuple[int, dict[str, Any]]:
    out, _ = proc.communicate(timeout=20)
    return proc.returncode, json.loads(out.strip().splitlines()[-1])
