"""``ferrymq users``: MQTT credentials (username or client id records), as /auth_username."""

from __future__ import annotations

import argparse
import time
from typing import Any

from ferrymq.access.passwords import hash_password
from ferrymq.commands.common import (
    add_account_commands,
    add_data_arguments,
    fail,
    print_table,
    run_command,
    run_with_password,
)
from ferrymq.config import Settings
from ferrymq.storage.sqlite import SqliteStore
from ferrymq.storage.store import DuplicateError


def register(sub: Any) -> None:
    users = sub.add_parser(
        "users",
        help="manage MQTT credentials",
        description="Manage the credentials checked at CONNECT (the data of /auth_username "
        "and, with --clientid, /auth_clientid). Works on the data directory; a running "
        "broker applies changes within a second.",
    )
    cmds = users.add_subparsers(dest="users_command", required=True)
    add_account_commands(
        cmds,
        (_add, _passwd, _delete),
        ("add credentials", "change a password", "delete credentials"),
        "username (client id with --clientid)",
        _common,
    )
    lst = cmds.add_parser("list", help="list usernames (client ids with --clientid)")
    _common(lst)
    lst.set_defaults(func=_list)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--clientid", action="store_true", help="client id records instead of usernames")
    add_data_arguments(p)


def _kind(args: argparse.Namespace) -> str:
    return "clientid" if args.clientid else "username"


def _add(args: argparse.Namespace) -> int:
    def action(settings: Settings, store: SqliteStore, password: str) -> int:
        try:
            store.add_auth(_kind(args), args.name, hash_password(password, settings.password_hash))
        except DuplicateError:
            return fail(f"{_kind(args)} {args.name!r} already exists")
        print(f"{_kind(args)} {args.name} added")
        return 0

    return run_with_password(args, action, changes=True)


def _passwd(args: argparse.Namespace) -> int:
    def action(settings: Settings, store: SqliteStore, password: str) -> int:
        hashed = hash_password(password, settings.password_hash)
        if not store.update_auth(_kind(args), args.name, hashed):
            return fail(f"no {_kind(args)} {args.name!r}")
        print(f"password of {_kind(args)} {args.name} changed")
        return 0

    return run_with_password(args, action, changes=True)


def _delete(args: argparse.Namespace) -> int:
    def action(settings: Settings, store: SqliteStore) -> int:
        if not store.delete_auth(_kind(args), args.name):
            return fail(f"no {_kind(args)} {args.name!r}")
        print(f"{_kind(args)} {args.name} deleted")
        return 0

    return run_command(args, action, changes=True)


def _list(args: argparse.Namespace) -> int:
    def action(settings: Settings, store: SqliteStore) -> int:
        rows = [
            (
                r["subject"],
                r["password_hash"].split("$", 1)[0],
                time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r["created_at"])),
            )
            for r in store.list_auth(_kind(args))
        ]
        print_table((_kind(args).upper(), "HASH", "CREATED"), rows)
        return 0

    return run_command(args, action, changes=False)
