"""``ferrymq start`` imports what the broker runs, not what other commands or settings need."""

from __future__ import annotations

import subprocess
import sys

# Each is imported elsewhere when needed: another subcommand, a configuration file or a
# PROXY protocol listener (ipaddress), the API's first request (aiohttp), --help (shutil),
# TLS (ssl, transport.tls), a pbkdf2 hash (hashlib, which loads OpenSSL as ssl does); the
# store runs on _sqlite3, without the sqlite3 package's date/time adapters (datetime); a
# random or sticky shared group's first draw (random); shared groups hash with binascii (zlib);
# the first credential check (_blake2); the parser leaves once the settings are read
# (argparse, gettext, commands.parser).
NOT_AT_START = (
    "_blake2",
    "argparse",
    "_datetime",
    "_hashlib",
    "_ssl",
    "aiohttp",
    "datetime",
    "ferrymq.api.app",
    "ferrymq.commands.apps",
    "ferrymq.commands.bench",
    "ferrymq.commands.certs",
    "ferrymq.commands.parser",
    "ferrymq.loadgen",
    "ferrymq.transport.tls",
    "gettext",
    "hashlib",
    "hmac",
    "ipaddress",
    "pathlib",
    "random",
    "secrets",
    "shutil",
    "sqlite3",
    "ssl",
    "zlib",
)

# What commands/start.py does, up to running the loop.
CODE = """
import gc, sys, weakref
from ferrymq import config, eventloop
from ferrymq.commands import start
from ferrymq.commands.parser import build_parser
args = build_parser(["start"]).parse_args(["start"])
settings = config.load(None, {}, {})
parsers = [weakref.ref(sys.modules[name]) for name in ("argparse", "gettext")]
del args, build_parser
start._forget_parser()
gc.collect()
assert all(ref() is None for ref in parsers), "argparse or gettext is still referenced"
eventloop.import_asyncio(settings.speaks_tls())
from ferrymq import server
settings.anonymous_allowed()
assert eventloop.runner().__module__ == "uvloop"
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
eventloop.import_asyncio(sys.argv[1] == "tls")
import asyncio
from asyncio import base_events, selector_events, sslproto
print(base_events.ssl is None, selector_events.ssl is None, sslproto.ssl is None)
print("_ssl" in sys.modules)

async def echo() -> bytes:
    async def handle(reader, writer):
        writer.write(await reader.read(5))
        await writer.drain()
        writer.close()
    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    reader, writer = await asyncio.open_connection(*server.sockets[0].getsockname()[:2])
    writer.write(b"hello")
    answer = await reader.read(5)
    writer.close()
    server.close()
    return answer

print(eventloop.runner().__module__, eventloop.runner()(echo()).decode())
import ssl  # what aiohttp does at the API's first request
print(ssl.SSLContext.__module__, ssl.create_default_context().__class__.__name__)
"""


def test_asyncio_and_uvloop_import_ssl_only_for_tls() -> None:
    """Without TLS: asyncio without ssl, uvloop beside the stand-in, plain TCP served on
    uvloop, and the real ssl importable afterwards (aiohttp)."""

    def run(mode: str) -> list[str]:
        out = subprocess.run(
            [sys.executable, "-c", ASYNCIO_SSL, mode],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        return out.stdout.split()

    after = ["uvloop", "hello", "ssl", "SSLContext"]
    assert run("plain") == ["True", "True", "True", "False", *after]
    assert run("tls") == ["False", "False", "False", "True", *after]
