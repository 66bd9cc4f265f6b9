"""``ferrymq apps``: API apps (AppID + AppSecret) for HTTP Basic authentication."""

from __future__ import annotations

import argparse
import time
from typing import Any

from ferrymq.admin.apps import create_app
from ferrymq.commands.common import add_data_arguments, fail, print_table, run_command
from ferrymq.config import Settings
from ferrymq.storage.sqlite import SqliteStore
from ferrymq.storage.store import DuplicateError


def register(sub: Any) -> None:
    apps = sub.add_parser(
        "apps",
        help="manage API apps (AppID/AppSecret)",
        description="Manage the apps allowed to use the management API. Works on the data "
        "directory; a running broker applies changes within a second.",
    )
    cmds = apps.add_subparsers(dest="apps_command", required=True)
    add = cmds.add_parser("add", help="create an app and print its secret (shown only once)")
    add.add_argument("name")
    add.add_argument("--id", dest="app_id", help="AppID (default: random)")
    add.add_argument("--secret", help="AppSecret (default: random)")
    add.add_argument("--desc", default="", help="description")
    add_data_arguments(add)
    add.set_defaults(func=_add)
    lst = cmds.add_parser("list", help="list apps")
    add_data_arguments(lst)
    lst.set_defaults(func=_list)
    for name, func, text in (
        ("enable", _enable, "allow an app again"),
        ("disable", _disable, "refuse an app's requests"),
        ("delete", _delete, "delete an app"),
    ):
        p = cmds.add_parser(name, help=text)
        p.add_argument("app_id", metavar="ID")
        add_data_arguments(p)
        p.set_defaults(func=func)


def _add(args: argparse.Namespace) -> int:
    def action(settings: Settings, store: SqliteStore) -> int:
        try:
            app_id, secret = create_app(store, args.name, args.app_id, args.secret, args.desc)
        except DuplicateError:
            return fail(f"app {args.app_id!r} already exists")
        print(f"AppID:     {app_id}\nAppSecret: {secret}")
        print("(the secret is stored hashed and cannot be shown again)")
        return 0

    return run_command(args, action, changes=True)


def _list(args: argparse.Namespace) -> int:
    def action(settings: Settings, store: SqliteStore) -> int:
        rows = [
            (
                a["app_id"],
                a["name"],
                "enabled" if a["enabled"] else "disabled",
                time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(a["created_at"])),
                a["desc"],
            )
            for a in store.list_apps()
        ]
        print_table(("APPID", "NAME", "STATUS", "CREATED", "DESCRIPTION"), rows)
        return 0

    return run_command(args, action, changes=False)


def _set_enabled(args: argparse.Namespace, enabled: bool) -> int:
    def action(settings: Settings, store: SqliteStore) -> int:
        if not store.set_app_enabled(args.app_id, enabled):
            return fail(f"no app {args.app_id!r}")
        print(f"app {args.app_id} {'enabled' if enabled else 'disabled'}")
        return 0

    return run_command(args, action, changes=True)


def _enable(args: argparse.Namespace) -> int:
    return _set_enabled(args, True)


def _disable(args: argparse.Namespace) -> int:
    return _set_enabled(args, False)


def _delete(args: argparse.Namespace) -> int:
    def action(settings: Settings, store: SqliteStore) -> int:
        if not store.delete_app(args.app_id):
            return fail(f"no app {args.app_id!r}")
        print(f"app {args.app_id} deleted")
        return 0

    return run_command(args, action, changes=True)
