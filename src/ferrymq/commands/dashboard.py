"""``ferrymq dashboard users``: who may log in to the web dashboard."""

from __future__ import annotations

import argparse
import time
from typing import Any

from ferrymq.api.offline import add_data_arguments, fail, print_table, run_command
from ferrymq.commands.users import _read_password
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
    for name, func, text, wants_password in (
        ("add", _add, "add a user", True),
        ("passwd", _passwd, "change a user's password", True),
        ("delete", _delete, "delete a user (the last one stays)", False),
    ):
        p = cmds.add_parser(name, help=text)
        p.add_argument("name", help="username")
        if wants_password:
            p.add_argument(
                "--password",
                "-p",
                help="the password (default: prompt, or one line of standard input)",
            )
        if name == "add":
            p.add_argument("--desc", default="", help="description")
        add_data_arguments(p)
        p.set_defaults(func=func)
    lst = cmds.add_parser("list", help="list users")
    add_data_arguments(lst)
    lst.set_defaults(func=_list)


def _add(args: argparse.Namespace) -> int:
    password = _read_password(args)
    if not password:
        return fail("a non-empty password is needed", 2)

    def action(settings: Settings, store: SqliteStore) -> int:
        try:
            add_user(store, args.name, password, args.desc)
        except DuplicateError:
            return fail(f"dashboard user {args.name!r} already exists")
        print(f"dashboard user {args.name} added")
        return 0

    return run_command(args, action, changes=False)


def _passwd(args: argparse.Namespace) -> int:
    password = _read_password(args)
    if not password:
        return fail("a non-empty password is needed", 2)

    def action(settings: Settings, store: SqliteStore) -> int:
        if not set_password(store, args.name, password):
            return fail(f"no dashboard user {args.name!r}")
        print(f"password of dashboard user {args.name} changed")
        return 0

    return run_command(args, action, changes=False)


def _delete(args: argparse.Namespace) -> int:
    def action(settings: Settings, store: SqliteStore) -> int:
        if not delete_user(store, args.name):
            return fail(f"no dashboard user {args.name!r}")
        print(f"dashboard user {args.name} deleted")
        return 0

    return run_command(args, action, changes=False)


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
