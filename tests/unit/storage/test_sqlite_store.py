"""Storage: message codec, SQLite store semantics, durability across close (SIGKILL: system)."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import struct
import threading
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import ferrymq.storage.sqlite as sqlite_module
from ferrymq.model.message import Message
from ferrymq.storage.codec import (
    dump_message,
    dump_row,
    journal_merge,
    journal_rows,
    latest_retained,
    load_message,
)
from ferrymq.storage.sqlite import SCHEMA_VERSION, SqliteStore
from ferrymq.storage.store import DuplicateError, StorageError

ALL_PROPS: dict[str, Any] = {
    "user_property": [("k", "v"), ("k", "v2"), ("ünï", "cødé")],
    "content_type": "application/json",
    "response_topic": "reply/to/me",
    "correlation_data": b"\x00\xff\x10corr",
    "payload_format_indicator": 1,
    "subscription_identifier": [3, 7],
}


def same(a: Message, b: Message) -> bool:
    return (
        a.topic == b.topic
        and a.payload == b.payload
        and a.qos == b.qos
        and a.retain == b.retain
        and a.properties == b.properties
        and a.publisher == b.publisher
        and a.created == b.created
    )


def raw(path: Path) -> sqlite3.Connection:
    """An independent connection, to see what is really committed."""
    return sqlite3.connect(path, isolation_level=None)


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "data" / "ferrymq.db"


@pytest.fixture
def store(db: Path) -> Iterator[SqliteStore]:
    s = SqliteStore(db, flush_interval=3600)  # nothing commits unless flushed
    s.open()
    yield s
    s.close()


def committed_retained(conn: sqlite3.Connection) -> dict[str, bytes]:
    """Topic -> row of what is committed: the ``retained`` table, the journal on top."""
    out = {topic: bytes(data) for topic, data in conn.execute("SELECT topic, data FROM retained")}
    latest: dict[str, bytearray | None] = {}
    for (data,) in conn.execute("SELECT data FROM retained_journal ORDER BY seq"):
        journal_merge(latest, data)
    for topic, row in latest.items():
        if row is None:
            out.pop(topic, None)
        else:
            out[topic] = bytes(row)
    return out


def fold_all(s: SqliteStore) -> None:
    """Fold the whole retained journal into the ``retained`` table now."""

    def fold(conn: sqlite3.Connection) -> None:
        while s._journal_rows:
            s._fold(conn)

    s._run(fold)


def reopen(s: SqliteStore) -> SqliteStore:
    s.close()
    fresh = SqliteStore(s.path)
    fresh.open()
    return fresh


# --- codec ---


def test_codec_round_trips_every_property_kind() -> None:
    msg = Message("a/ü/c", b"\x00payload", 2, True, dict(ALL_PROPS), "pub-1", created=1700000000.25)
    back = load_message(dump_message(msg))
    assert same(back, msg)
    assert back.properties is not None
    assert type(back.properties["user_property"][0]) is tuple
    assert type(back.properties["correlation_data"]) is bytes
    assert back.expiry_at == 0.0


@pytest.mark.parametrize(
    "msg",
    [
        Message("r/1", b"x" * 64, 0, True, None, "pub-1", created=1700000000.25),
        Message("r/2", b"y", 1, True, None, "", time.monotonic() + 100, 1700000001.5),
        Message("r/3", b"z", 2, True, dict(ALL_PROPS), "pub-2", time.monotonic() - 10, 1.0),
    ],
)
def test_journal_rows_hold_dump_row_rows_and_deletes(msg: Message) -> None:
    """The journal's encoder of retained rows is ``dump_row(msg, False)``, cheaper, behind
    the topic; a delete is a topic without a row."""
    ((blob,),) = journal_rows({msg.topic: msg, "deleted": None}, 1000)
    latest: dict[str, bytearray | None] = {}
    assert journal_merge(latest, bytes(blob)) == 2
    assert list(latest) == [msg.topic, "deleted"] and latest["deleted"] is None
    row = latest[msg.topic]
    assert type(row) is bytearray
    back = load_message(bytes(row), topic=msg.topic)
    reference = load_message(bytes(dump_row(msg, False)), topic=msg.topic)
    assert same(back, msg) and same(reference, msg)
    assert back.expiry_at == pytest.approx(reference.expiry_at, abs=0.05)
    assert (back.expiry_at == 0.0) == (msg.expiry_at == 0.0)
    assert len(row) == len(dump_row(msg, False))


def test_journal_rows_split_a_batch_and_merge_in_order() -> None:
    writes: dict[str, Message | None] = {f"t/{i}": Message(f"t/{i}", bytes([i])) for i in range(7)}
    writes["t/3"] = None
    rows = journal_rows(writes, 3)
    counts = [journal_merge({}, bytes(blob)) for (blob,) in rows]
    assert counts == [3, 3, 1]
    latest: dict[str, bytearray | None] = {"t/3": bytearray(b"older"), "other": None}
    for (blob,) in rows:
        journal_merge(latest, bytes(blob))
    assert latest["t/3"] is None and latest["other"] is None  # a later write replaces
    assert load_message(bytes(latest["t/6"] or b""), topic="t/6").payload == b"\x06"
    with pytest.raises(ValueError, match="truncated"):
        journal_merge({}, bytes(rows[0][0])[:-1])
    with pytest.raises(ValueError, match="truncated"):
        journal_merge({}, b"\x01\x00")


def test_latest_retained_takes_only_the_counted_writes_and_keeps_the_last_per_topic() -> None:
    """The writer counts the log once it has numbered a batch; writes appended after
    that count belong to a later batch and must stay queued."""
    a1, a2, b, late = Message("a", b"1"), Message("a", b"2"), Message("b", b"x"), Message("c", b"")
    log: deque[Message | str] = deque([a1, "b", a2, b, "a", a2, late])
    assert latest_retained(log, 6) == {"a": a2, "b": b}
    assert list(log) == [late]
    assert latest_retained(deque(["gone"]), 1) == {"gone": None}
    assert latest_retained(log, 0) == {} and list(log) == [late]


def test_codec_without_properties_is_compact() -> None:
    msg = Message("t", b"xy", 1)
    data = dump_message(msg)
    assert len(data) == struct.calcsize("<BBddIII") + 1 + 2
    back = load_message(data)
    assert back.properties is None and back.publisher == "" and back.qos == 1 and not back.retain


def test_codec_stores_expiry_as_wall_clock_deadline() -> None:
    msg = Message("t", b"", 1, expiry_at=time.monotonic() + 100)
    data = dump_message(msg)
    wall = struct.unpack_from("<BBd", data)[2]
    assert abs(wall - (time.time() + 100)) < 0.5
    back = load_message(data)
    assert abs(back.expiry_at - msg.expiry_at) < 0.05
    assert back.remaining_expiry(time.monotonic()) in (99, 100)


def test_codec_expired_deadline_stays_expired() -> None:
    msg = Message("t", b"", 1, expiry_at=time.monotonic() - 10)
    back = load_message(dump_message(msg))
    assert back.expiry_at != 0.0
    assert back.expired(time.monotonic())
    # A deadline far in the past (older than the monotonic clock's origin) is
    # still a deadline, never "never".
    ancient = bytearray(dump_message(msg))
    struct.pack_into("<d", ancient, 2, 1.0)
    old = load_message(bytes(ancient))
    assert old.expiry_at != 0.0 and old.expired(time.monotonic())


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x01\x00",
        b"\x09" + dump_message(Message("t", b"x"))[1:],  # unknown version
        dump_message(Message("topic", b""))[:-2],  # truncated topic
    ],
)
def test_codec_rejects_garbage(data: bytes) -> None:
    with pytest.raises(ValueError):
        load_message(data)


props_strategy = st.fixed_dictionaries(
    {},
    optional={
        "user_property": st.lists(st.tuples(st.text(max_size=8), st.text(max_size=8))),
        "content_type": st.text(max_size=20),
        "response_topic": st.text(min_size=1, max_size=20),
        "correlation_data": st.binary(max_size=32),
        "payload_format_indicator": st.integers(0, 1),
        "subscription_identifier": st.lists(st.integers(1, 268_435_455), max_size=3),
    },
)


@settings(max_examples=300, deadline=None)
@given(
    topic=st.text(min_size=1, max_size=40),
    payload=st.binary(max_size=200),
    qos=st.integers(0, 2),
    retain=st.booleans(),
    props=props_strategy,
    publisher=st.text(max_size=20),
    created=st.floats(0, 4e9),
)
def test_codec_round_trip_property(
    topic: str,
    payload: bytes,
    qos: int,
    retain: bool,
    props: dict[str, Any],
    publisher: str,
    created: float,
) -> None:
    msg = Message(topic, payload, qos, retain, props, publisher, created=created)
    assert same(load_message(dump_message(msg)), msg)


# --- lifecycle and schema ---


def test_open_creates_parent_dir_wal_and_schema_version(store: SqliteStore, db: Path) -> None:
    assert db.is_file()
    with raw(db) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("SELECT version FROM schema_version").fetchall() == [(SCHEMA_VERSION,)]


def test_newer_schema_is_refused(store: SqliteStore, db: Path) -> None:
    store.close()
    with raw(db) as conn:
        conn.execute("UPDATE schema_version SET version = 99")
    with pytest.raises(StorageError, match="newer"):
        SqliteStore(db).open()


def test_close_is_idempotent_and_closed_store_refuses_calls(store: SqliteStore) -> None:
    store.close()
    store.close()
    with pytest.raises(StorageError):
        store.get_app("x")
    with pytest.raises(StorageError):
        store.open()


def test_in_memory_database() -> None:
    with SqliteStore(":memory:") as s:
        s.put_retained(Message("a", b"1"))
        s.add_app("app", "n", "h")
        assert [m.topic for m in s.load_retained()] == ["a"]
        assert s.get_app("app") is not None


# --- round trips through close and reopen ---


def test_everything_survives_close_and_reopen(store: SqliteStore) -> None:
    expiring = Message("r/2", b"two", 1, True, dict(ALL_PROPS), expiry_at=time.monotonic() + 60)
    store.put_retained(Message("r/1", b"one", 0, True))
    store.put_retained(expiring)
    session = {"expiry_interval": 3600, "subscriptions": [["a/#", 1]], "awaiting_rel": [4, 9]}
    store.put_session("c1", session)
    store.put_session("c2", {"expiry_interval": 0})
    queued = Message("q/1", b"queued", 1, publisher="p")
    store.put_session_message("c1", 7, queued, {"state": "queued"})
    store.put_session_message("c1", 2, expiring, {"pid": 12, "state": "inflight"})
    store.put_session_message("c2", 1, queued, {})
    store.add_app("app1", "Name", "sha256$s$h", "desc", enabled=False)
    store.add_auth("username", "alice", "sha256$salt$aa")
    store.add_auth("clientid", "alice", "sha256$salt$bb")
    store.put_acl("username", "alice", "a/#", "pub", "allow", 1000)
    store.put_acl("all", "", "#", "sub", "deny", 2000)
    # close() must commit the still-pending message-path writes.
    s = reopen(store)
    try:
        retained = {m.topic: m for m in s.load_retained()}
        assert set(retained) == {"r/1", "r/2"}
        assert same(retained["r/2"], expiring)
        assert abs(retained["r/2"].expiry_at - expiring.expiry_at) < 0.05
        assert s.load_sessions() == {"c1": session, "c2": {"expiry_interval": 0}}
        msgs = s.load_session_messages()
        assert [(k, meta) for k, _, meta in msgs["c1"]] == [
            (2, {"pid": 12, "state": "inflight"}),
            (7, {"state": "queued"}),
        ]
        assert same(msgs["c1"][0][1], expiring) and same(msgs["c1"][1][1], queued)
        assert [k for k, _, _ in msgs["c2"]] == [1]
        app = s.get_app("app1")
        assert app is not None
        assert {k: v for k, v in app.items() if k != "created_at"} == {
            "app_id": "app1",
            "name": "Name",
            "secret_hash": "sha256$s$h",
            "desc": "desc",
            "enabled": False,
        }
        assert abs(app["created_at"] - time.time()) < 60
        assert s.get_auth("username", "alice")["password_hash"] == "sha256$salt$aa"  # type: ignore[index]
        assert s.get_auth("clientid", "alice")["password_hash"] == "sha256$salt$bb"  # type: ignore[index]
        rules = [
            (r["kind"], r["subject"], r["topic"], r["action"], r["access"]) for r in s.list_acl()
        ]
        assert rules == [
            ("username", "alice", "a/#", "pub", "allow"),
            ("all", "", "#", "sub", "deny"),
        ]
    finally:
        s.close()


# --- batching ---


def count_dumps(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record the topics of messages the writer serialises."""
    seen: list[str] = []

    def counting(msg: Message, with_topic: bool = True) -> bytearray:
        seen.append(msg.topic)
        return dump_row(msg, with_topic)

    def counting_rows(retained: dict[str, Message | None], per_row: int) -> list[Any]:
        seen.extend(topic for topic, msg in retained.items() if msg is not None)
        return journal_rows(retained, per_row)

    monkeypatch.setattr(sqlite_module, "dump_row", counting)
    monkeypatch.setattr(sqlite_module, "journal_rows", counting_rows)
    return seen


def test_a_retained_row_keeps_its_topic_once_and_rows_written_before_still_load(
    store: SqliteStore, db: Path
) -> None:
    msg = Message("sensors/7/temp", b"21.5", 1, True, {"content_type": "text"}, "dev-7")
    store.put_retained(msg)
    store.flush()
    fold_all(store)
    ((blob,),) = raw(db).execute("SELECT data FROM retained").fetchall()
    assert b"sensors/7/temp" not in blob  # the row's key is the topic
    # A row as earlier versions wrote it: the topic inside the blob as well.
    older = Message("older/topic", b"x", 0, True, None, "old")
    raw(db).execute("INSERT INTO retained VALUES (?, ?)", ("older/topic", dump_message(older)))
    loaded = {m.topic: m for m in store.load_retained()}
    assert same(loaded["sensors/7/temp"], msg) and same(loaded["older/topic"], older)


def test_retained_ops_collapse_within_a_batch(
    store: SqliteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.put_retained(Message("keep", b"old"))
    store.flush()
    dumps = count_dumps(monkeypatch)
    store.put_retained(Message("gone", b"1"))
    store.delete_retained("gone")  # put then delete: nothing written
    store.put_retained(Message("keep", b"v1"))
    store.put_retained(Message("keep", b"v2"))  # last put wins
    store.delete_retained("back")
    store.put_retained(Message("back", b"b"))  # delete then put: present
    store.flush()
    assert sorted(dumps) == ["back", "keep"]
    assert {m.topic: m.payload for m in store.load_retained()} == {"keep": b"v2", "back": b"b"}
    store.delete_retained("keep")
    store.flush()
    assert [m.topic for m in store.load_retained()] == ["back"]


def test_session_message_ops_collapse_within_a_batch(
    store: SqliteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.put_session_message("c", 1, Message("committed", b"p1"), {"state": "queued"})
    store.flush()
    dumps = count_dumps(monkeypatch)
    store.put_session_message("c", 2, Message("acked", b""), {"pid": 1})
    store.delete_session_message("c", 2)  # queued and acknowledged within the batch
    store.update_session_message_meta("c", 1, {"pid": 5, "state": "inflight"})  # committed row
    store.put_session_message("c", 3, Message("m3", b"p3"), {"pid": 6})
    store.update_session_message_meta("c", 3, {"pid": 6, "state": "rel"})  # merged into the put
    store.delete_session_message("c", 4)
    store.update_session_message_meta("c", 4, {"late": True})  # after delete: stays deleted
    store.delete_session_message("c", 5)
    store.put_session_message("c", 5, Message("m5", b"p5"), {})  # delete then put: present
    store.flush()
    assert sorted(dumps) == ["m3", "m5"]  # the payload of key 1 is not rewritten
    got = {k: (m.topic, m.payload, meta) for k, m, meta in store.load_session_messages()["c"]}
    assert got == {
        1: ("committed", b"p1", {"pid": 5, "state": "inflight"}),
        3: ("m3", b"p3", {"pid": 6, "state": "rel"}),
        5: ("m5", b"p5", {}),
    }


def test_delete_session_deletes_its_messages_only_up_to_that_point(
    store: SqliteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.put_session("c", {"v": 1})
    store.put_session_message("c", 1, Message("old", b""), {})
    store.put_session("other", {"v": 2})
    store.put_session_message("other", 1, Message("o", b""), {})
    store.flush()
    dumps = count_dumps(monkeypatch)
    store.put_session_message("c", 2, Message("pending", b""), {})
    store.delete_session("c")  # drops the committed and the pending message
    store.put_session("c", {"v": 3})
    store.put_session_message("c", 1, Message("new", b""), {"fresh": True})
    store.flush()
    assert dumps == ["new"]
    assert store.load_sessions() == {"c": {"v": 3}, "other": {"v": 2}}
    msgs = store.load_session_messages()
    assert [(k, m.topic, meta) for k, m, meta in msgs["c"]] == [(1, "new", {"fresh": True})]
    assert [m.topic for _, m, _ in msgs["other"]] == ["o"]
    store.put_session("gone", {})
    store.delete_session("gone")
    store.delete_session("c")
    store.flush()
    assert store.load_sessions() == {"other": {"v": 2}}
    assert list(store.load_session_messages()) == ["other"]


def test_load_session_messages_is_ordered_by_key(store: SqliteStore) -> None:
    for key in (50, 3, 1000, 7):
        store.put_session_message("c", key, Message(f"t{key}", b""), {})
        store.flush()  # separate batches: insertion order differs from key order
    assert [k for k, _, _ in store.load_session_messages()["c"]] == [3, 7, 50, 1000]


def test_writes_are_invisible_until_flushed(store: SqliteStore, db: Path) -> None:
    store.put_retained(Message("t", b"x"))
    store.put_session("c", {"a": 1})
    with raw(db) as conn:
        assert committed_retained(conn) == {}
        store.flush()
        assert list(committed_retained(conn)) == ["t"]
        assert conn.execute("SELECT data FROM sessions").fetchone()[0] == '{"a":1}'


def test_writes_commit_by_themselves_within_the_interval(db: Path) -> None:
    with SqliteStore(db, flush_interval=0.02) as s, raw(db) as conn:
        s.put_retained(Message("t", b"x"))
        deadline = time.monotonic() + 5
        while not committed_retained(conn):
            assert time.monotonic() < deadline, "batch never committed"
            time.sleep(0.01)


def test_request_commit_commits_now_and_reports_the_batch(db: Path) -> None:
    """Group commit: a waited-for batch commits at once (not at the hour-long interval),
    and the listener hears its number after the data is in the file."""
    committed: list[tuple[int, int]] = []
    with SqliteStore(db, flush_interval=3600) as s, raw(db) as conn:

        def heard(batch: int) -> None:
            with raw(db) as other:  # on the writer thread: its own connection
                rows = len(committed_retained(other))
            committed.append((batch, rows))

        s.set_commit_listener(heard)
        s.put_retained(Message("a", b"x"))
        first = s.open_batch
        s.request_commit(first)
        s.request_commit(first)  # asking twice commits once
        deadline = time.monotonic() + 5
        while not committed:
            assert time.monotonic() < deadline, "requested batch never committed"
            time.sleep(0.005)
        assert committed == [(first, 1)]
        assert s.open_batch == first + 1
        # A batch that has nothing in it (a write raced into the previous one) is
        # still reported, so nobody waits for it forever.
        s.request_commit(s.open_batch)
        while len(committed) < 2:
            assert time.monotonic() < deadline, "empty requested batch never reported"
            time.sleep(0.005)
        assert committed[1] == (first + 1, 1)
        s.put_retained(Message("b", b"x"))
        time.sleep(0.05)
        assert len(committed) == 2  # not requested: waits for the interval, not reported
        assert len(committed_retained(conn)) == 1


def test_failed_batch_is_reported_only_once_committed(db: Path) -> None:
    committed: list[int] = []
    with SqliteStore(db, flush_interval=0.01, busy_timeout=0.02) as s, raw(db) as blocker:
        s.set_commit_listener(committed.append)
        blocker.execute("BEGIN IMMEDIATE")
        s.put_retained(Message("first", b""))
        batch = s.open_batch
        s.request_commit(batch)
        time.sleep(0.2)
        assert committed == []  # the write is not durable: nobody is told so
        blocker.execute("ROLLBACK")
        deadline = time.monotonic() + 5
        while not committed:
            assert time.monotonic() < deadline, "retried batch never reported"
            time.sleep(0.01)
        assert committed[0] >= batch
        assert [m.topic for m in s.load_retained()] == ["first"]


def test_awaiting_rel_ids_persist_exactly(store: SqliteStore) -> None:
    store.put_awaiting_rel("c", 1)
    store.put_awaiting_rel("c", 2)
    store.put_awaiting_rel("other", 1)
    store.flush()
    store.delete_awaiting_rel("c", 1)
    store.put_awaiting_rel("c", 3)
    store.delete_awaiting_rel("c", 3)  # added and removed within one batch: never stored
    store.flush()
    assert {k: sorted(v) for k, v in store.load_awaiting_rel().items()} == {
        "c": [2],
        "other": [1],
    }
    store.put_awaiting_rel("c", 4)
    store.delete_session("c")  # wipes committed and pending ids of that client
    store.put_awaiting_rel("c", 5)  # a new session after the delete keeps its own
    store.flush()
    assert {k: sorted(v) for k, v in store.load_awaiting_rel().items()} == {
        "c": [5],
        "other": [1],
    }


def journal_count(conn: sqlite3.Connection) -> int:
    return int(conn.execute("SELECT count(*) FROM retained_journal").fetchone()[0])


def payloads(s: SqliteStore) -> dict[str, bytes]:
    return {m.topic: m.payload for m in s.load_retained()}


def test_retained_writes_go_to_the_journal_and_fold_into_the_table_in_order(
    store: SqliteStore, db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch is journal rows; a fold step applies the oldest ones, at least a step's
    writes, and deletes them in the same transaction; what loads never changes."""
    monkeypatch.setattr(sqlite_module, "_JOURNAL_ROW", 2)
    monkeypatch.setattr(sqlite_module, "_FOLD_STEP", 3)
    store.put_retained(Message("a", b"a1"))
    store.put_retained(Message("b", b"b1"))
    store.put_retained(Message("c", b"c1"))
    store.flush()  # rows 1 (a, b) and 2 (c)
    store.delete_retained("a")
    store.put_retained(Message("b", b"b2"))
    store.flush()  # row 3 (delete a, b2)
    store.put_retained(Message("a", b"a3"))
    store.flush()  # row 4 (a3)
    expected = {"a": b"a3", "b": b"b2", "c": b"c1"}
    with raw(db) as conn:
        assert journal_count(conn) == 4
        assert conn.execute("SELECT count(*) FROM retained").fetchone()[0] == 0
        assert payloads(store) == expected
        store._run(store._fold)  # rows 1 and 2: three writes
        assert journal_count(conn) == 2
        assert sorted(conn.execute("SELECT topic FROM retained").fetchall()) == [
            ("a",),
            ("b",),
            ("c",),
        ]
        assert payloads(store) == expected
        store._run(store._fold)  # rows 3 and 4: the delete of a, then its new put
        assert journal_count(conn) == 0 and store._journal_rows == 0
        rows = committed_retained(conn)
        assert {t: load_message(d, topic=t).payload for t, d in rows.items()} == expected
        assert payloads(store) == expected
    store.delete_retained("c")
    store.flush()
    assert payloads(store) == {"a": b"a3", "b": b"b2"}  # a journal delete hides a table row
    fold_all(store)
    assert payloads(store) == {"a": b"a3", "b": b"b2"}


def test_a_delete_after_a_put_in_a_later_batch_stays_deleted_through_the_fold(
    store: SqliteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite_module, "_FOLD_STEP", 1)
    store.put_retained(Message("t", b"x"))
    store.flush()
    store.delete_retained("t")
    store.flush()
    assert payloads(store) == {}
    store._run(store._fold)  # the put folded, the delete still in the journal
    assert store._journal_rows == 1 and payloads(store) == {}
    store._run(store._fold)
    assert store._journal_rows == 0 and payloads(store) == {}


def test_a_store_stopped_between_fold_steps_loads_and_folds_the_rest(
    db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each step is one transaction: a store closed (or killed) with the journal half
    folded reopens with the same retained messages and folds the rest by itself."""
    monkeypatch.setattr(sqlite_module, "_JOURNAL_ROW", 10)
    monkeypatch.setattr(sqlite_module, "_FOLD_STEP", 10)
    with SqliteStore(db, flush_interval=3600) as s:
        for i in range(50):
            s.put_retained(Message(f"t/{i}", b"%d" % i))
        s.flush()
        for i in range(0, 50, 2):
            s.delete_retained(f"t/{i}")
        s.put_retained(Message("t/1", b"new"))
        s.flush()
        s._run(s._fold)
        s._run(s._fold)
        with raw(db) as conn:
            left = journal_count(conn)
        assert left == 6  # of 5 + 3 rows
    expected = {f"t/{i}": b"%d" % i for i in range(1, 50, 2)} | {"t/1": b"new"}
    with SqliteStore(db, flush_interval=0.01) as s, raw(db) as conn:
        assert s._journal_rows == left
        assert payloads(s) == expected
        deadline = time.monotonic() + 5
        while journal_count(conn):  # an idle writer folds one step a wake
            assert time.monotonic() < deadline, "the journal was never folded"
            time.sleep(0.01)
        assert payloads(s) == expected
        assert conn.execute("SELECT count(*) FROM retained").fetchone()[0] == 25


def test_a_busy_writer_folds_only_past_the_journal_bound(
    store: SqliteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A wake with a job (or many retained writes) does not fold, until the journal
    holds more than ``_JOURNAL_MAX_ROWS`` rows."""
    monkeypatch.setattr(sqlite_module, "_JOURNAL_ROW", 1)
    monkeypatch.setattr(sqlite_module, "_FOLD_STEP", 1)
    monkeypatch.setattr(sqlite_module, "_JOURNAL_MAX_ROWS", 3)
    rows = []
    for i in range(6):
        store.put_retained(Message(f"t/{i}", b""))
        store.flush()  # a job: this wake is not idle
        rows.append(store._run(lambda conn: store._journal_rows))
    assert rows == [1, 2, 3, 3, 3, 3]
    assert len(store.load_retained()) == 6


def test_an_unreadable_journal_row_is_skipped_on_load_and_dropped_by_the_fold(
    store: SqliteStore, db: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="ferrymq.storage")
    store.put_retained(Message("before", b""))
    store.flush()
    with raw(db) as conn:
        conn.execute("INSERT INTO retained_journal (data) VALUES (?)", (b"\xff\xff",))
    store.put_retained(Message("after", b""))
    store.flush()
    fresh = reopen(store)
    try:
        assert sorted(payloads(fresh)) == ["after", "before"]
        fold_all(fresh)
        assert sorted(payloads(fresh)) == ["after", "before"]
        with raw(db) as conn:
            assert journal_count(conn) == 0
    finally:
        fresh.close()
    assert "unreadable retained journal row" in caplog.text


def test_atomic_keeps_writes_in_one_batch(db: Path) -> None:
    """Writes made under ``atomic`` never straddle two batches, however busy the writer."""
    with SqliteStore(db, flush_interval=0.0005) as s:
        for i in range(300):
            with s.atomic:
                s.put_retained(Message(f"t{i}", b"x"))
                time.sleep(0.0001)  # let the writer try to swap in between
                before = s.open_batch
                s.put_awaiting_rel("c", i % 65535 + 1)
                assert s.open_batch == before
        s.flush()
        assert len(s.load_retained()) == 300


def test_schema_version_1_database_is_upgraded(store: SqliteStore, db: Path) -> None:
    store.close()
    with raw(db) as conn:
        conn.execute("DROP TABLE awaiting_rel")
        conn.execute("UPDATE schema_version SET version = 1")
        conn.execute("INSERT INTO sessions VALUES ('old', '{\"awaiting_rel\": [7]}')")
    with SqliteStore(db) as s:
        assert s.load_awaiting_rel() == {}
        assert s.load_sessions() == {"old": {"awaiting_rel": [7]}}  # the broker reads this form
    with raw(db) as conn:
        assert conn.execute("SELECT version FROM schema_version").fetchall() == [(SCHEMA_VERSION,)]


def test_synchronous_level_is_applied(db: Path) -> None:
    for level, code in (("normal", 1), ("full", 2)):
        with SqliteStore(db, synchronous=level) as s:
            assert s._run(lambda conn: conn.execute("PRAGMA synchronous").fetchone()[0]) == code
    with pytest.raises(ValueError, match="synchronous"):
        SqliteStore(db, synchronous="off")


def test_admin_writes_are_committed_before_returning(store: SqliteStore, db: Path) -> None:
    store.put_retained(Message("queued", b""))
    store.add_app("a", "n", "h")
    with raw(db) as conn:
        assert conn.execute("SELECT app_id FROM apps").fetchall() == [("a",)]
        # The admin job ran after the earlier message-path write was committed.
        assert list(committed_retained(conn)) == ["queued"]


def test_writer_survives_unencodable_data(
    store: SqliteStore, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="ferrymq.storage")
    store.put_session("bad", {"x": object()})
    store.put_session("good", {"x": 1})
    store.put_retained(Message("bad", b"", properties={"user_property": object()}))
    store.put_retained(Message("good", b""))
    store.put_session_message("c", 1, Message("m", b""), {"x": {1, 2}})
    store.flush()
    assert "bad" in caplog.text
    assert store.load_sessions() == {"good": {"x": 1}}
    assert [m.topic for m in store.load_retained()] == ["good"]
    assert store.load_session_messages() == {}
    store.put_retained(Message("later", b""))
    store.flush()
    assert sorted(m.topic for m in store.load_retained()) == ["good", "later"]


def test_locked_database_is_retried_not_lost(db: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, logger="ferrymq.storage")
    with SqliteStore(db, flush_interval=0.01, busy_timeout=0.05) as s, raw(db) as blocker:
        blocker.execute("BEGIN IMMEDIATE")  # another process holds the write lock
        s.put_retained(Message("first", b""))
        with pytest.raises(StorageError):
            s.flush()
        s.put_retained(Message("second", b""))
        assert s.get_app("nobody") is None  # reads still work
        blocker.execute("ROLLBACK")
        s.flush()
        assert sorted(m.topic for m in s.load_retained()) == ["first", "second"]
    assert "will retry" in caplog.text


# --- admin data ---


def test_apps(store: SqliteStore) -> None:
    store.add_app("b", "B", "h1")
    store.add_app("a", "A", "h2", "second")
    with pytest.raises(DuplicateError):
        store.add_app("a", "again", "h3")
    assert [a["app_id"] for a in store.list_apps()] == ["b", "a"]
    assert store.get_app("a")["name"] == "A"  # type: ignore[index]
    assert store.get_app("a")["enabled"] is True  # type: ignore[index]
    assert store.set_app_enabled("a", False) is True
    assert store.get_app("a")["enabled"] is False  # type: ignore[index]
    assert store.set_app_enabled("missing", False) is False
    assert store.delete_app("b") is True
    assert store.delete_app("b") is False
    assert store.get_app("b") is None


def test_auth_records(store: SqliteStore, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = iter([1000.0, 1000.0, 999.0])
    monkeypatch.setattr(sqlite_module.time, "time", lambda: next(clock))
    store.add_auth("username", "bob", "h-bob")
    store.add_auth("username", "amy", "h-amy")
    store.add_auth("username", "zed", "h-zed")
    monkeypatch.undo()
    store.add_auth("clientid", "bob", "h-client")  # same subject, other kind
    with pytest.raises(DuplicateError):
        store.add_auth("username", "bob", "other")
    assert [r["subject"] for r in store.list_auth("username")] == ["zed", "amy", "bob"]
    assert store.list_auth("clientid") == [store.get_auth("clientid", "bob")]
    assert store.get_auth("username", "bob") == {
        "subject": "bob",
        "password_hash": "h-bob",
        "created_at": 1000.0,
    }
    assert store.update_auth("username", "bob", "h-new") is True
    assert store.get_auth("username", "bob")["password_hash"] == "h-new"  # type: ignore[index]
    assert store.update_auth("username", "nobody", "x") is False
    assert store.delete_auth("username", "bob") is True
    assert store.delete_auth("username", "bob") is False
    assert store.get_auth("clientid", "bob") is not None
    with pytest.raises(ValueError):
        store.add_auth("email", "x", "h")


def test_acl_rules_keyed_by_subject_topic_and_action(store: SqliteStore) -> None:
    assert store.put_acl("clientid", "c1", "t/1", "pub", "allow", 1) is False
    store.put_acl("username", "u1", "t/2", "sub", "deny", 2)
    store.put_acl("all", "", "t/3", "pub", "allow", 3)
    store.put_acl("all", "", "t/3", "sub", "allow", 3)
    store.put_acl("clientid", "c1", "t/4", "sub", "allow", 4)
    # another action of the same topic is another rule; the same key replaces
    # the old rule and becomes the newest
    assert store.put_acl("clientid", "c1", "t/1", "sub", "deny", 5) is False
    assert store.put_acl("clientid", "c1", "t/1", "pub", "deny", 6) is True
    rows = store.list_acl()
    assert [(r["topic"], r["action"], r["access"], r["created_at"]) for r in rows] == [
        ("t/2", "sub", "deny", 2),
        ("t/3", "pub", "allow", 3),
        ("t/3", "sub", "allow", 3),
        ("t/4", "sub", "allow", 4),
        ("t/1", "sub", "deny", 5),
        ("t/1", "pub", "deny", 6),
    ]
    assert [r["topic"] for r in store.list_acl("clientid", "c1")] == ["t/4", "t/1", "t/1"]
    assert store.list_acl("username", "c1") == []
    assert store.delete_acl("clientid", "c1", "t/1") is True  # both actions
    assert store.delete_acl("clientid", "c1", "t/1") is False
    assert [r["topic"] for r in store.list_acl("clientid")] == ["t/4"]
    with pytest.raises(ValueError):
        store.put_acl("all", "someone", "t", "pub", "allow", 1)
    with pytest.raises(ValueError):
        store.put_acl("group", "g", "t", "pub", "allow", 1)
    with pytest.raises(ValueError):
        store.put_acl("all", "", "t", "subpub", "allow", 1)
    # pubsub: a pub and a sub rule in one step, created now when no time is given
    assert store.put_acl("username", "u2", "p/#", "pubsub", "deny") is False
    rows = store.list_acl("username", "u2")
    assert [r["action"] for r in rows] == ["pub", "sub"]
    assert rows[0]["created_at"] == rows[1]["created_at"] > 1_600_000_000_000
    assert store.put_acl("username", "u2", "p/#", "pubsub", "allow") is True


def test_version_1_acl_rules_are_migrated(tmp_path) -> None:
    db = tmp_path / "old.db"
    conn = sqlite3.connect(db)
    conn.executescript(
        """
        CREATE TABLE schema_version (version INTEGER NOT NULL);
        INSERT INTO schema_version VALUES (1);
        CREATE TABLE acl (
            id INTEGER PRIMARY KEY, kind TEXT NOT NULL, subject TEXT NOT NULL,
            topic TEXT NOT NULL, action TEXT NOT NULL, access TEXT NOT NULL,
            created_at REAL NOT NULL, UNIQUE (kind, subject, topic));
        INSERT INTO acl (kind, subject, topic, action, access, created_at) VALUES
            ('clientid', 'c', 'devices/%c/#', 'pubsub', 'allow', 10.5),
            ('all', '', '#', 'sub', 'deny', 20.0);
        """
    )
    conn.commit()
    conn.close()
    with SqliteStore(str(db)) as s:
        rows = [(r["topic"], r["action"], r["created_at"]) for r in s.list_acl()]
        assert rows == [
            ("devices/%c/#", "pub", 10500),
            ("devices/%c/#", "sub", 10500),
            ("#", "sub", 20000),
        ]
        assert s.put_acl("all", "", "#", "pub", "deny", 30000) is False
    version = sqlite3.connect(db).execute("SELECT version FROM schema_version").fetchone()[0]
    assert version == SCHEMA_VERSION == 3


def test_admin_calls_from_many_threads(store: SqliteStore) -> None:
    def work(n: int) -> None:
        for i in range(50):
            store.put_session_message(f"c{n}", i, Message("t", b""), {"i": i})
            store.add_auth("username", f"u{n}-{i}", "h")
            assert store.get_auth("username", f"u{n}-{i}") is not None

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(store.list_auth("username")) == 400
    msgs = store.load_session_messages()
    assert {cid: len(items) for cid, items in msgs.items()} == {f"c{n}": 50 for n in range(8)}


# --- asyncio ---


class _NoExecutor(ThreadPoolExecutor):
    def submit(self, *args: Any, **kwargs: Any) -> Any:
        raise AssertionError("store methods must not need an executor thread")


async def test_call_from_the_event_loop(store: SqliteStore) -> None:
    loop = asyncio.get_running_loop()
    loop.set_default_executor(_NoExecutor())
    for i in range(100):
        store.put_session_message("c", i, Message("t", b""), {})
    results = await asyncio.gather(
        *(store.call(store.add_auth, "username", f"u{i}", f"h{i}") for i in range(50))
    )
    assert results == [None] * 50
    with pytest.raises(DuplicateError):
        await store.call(store.add_auth, "username", "u0", "again")
    with pytest.raises(ValueError):
        await store.call(store.get_auth, "nope", "u0")
    assert len(await store.call(store.list_auth, "username")) == 50
    assert len((await store.call(store.load_session_messages))["c"]) == 100
    await store.call(store.add_app, "app", "name", "hash")  # default arguments
    assert (await store.call(store.get_app, "app"))["desc"] == ""  # type: ignore[index]
    await store.call(store.flush)


async def test_call_with_other_callables_does_not_block_the_loop(store: SqliteStore) -> None:
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.01)

    task = asyncio.ensure_future(ticker())
    await store.call(time.sleep, 0.3)
    task.cancel()
    assert ticks >= 10


# --- other processes ---


def test_bans_are_stored_replaced_and_deleted(tmp_path) -> None:
    path = tmp_path / "bans.db"
    ban = {"kind": "clientid", "who": "c1", "by": "ops", "reason": "r", "at": 10, "until": 20}
    with SqliteStore(path) as store:
        store.put_ban(ban)
        store.put_ban({**ban, "kind": "peerhost", "who": "10.0.0.1", "at": 5})
        store.put_ban({**ban, "until": 30})  # same key: replaced
    with SqliteStore(path) as store:
        assert store.list_bans() == [
            {**ban, "kind": "peerhost", "who": "10.0.0.1", "at": 5},
            {**ban, "until": 30},
        ]
        assert store.delete_ban("clientid", "c1") is True
        assert store.delete_ban("clientid", "c1") is False
        assert [b["who"] for b in store.list_bans()] == ["10.0.0.1"]
