"""``ferrymq acl``: access rules, as /acl (subject: --clientid, --username or all clients)."""

from __future__ import annotations

import argparse
from typing import Any

from ferrymq.access.acl import make_rules
from ferrymq.commands.common import add_data_arguments, fail, print_table, run_command
from ferrymq.config import Settings
from ferrymq.storage.sqlite import SqliteStore


def register(sub: Any) -> None:
    acl = sub.add_parser(
        "acl",
        help="manage ACL rules",
        description="Manage the ACL rules checked on PUBLISH and SUBSCRIBE. A rule belongs "
        "to --clientid ID, --username NAME, or (with neither) all clients. Works on the data "
        "directory; a running broker applies changes within a second.",
    )
    cmds = acl.add_subparsers(dest="acl_command", required=True)
    add = cmds.add_parser(
        "add",
        help="add or replace a rule",
        description="Add a rule as the newest of its subject (the newest matching rule "
        "decides). pubsub is stored as a pub and a sub rule; a rule with the same subject, "
        "topic and action is replaced, and the output says so. "
        "Example: ferrymq acl add --clientid dev1 'devices/%c/#' pubsub allow",
    )
    _subject(add)
    add.add_argument(
        "topic",
        help="topic filter; may use +, #, and the levels %%c (client id) and %%u (username)",
    )
    add.add_argument("action", choices=("pub", "sub", "pubsub", "subpub"))
    add.add_argument("access", choices=("allow", "deny"))
    add_data_arguments(add)
    add.set_defaults(func=_add)
    delete = cmds.add_parser(
        "delete", help="delete the rules (pub and sub) of a subject for a topic"
    )
    _subject(delete)
    delete.add_argument("topic")
    add_data_arguments(delete)
    delete.set_defaults(func=_delete)
    lst = cmds.add_parser("list", help="list rules, newest first (all, or one subject's)")
    group = lst.add_mutually_exclusive_group()
    group.add_argument("--clientid", help="rules of this client id")
    group.add_argument("--username", help="rules of this username")
    group.add_argument("--all", action="store_true", help="only rules for all clients")
    add_data_arguments(lst)
    lst.set_defaults(func=_list)


def _subject(p: argparse.ArgumentParser) -> None:
    group = p.add_mutually_exclusive_group()
    group.add_argument("--clientid", help="the rule is for this client id")
    group.add_argument("--username", help="the rule is for this username")


def _kind_subject(args: argparse.Namespace) -> tuple[str, str]:
    if args.clientid is not None:
        return "clientid", args.clientid
    if args.username is not None:
        return "username", args.username
    return "all", ""


def _add(args: argparse.Namespace) -> int:
    kind, subject = _kind_subject(args)
    try:
        rules = make_rules(kind, subject, args.topic, args.action, args.access)
    except ValueError as exc:
        return fail(str(exc), 2)

    def action(settings: Settings, store: SqliteStore) -> int:
        who = "all clients" if kind == "all" else f"{kind} {subject}"
        for rule in rules:
            replaced = store.put_acl(
                kind, subject, rule.topic, rule.action, rule.access, rule.created_at
            )
            verb = "replaced" if replaced else "added"
            print(f"{who}: {rule.access} {rule.action} {rule.topic} ({verb})")
        return 0

    return run_command(args, action, changes=True)


def _delete(args: argparse.Namespace) -> int:
    kind, subject = _kind_subject(args)

    def action(settings: Settings, store: SqliteStore) -> int:
        if not store.delete_acl(kind, subject, args.topic):
            return fail(f"no such rule for topic {args.topic!r}")
        print("rule deleted")
        return 0

    return run_command(args, action, changes=True)


def _list(args: argparse.Namespace) -> int:
    def action(settings: Settings, store: SqliteStore) -> int:
        if args.clientid is not None:
            rows = store.list_acl("clientid", args.clientid)
        elif args.username is not None:
            rows = store.list_acl("username", args.username)
        elif args.all:
            rows = store.list_acl("all")
        else:
            rows = store.list_acl()
        rows.reverse()
        print_table(
            ("KIND", "SUBJECT", "TOPIC", "ACTION", "ACCESS"),
            [
                (r["kind"], r["subject"] or "$all", r["topic"], r["action"], r["access"])
                for r in rows
            ],
        )
        return 0

    return run_command(args, action, changes=False)
