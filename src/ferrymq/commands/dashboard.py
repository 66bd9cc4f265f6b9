"""``ferrymq dashboard users``: who may log in to the web dashboard."""

from __future__ import annotations

import argparse
import time
from typing import Any

from ferrymq.commands.common import (
    add_account_commands,
    add_data_arguments,
    fail,
    print_table,
    run_command,
    run_with_password,
)
from ferrymq.config import Settings
from ferrymq.dashboard.users import add_user, delete_user, set_password
from ferrymq.storage.sqlite import SqliteStore
from ferrymq.storage.store import DuplicateError


def register(sub: Any) -> None:
    dashboard = sub.add_parser(
        "dashboard",
        help="manage web dashboard users",
        description="Manage the users who may log in to the web dashboard. Works on the data "
        "directory; a running broker applies changes within seconds (a deleted user or a "
        "changed password ends that user's sessions).",
    )
    groups = dashboard.add_subparsers(dest="dashboard_command", required=True)
    users = groups.add_parser("users", help="dashboard users")
    cmds = users.add_subparsers(dest="users_command", required=True)
    parsers = add_account_commands(
        cmds,
        (_add, _passwd, _delete),
        ("add a user", "change a user's password", "delete a user (the last one stays)"),
        "username",
        add_data_arguments,
    )
    parsers["add"].add_argument("--desc", default="", help="description")
    lst = cmds.add_parser("list", help="list users")
    add_data_arguments(lst)
    lst.set_defaults(func=_list)


def _add(args: argparse.Namespace) -> int:
    def action(settings: Settings, store: SqliteStore, password: str) -> int:
        try:
            add_user(store, args.name, password, args.desc)
        except DuplicateError:
            return fail(f"dashboard user {args.name!r} already exists")
        print(f"dashboard user {args.name} added")
        return 0

    return run_with_password(args, action, changes=True)


def _passwd(args: argparse.Namespace) -> int:
    def action(settings: Settings, store: SqliteStore, password: str) -> int:
        if not set_password(store, args.name, password):
            return fail(f"no dashboard user {args.name!r}")
        print(f"password of dashboard user {args.name} changed")
        return 0

    return run_with_password(args, action, changes=True)


def _delete(args: argparse.Namespace) -> int:
    def action(settings: Settings, store: SqliteStore) -> int:
        if not delete_user(store, args.name):
            return fail(f"no dashboard user {args.name!r}")
        print(f"dashboard user {args.name} deleted")
        return 0

    return run_command(args, action, changes=True)


def _list(args: argparse.Namespace) -> int:
    def action(settings: Settings, store: SqliteStore) -> int:
        rows = [
            (
                u["username"],
                time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(u["created_at"])),
                u["desc"],
            )
            for u in store.list_dashboard_users()
        ]
        print_table(("USERNAME", "CREATED", "DESCRIPTION"), rows)
        return 0

    return run_command(args, action, changes=False)
