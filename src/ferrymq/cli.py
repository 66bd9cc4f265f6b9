"""The ``ferrymq`` command line: one module per subcommand in ``ferrymq.commands``."""

from __future__ import annotations

import argparse
import importlib
import sys

from ferrymq import __version__, native

# Each module defines register(subparsers) and sets args.func.
COMMANDS = ("start", "certs", "apps", "users", "acl", "dashboard", "bench", "cluster")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ferrymq", description="ferrymq MQTT broker")
    parser.add_argument(
        "--version", action="version", version=f"ferrymq {__version__}, {native.SUMMARY}"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMANDS:
        importlib.import_module(f"ferrymq.commands.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
