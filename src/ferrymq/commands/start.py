"""``ferrymq start``: run the broker."""

from __future__ import annotations

import gc
import logging
import os
import sys
from typing import TYPE_CHECKING, Any

from ferrymq import config, eventloop
from ferrymq.logs import setup_logging

if TYPE_CHECKING:
    import argparse


def register(sub: Any) -> None:
    start = sub.add_parser(
        "start",
        help="run the broker",
        description="Run the broker. Settings: defaults < --config file < FERRYMQ_* "
        "environment variables < these flags. With [[listeners]] in the config file, "
        "--bind and --port are ignored, with a warning (the listeners say where to listen).",
    )
    config.add_arguments(start)
    start.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    flags = {k: v for k, v in vars(args).items() if k not in ("command", "config", "func")}
    try:
        settings = config.load(args.config, flags)
    except config.ConfigError as exc:
        print(f"ferrymq: {exc}", file=sys.stderr)
        return 2
    _forget_parser()
    gc.collect()  # the parser's cycles: their memory goes to the broker's modules
    eventloop.import_asyncio(settings.speaks_tls())  # before the server imports it
    from ferrymq.server import run as serve

    ignored = [f"--{name}" for name in ("bind", "port") if flags.get(name) is not None]
    if settings.listeners and ignored:
        # Not an error (test harnesses and scripts pass --port everywhere), but never silent.
        print(
            f"ferrymq: warning: {' and '.join(ignored)} ignored: {args.config} has "
            "[[listeners]] tables, which say where the broker listens",
            file=sys.stderr,
        )
    setup_logging(settings.log_level, settings.log_format)
    code = serve(settings)
    # Everything is committed and closed: skip tearing down the interpreter, which
    # frees every restored object one by one and would prolong a restart by seconds.
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _forget_parser() -> None:
    """The settings are read: the parser goes (``parser.forget``), once this returns."""
    from ferrymq.commands import parser

    parser.forget()
