"""``ferrymq start`` imports what the broker runs, not what other commands or settings need."""

from __future__ import annotations

import subprocess
import sys

# Each is imported elsewhere when needed: another subcommand, a configuration file or a
# PROXY protocol listener (ipaddress), the API's first request (aiohttp), --help (shutil),
# TLS (ssl, uvloop, transport.tls), a pbkdf2 hash (hashlib, which loads OpenSSL as ssl does).
NOT_AT_START = (
    "_hashlib",
    "_ssl",
    "aiohttp",
    "ferrymq.api.app",
    "ferrymq.commands.apps",
    "ferrymq.commands.bench",
    "ferrymq.commands.certs",
    "ferrymq.loadgen",
    "ferrymq.transport.tls",
    "hashlib",
    "hmac",
    "ipaddress",
    "pathlib",
    "secrets",
    "shutil",
    "ssl",
    "uvloop",
)

# What commands/start.py does, up to running the loop.
CODE = """
import sys
from ferrymq import cli, config, eventloop
args = cli.build_parser(["start"]).parse_args(["start"])
settings = config.load(None, {}, {})
eventloop.import_asyncio(settings.uvloop())
from ferrymq import server
settings.anonymous_allowed()
assert eventloop.runner(settings.uvloop()).__module__ == "asyncio.runners"
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


ASYNCIO_SSL = """
import sys
from ferrymq import eventloop
eventloop.import_asyncio(sys.argv[1] == "uvloop")
from asyncio import base_events, selector_events, sslproto
print(base_events.ssl is None, selector_events.ssl is None, sslproto.ssl is None)
import ssl  # what aiohttp does at the API's first request
print(ssl.SSLContext.__name__, eventloop.runner(sys.argv[1] == "uvloop").__module__)
"""


def test_asyncio_imports_ssl_only_for_uvloop_or_tls() -> None:
    def run(mode: str) -> list[str]:
        out = subprocess.run(
            [sys.executable, "-c", ASYNCIO_SSL, mode],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        return out.stdout.split()

    assert run("plain") == ["True", "True", "True", "SSLContext", "asyncio.runners"]
    assert run("uvloop") == ["False", "False", "False", "SSLContext", "uvloop"]
