"""Admin data as records: a database's apps, auth records, ACL rules, bans and dashboard
users copied to another one exactly, compare-and-set writes, and the listener that hears
admin writes."""

from __future__ import annotations

import threading
from pathlib import Path

from ferrymq.storage.records import KINDS, digest, key_of
from memory import open_store


def _fill(store) -> None:  # type: ignore[no-untyped-def]
    store.add_app("app1", "ops", "sha256$x$y", "the ops app", True)
    store.add_auth("username", "alice", "sha256$a$b")
    store.add_auth("clientid", "dev1", "sha256$c$d")
    store.put_acl("username", "alice", "a/#", "pubsub", "deny", 1000)
    store.put_acl("all", "", "#", "sub", "allow", 2000)
    store.put_ban(
        {"kind": "clientid", "who": "bad", "by": "op", "reason": "r", "at": 1, "until": 9}
    )
    store.add_dashboard_user("ops", "pbkdf2$s$h", "the operator")


def test_records_copied_to_another_database_are_the_same_records(tmp_path: Path) -> None:
    a, b = open_store(tmp_path / "a.db"), open_store(tmp_path / "b.db")
    try:
        _fill(a)
        view = a.admin_records()
        assert set(view) == set(KINDS)
        assert view["app"]["app1"]["desc"] == "the ops app" and view["app"]["app1"]["enabled"]
        assert view["username"]["alice"]["password_hash"] == "sha256$a$b"
        assert len(view["acl"]) == 3  # pubsub: a pub and a sub rule
        changes = [(k, key, r, None) for k in KINDS for key, r in view[k].items()]
        assert set(b.apply_admin_records(changes)) == {"written"}
        assert b.admin_records() == view
        assert b.get_app("app1")["secret_hash"] == "sha256$x$y"  # type: ignore[index]
        assert [r["topic"] for r in b.list_acl("all")] == ["#"]
        user = b.get_dashboard_user("ops")
        assert user is not None and user["password_hash"] == "pbkdf2$s$h"
        assert user["desc"] == "the operator"
        assert set(b.apply_admin_records(changes)) == {"same"}
    finally:
        a.close()
        b.close()


def test_a_write_happens_only_over_the_row_it_expects(tmp_path: Path) -> None:
    store = open_store(tmp_path / "a.db")
    try:
        store.add_auth("username", "alice", "sha256$mine$1")
        mine = store.admin_records()["username"]["alice"]
        theirs = {**mine, "password_hash": "sha256$theirs$2"}
        older = {**mine, "password_hash": "sha256$older$0"}
        # Expected the older value: this node changed it since, so it is kept.
        assert store.apply_admin_records([("username", "alice", theirs, digest(older))]) == ["kept"]
        assert store.get_auth("username", "alice")["password_hash"] == "sha256$mine$1"  # type: ignore[index]
        assert store.apply_admin_records([("username", "alice", theirs, digest(mine))]) == [
            "written"
        ]
        assert store.get_auth("username", "alice")["password_hash"] == "sha256$theirs$2"  # type: ignore[index]
        assert store.apply_admin_records([("username", "alice", None, digest(theirs))]) == [
            "written"
        ]
        assert store.get_auth("username", "alice") is None
        rule = {"kind": "all", "subject": "", "topic": "t", "action": "pub", "access": "deny"}
        rule["created_at"] = 5
        assert store.apply_admin_records([("acl", key_of("acl", rule), rule, None)]) == ["written"]
        assert store.list_acl() == [rule]
    finally:
        store.close()


def test_the_admin_listener_hears_edits_not_copies(tmp_path: Path) -> None:
    store = open_store(tmp_path / "a.db")
    heard: list[str] = []
    store.set_admin_listener(lambda: heard.append(threading.current_thread().name))
    try:
        store.add_auth("username", "alice", "sha256$a$b")
        store.put_ban({"kind": "username", "who": "x", "by": "", "reason": "", "at": 1, "until": 2})
        store.set_app_enabled("nope", False)  # a write job, even when it changes nothing
        store.add_dashboard_user("ops", "pbkdf2$s$h")
        store.update_dashboard_user("ops", "pbkdf2$t$i")
        store.list_auth("username")  # reads are not heard
        store.list_dashboard_users()
        assert len(heard) == 5
        view = store.admin_records()
        store.apply_admin_records(
            [("username", "bob", {**view["username"]["alice"], "subject": "bob"}, None)]
        )
        assert len(heard) == 5
        assert store.get_auth("username", "bob") is not None
    finally:
        store.close()
