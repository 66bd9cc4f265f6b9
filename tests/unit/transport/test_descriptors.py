"""The descriptor table grown ahead (transport/descriptors.py), checked on the kernel's own
count (``FDSize`` in /proc/self/status) in a fresh process, whose table is still small."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(
    not Path("/proc/self/status").exists(), reason="FDSize is Linux's /proc"
)

PRELUDE = """
import resource, threading, time
from ferrymq.transport.descriptors import Table

def fdsize():
    for line in open("/proc/self/status"):
        if line.startswith("FDSize:"):
            return int(line.split()[1])

def settle(table, slots):
    deadline = time.monotonic() + 5
    while table.slots != slots and time.monotonic() < deadline:
        time.sleep(0.005)
"""


def run(script: str, nofile: int = 20000) -> str:
    """Run ``script`` in a fresh interpreter with RLIMIT_NOFILE's soft limit at ``nofile``."""
    import resource

    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard != resource.RLIM_INFINITY and hard < nofile:
        pytest.skip(f"RLIMIT_NOFILE hard limit {hard} below {nofile}")
    setup = f"resource.setrlimit(resource.RLIMIT_NOFILE, ({nofile}, {hard}))\n"
    code = textwrap.dedent(PRELUDE) + setup + textwrap.dedent(script)
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=False
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_reserve_grows_the_kernel_table_at_once() -> None:
    out = run(
        """
        before = fdsize()
        table = Table()
        print(before, table.reserve(4096), fdsize())
        """
    )
    before, slots, after = map(int, out.split())
    assert before < 4096
    assert slots == 4096
    assert after >= 4096


def test_a_descriptor_past_half_the_table_grows_it_fourfold_off_the_caller() -> None:
    out = run(
        """
        threading.Thread(target=time.sleep, args=(3,), daemon=True).start()  # as the store's
        table = Table()
        table.reserve(1024)
        table.accepted(100)  # below half: nothing
        quiet = (table.slots, fdsize())
        table.accepted(512)
        settle(table, 4096)
        print(*quiet, table.slots, fdsize(), table.grow_at)
        """
    )
    slots, size, grown, after, grow_at = map(int, out.split())
    assert (slots, size) == (1024, 1024)
    assert grown == 4096 and after >= 4096
    assert grow_at == 2048


def test_the_soft_limit_bounds_the_table() -> None:
    out = run(
        """
        table = Table()
        print(table.reserve(4096), fdsize())
        table.accepted(1000)  # the table is at the limit already: no thread, no growth
        print(table.slots, fdsize(), threading.active_count())
        """,
        nofile=1500,
    )
    first, second = out.splitlines()
    slots, size = map(int, first.split())
    assert slots == 1500 and size >= 1500
    assert list(map(int, second.split())) == [1500, size, 1]
