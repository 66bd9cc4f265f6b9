"""``ferrymq start`` imports what the broker runs, not what other commands or settings need."""

from __future__ import annotations

import subprocess
import sys

# Each is imported elsewhere when needed: another subcommand, a configuration file or a
# PROXY protocol listener (ipaddress), the API's first request (aiohttp), --help (shutil).
NOT_AT_START = (
    "aiohttp",
    "ferrymq.api.app",
    "ferrymq.commands.apps",
    "ferrymq.commands.bench",
    "ferrymq.commands.certs",
    "ferrymq.loadgen",
    "ipaddress",
    "pathlib",
    "shutil",
)

CODE = """
import sys
from ferrymq import cli, config, server
args = cli.build_parser(["start"]).parse_args(["start"])
settings = config.load(None, {}, {})
settings.anonymous_allowed()
print(" ".join(sorted(m for m in sys.modules if m.split(".")[0] in ("ferrymq", *sys.argv[1:])
                      or m in sys.argv[1:])))
"""


def test_start_imports_neither_other_commands_nor_unused_stdlib() -> None:
    out = subprocess.run(
        [sys.executable, "-c", CODE, *NOT_AT_START],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout.split()
    assert "ferrymq.commands.start" in out and "ferrymq.server" in out
    assert not set(NOT_AT_START) & set(out), sorted(set(NOT_AT_START) & set(out))
