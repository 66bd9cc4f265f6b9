"""The command line's parser: one ``register(subparsers)`` per module of ``ferrymq.commands``.

Only the subcommand named on the command line is imported (all of them for ``--help`` or
a mistyped name), and the help formatter reads the terminal's width from ``os``: a broker
started with ``ferrymq start`` carries neither the other commands' modules nor ``shutil``
(and the compression modules it imports). Nor the parser itself: ``forget`` drops this
module, ``argparse`` and ``gettext`` (0.3 MiB of RSS) once ``start`` has read its settings.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence
from typing import Any

from ferrymq import __version__, native

# Each module defines register(subparsers) and sets args.func.
COMMANDS = ("start", "certs", "apps", "users", "acl", "dashboard", "bench", "cluster")


class HelpFormatter(argparse.HelpFormatter):
    """argparse's formatter, with ``shutil.get_terminal_size``'s width taken from ``os``."""

    def __init__(self, prog: str, indent_increment: int = 2, max_help_position: int = 24) -> None:
        super().__init__(prog, indent_increment, max_help_position, width=terminal_width() - 2)


class Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose help formatter is ``HelpFormatter`` unless told otherwise;
    ``add_subparsers`` makes the subcommands' parsers of the same class."""

    def __init__(self, formatter_class: Any = HelpFormatter, **kwargs: Any) -> None:
        super().__init__(formatter_class=formatter_class, **kwargs)


def terminal_width() -> int:
    """What ``shutil.get_terminal_size().columns`` says: ``COLUMNS``, the terminal, or 80."""
    try:
        return int(os.environ["COLUMNS"])
    except (KeyError, ValueError):
        pass
    try:
        return os.get_terminal_size(sys.__stdout__.fileno()).columns or 80  # type: ignore[union-attr]  # None without a stdout: AttributeError, caught
    except (AttributeError, ValueError, OSError):
        return 80


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The parser; given ``argv``, with only the subcommand it names when it names one."""
    parser = Parser(prog="ferrymq", description="ferrymq MQTT broker")
    parser.add_argument(
        "--version", action="version", version=f"ferrymq {__version__}, {native.SUMMARY}"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    named = [arg for arg in argv or () if not arg.startswith("-")][:1]
    for name in named if named and named[0] in COMMANDS else COMMANDS:
        importlib.import_module(f"ferrymq.commands.{name}").register(sub)
    return parser


def forget() -> None:
    """Let the parser go, for a process that runs long after it has parsed (``start``):
    this module, ``argparse`` and ``gettext`` leave ``sys.modules`` and are freed with the
    parser's cycles, so what the broker imports next reuses their memory. Whatever imports
    them later gets them anew. ``cli.main`` hands commands a ``SimpleNamespace``, not
    argparse's ``Namespace``, whose class would hold all of ``argparse``."""
    for name in (__name__, "argparse", "gettext"):
        sys.modules.pop(name, None)
    sys.modules["ferrymq.commands"].__dict__.pop("parser", None)
