"""What the data commands (``apps``, ``users``, ``acl``, ``dashboard``) share: options,
password input, tables, and one way to run an edit and report its errors.

The edit itself goes through ``ferrymq.admin.offline``; this module only
adds the command line around it. Errors are one ``ferrymq: ...`` line on
standard error and exit status 2; which database was used goes to standard
error too, so a command run in the wrong place says so.
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from collections.abc import Callable
from typing import Any

from ferrymq import config
from ferrymq.admin import offline
from ferrymq.storage.sqlite import SqliteStore, StorageError


def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", "-c", help="TOML config file (for data_dir, password_hash)")
    parser.add_argument("--data-dir", dest="data_dir", help="data directory of the broker")
    parser.add_argument(
        "--create",
        action="store_true",
        help="create the database when the data directory has none (by default that is "
        "an error: a mistyped --data-dir would silently start an empty database)",
    )


def load_settings(args: argparse.Namespace) -> config.Settings:
    return config.load(getattr(args, "config", None), {"data_dir": getattr(args, "data_dir", None)})


def run_command(args: argparse.Namespace, action: offline.Edit, changes: bool) -> int:
    """Load settings, then ``offline.edit``; report errors as exit status 2.

    The database must exist unless ``--create`` was given.
    """
    try:
        settings = load_settings(args)
        db = offline.database_path(settings)
        if not os.path.exists(db) and not getattr(args, "create", False):
            return fail(
                f"no database at {db}: check --data-dir / --config (or the current "
                "directory), or pass --create to start a new one",
                2,
            )
        print(f"ferrymq: database {db}", file=sys.stderr)
        return offline.edit(settings, action, changes)
    except (config.ConfigError, StorageError, OSError, ValueError, RuntimeError) as exc:
        print(f"ferrymq: {exc}", file=sys.stderr)
        return 2


def add_password_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--password", "-p", help="the password (default: prompt, or one line of standard input)"
    )


def add_account_commands(
    cmds: Any,
    funcs: tuple[Callable[..., int], Callable[..., int], Callable[..., int]],
    helps: tuple[str, str, str],
    name_help: str,
    common: Callable[[argparse.ArgumentParser], None],
) -> dict[str, argparse.ArgumentParser]:
    """The ``add NAME``, ``passwd NAME`` and ``delete NAME`` subcommands of an account kind.

    ``funcs`` and ``helps`` in that order; ``common`` adds the kind's own options.
    """
    parsers = {}
    for name, func, text in zip(("add", "passwd", "delete"), funcs, helps, strict=True):
        p = cmds.add_parser(name, help=text)
        p.add_argument("name", help=name_help)
        if name != "delete":
            add_password_argument(p)
        common(p)
        p.set_defaults(func=func)
        parsers[name] = p
    return parsers


def read_password(args: argparse.Namespace) -> str | None:
    """``--password``, else one line of a piped standard input, else asked twice."""
    if args.password is not None:
        return args.password
    if not sys.stdin.isatty():
        return sys.stdin.readline().rstrip("\r\n")
    first = getpass.getpass("password: ")
    if getpass.getpass("again: ") != first:
        print("ferrymq: the passwords differ", file=sys.stderr)
        return None
    return first


def run_with_password(
    args: argparse.Namespace,
    action: Callable[[config.Settings, SqliteStore, str], int],
    changes: bool,
) -> int:
    """``run_command`` for commands that set a password: read it first, refuse an empty one."""
    password = read_password(args)
    if not password:
        return fail("a non-empty password is needed", 2)
    return run_command(args, lambda settings, store: action(settings, store, password), changes)


def fail(message: str, status: int = 1) -> int:
    print(f"ferrymq: {message}", file=sys.stderr)
    return status


def print_table(headers: tuple[str, ...], rows: list[tuple[Any, ...]]) -> None:
    cells = [tuple(str(v) for v in row) for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    for row in [headers, *cells]:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())
