"""Admin data as flat records, for copying it from one database to another.

Cluster mode keeps API apps, authentication records, ACL rules, bans and
dashboard users the same on every node: it reads a node's admin data as records (``snapshot``),
compares them by ``digest``, and writes the records other nodes changed
(``apply``). A record is the plain JSON-able dict of one row, hashes included
(they travel between nodes, never through the API), and its key is what the
row's primary key is, as one string.

``apply`` is a compare-and-set: each change says what the row must look like
now (its digest, or None for "absent"), so a change this node made that the
cluster has not seen yet is never overwritten by an older one. These run on
the store's writer thread, so they are serialised with the API's own writes.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from ferrymq.digests import sha1_hex

if TYPE_CHECKING:
    import sqlite3

#: The kinds of record, in the order they are applied.
KINDS = ("app", "username", "clientid", "acl", "ban", "dashboard_user")

Record = dict[str, Any]
#: (kind, key, the new record or None to delete it, the digest the row must have now).
Change = tuple[str, str, Record | None, str | None]

_APP = ("app_id", "name", "secret_hash", "desc", "enabled", "created_at")
_APP_COLUMNS = "app_id, name, secret_hash, description, enabled, created_at"
_AUTH = ("subject", "password_hash", "created_at")
_ACL = ("kind", "subject", "topic", "action", "access", "created_at")
_BAN = ("kind", "who", "by", "reason", "at", "until")
_DASHBOARD = ("username", "password_hash", "description", "created_at")


def digest(record: Record | None) -> str | None:
    """What two records are compared by: equal digests, equal records."""
    if record is None:
        return None
    data = json.dumps(record, sort_keys=True, separators=(",", ":")).encode()
    return sha1_hex(data)


def key_of(kind: str, record: Record) -> str:
    """The record's primary key as one string (ACL rules and bans: a JSON list)."""
    if kind == "app":
        return str(record["app_id"])
    if kind in ("username", "clientid"):
        return str(record["subject"])
    if kind == "acl":
        return json.dumps([record["kind"], record["subject"], record["topic"], record["action"]])
    if kind == "ban":
        return json.dumps([record["kind"], record["who"]])
    if kind == "dashboard_user":
        return str(record["username"])
    raise ValueError(f"unknown kind of admin record {kind!r}")


_FIELDS = {
    "app": _APP,
    "username": _AUTH,
    "clientid": _AUTH,
    "acl": _ACL,
    "ban": _BAN,
    "dashboard_user": _DASHBOARD,
}


def check_record(kind: str, key: str, record: Record) -> Record:
    """``record`` if it is a well-formed record of ``kind`` with key ``key``; ValueError
    otherwise (data written by another version, or damaged)."""
    fields = _FIELDS.get(kind)
    if fields is None or not isinstance(record, dict) or set(record) != set(fields):
        raise ValueError(f"not an admin record of kind {kind!r}: {record!r}")
    if key_of(kind, record) != key:
        raise ValueError(f"admin record {record!r} does not have the key {key!r}")
    return record


def snapshot(conn: sqlite3.Connection) -> dict[str, dict[str, Record]]:
    """Every admin record of the database: kind -> key -> record."""
    out: dict[str, dict[str, Record]] = {kind: {} for kind in KINDS}
    for row in conn.execute(f"SELECT {_APP_COLUMNS} FROM apps"):
        record = dict(zip(_APP, row, strict=True))
        record["enabled"] = bool(record["enabled"])
        out["app"][record["app_id"]] = record
    for kind, *row in conn.execute("SELECT kind, subject, password_hash, created_at FROM auth"):
        out[kind][row[0]] = dict(zip(_AUTH, row, strict=True))
    for row in conn.execute(f"SELECT {', '.join(_ACL)} FROM acl ORDER BY id"):
        record = dict(zip(_ACL, row, strict=True))
        out["acl"][key_of("acl", record)] = record
    for row in conn.execute(f"SELECT {', '.join(_BAN)} FROM banned"):
        record = dict(zip(_BAN, row, strict=True))
        out["ban"][key_of("ban", record)] = record
    for row in conn.execute(f"SELECT {', '.join(_DASHBOARD)} FROM dashboard_users"):
        out["dashboard_user"][row[0]] = dict(zip(_DASHBOARD, row, strict=True))
    return out


def _current(conn: sqlite3.Connection, kind: str, key: str) -> Record | None:
    if kind == "app":
        row = conn.execute(
            f"SELECT {_APP_COLUMNS} FROM apps WHERE app_id = ?",
            (key,),
        ).fetchone()
        if row is None:
            return None
        record = dict(zip(_APP, row, strict=True))
        record["enabled"] = bool(record["enabled"])
        return record
    if kind in ("username", "clientid"):
        row = conn.execute(
            "SELECT subject, password_hash, created_at FROM auth WHERE kind = ? AND subject = ?",
            (kind, key),
        ).fetchone()
        return None if row is None else dict(zip(_AUTH, row, strict=True))
    if kind == "acl":
        row = conn.execute(
            f"SELECT {', '.join(_ACL)} FROM acl"
            " WHERE kind = ? AND subject = ? AND topic = ? AND action = ?",
            json.loads(key),
        ).fetchone()
        return None if row is None else dict(zip(_ACL, row, strict=True))
    if kind == "dashboard_user":
        row = conn.execute(
            f"SELECT {', '.join(_DASHBOARD)} FROM dashboard_users WHERE username = ?", (key,)
        ).fetchone()
        return None if row is None else dict(zip(_DASHBOARD, row, strict=True))
    row = conn.execute(
        f"SELECT {', '.join(_BAN)} FROM banned WHERE kind = ? AND who = ?", json.loads(key)
    ).fetchone()
    return None if row is None else dict(zip(_BAN, row, strict=True))


def _delete(conn: sqlite3.Connection, kind: str, key: str) -> None:
    if kind == "app":
        conn.execute("DELETE FROM apps WHERE app_id = ?", (key,))
    elif kind in ("username", "clientid"):
        conn.execute("DELETE FROM auth WHERE kind = ? AND subject = ?", (kind, key))
    elif kind == "acl":
        conn.execute(
            "DELETE FROM acl WHERE kind = ? AND subject = ? AND topic = ? AND action = ?",
            json.loads(key),
        )
    elif kind == "dashboard_user":
        conn.execute("DELETE FROM dashboard_users WHERE username = ?", (key,))
    else:
        conn.execute("DELETE FROM banned WHERE kind = ? AND who = ?", json.loads(key))


def _insert(conn: sqlite3.Connection, kind: str, record: Record) -> None:
    if kind == "app":
        values = [record[f] for f in _APP]
        values[4] = int(bool(values[4]))
        conn.execute(
            f"INSERT INTO apps ({_APP_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)",
            values,
        )
    elif kind in ("username", "clientid"):
        conn.execute(
            "INSERT INTO auth (kind, subject, password_hash, created_at) VALUES (?, ?, ?, ?)",
            (kind, *(record[f] for f in _AUTH)),
        )
    elif kind == "acl":  # inserted last: the newest rule, as on the node that made it
        conn.execute(
            f"INSERT INTO acl ({', '.join(_ACL)}) VALUES (?, ?, ?, ?, ?, ?)",
            [record[f] for f in _ACL],
        )
    elif kind == "dashboard_user":
        conn.execute(
            f"INSERT INTO dashboard_users ({', '.join(_DASHBOARD)}) VALUES (?, ?, ?, ?)",
            [record[f] for f in _DASHBOARD],
        )
    else:
        conn.execute(
            f"INSERT INTO banned ({', '.join(_BAN)}) VALUES (?, ?, ?, ?, ?, ?)",
            [record[f] for f in _BAN],
        )


def apply(conn: sqlite3.Connection, changes: list[Change]) -> list[str]:
    """Write each change whose row still has the expected digest, in one transaction.
    Per change: "written", "same" (the row already was the record) or "kept" (the row
    had neither the expected digest nor the record's: left as it is)."""
    done = []
    conn.execute("BEGIN IMMEDIATE")
    try:
        for kind, key, record, expected in changes:
            if kind not in KINDS:
                raise ValueError(f"unknown kind of admin record {kind!r}")
            now = digest(_current(conn, kind, key))
            if now == digest(record):
                done.append("same")
            elif now != expected:
                done.append("kept")
            else:
                _delete(conn, kind, key)
                if record is not None:
                    _insert(conn, kind, record)
                done.append("written")
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return done
