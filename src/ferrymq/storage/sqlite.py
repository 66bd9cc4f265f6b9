"""SQLite implementation of the storage port.

One writer thread owns the only connection; nothing touches SQLite on the
event loop. Rules this file keeps:

* Message-path methods only record the latest operation per key in dicts under
  a lock (retained writes: appended to a deque, without it); the writer swaps
  those out every ``flush_interval`` and commits them as one transaction
  (serialising messages there, so operations that cancel out within a batch
  cost no encoding and no I/O). ``delete_session``
  drops the session's pending message operations and schedules a wipe of its
  stored messages, which runs before any message operation of the same batch.
* Synchronous operations (admin, loading, flush) are jobs queued to the same
  thread. The writer takes the jobs and the pending writes in one step and
  commits the writes first, so a job sees every write queued before it.
* A batch that fails to commit (database locked by another process, disk
  full) is kept and retried ahead of the next one, in order, for up to
  ``_GIVE_UP_AFTER`` seconds. The writer thread logs errors and never dies.
* Batches are numbered. ``open_batch`` is the number of the batch that the
  next write joins; ``request_commit(n)`` wakes the writer to commit up to
  batch ``n`` now (group commit: whatever arrives while a commit runs goes
  into the next one), and the commit listener is told each requested batch
  number once it is committed, so acknowledgements can wait for durability.
  A failed batch is reported with the first later batch that commits (one
  dropped after ``_GIVE_UP_AFTER`` too: its loss is logged as an error).
* Retained writes go to a journal first: a batch's retained writes (deletes
  too, the last write per topic) are rows of ``retained_journal``, a thousand
  writes concatenated a row, committed with the batch; the ``retained`` table
  (one row a topic) gets them when the writer folds the journal, in steps of
  at least ``_FOLD_STEP`` writes (the oldest journal rows applied and deleted in
  one transaction), one step per wake that brought few retained writes and no
  job, so a burst pays SQLite's per-row insert later, in small slices, instead
  of inside the burst. More than ``_JOURNAL_MAX_ROWS`` rows are folded at once.
  Loading reads ``retained`` and then applies the journal in order.
* WAL mode; ``synchronous`` is NORMAL by default (a committed batch survives
  the process being killed, the last ones may be lost on power loss) or FULL
  (each commit is synced to disk, surviving power loss). Each batch is one
  transaction, so the file is never half-written. Message-path writes made
  after ``close()`` are ignored.
"""

from __future__ import annotations

# SQLite's C module itself, not the ``sqlite3`` package around it: that package only adds
# the DB-API constructors and the date/time adapters (deprecated since 3.12), and imports
# ``datetime`` for them, 0.3 MB of RSS for values this store never writes (text, integers,
# bytes). Connection, connect and the exception classes are the same objects.
import _sqlite3 as sqlite3
import asyncio
import atexit
import json
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any, TypeVar

from ferrymq.model.message import Message
from ferrymq.storage import records
from ferrymq.storage.codec import (
    dump_row,
    journal_merge,
    journal_rows,
    latest_retained,
    load_message,
)
from ferrymq.storage.store import (
    ACL_KINDS,
    AUTH_KINDS,
    DuplicateError,
    SessionMessage,
    StorageError,
)

if TYPE_CHECKING:
    from ferrymq.storage.store import Store

__all__ = ["SCHEMA_VERSION", "DuplicateError", "SqliteStore", "StorageError"]

log = logging.getLogger("ferrymq.storage")

T = TypeVar("T")

SCHEMA_VERSION = 3
SYNCHRONOUS = ("normal", "full")
_GIVE_UP_AFTER = 300.0  # seconds a failing batch is retried before it is dropped
# Retained journal: writes a row, writes a fold step applies at least, the rows beyond
# which the writer folds whatever else it has to do, and the retained writes of a batch
# that make a wake too busy to fold.
_JOURNAL_ROW = 1000
_FOLD_STEP = 1000
_JOURNAL_MAX_ROWS = 500
_BUSY_RETAINED = 100

_ACL_TABLE = """CREATE TABLE IF NOT EXISTS {name} (
        id INTEGER PRIMARY KEY, kind TEXT NOT NULL, subject TEXT NOT NULL, topic TEXT NOT NULL,
        action TEXT NOT NULL, access TEXT NOT NULL, created_at INTEGER NOT NULL,
        UNIQUE (kind, subject, topic, action))"""
_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)",
    "CREATE TABLE IF NOT EXISTS retained (topic TEXT PRIMARY KEY, data BLOB NOT NULL)",
    "CREATE TABLE IF NOT EXISTS retained_journal (seq INTEGER PRIMARY KEY, data BLOB NOT NULL)",
    "CREATE TABLE IF NOT EXISTS sessions (client_id TEXT PRIMARY KEY, data TEXT NOT NULL)",
    """CREATE TABLE IF NOT EXISTS session_messages (
        client_id TEXT NOT NULL, key INTEGER NOT NULL, data BLOB NOT NULL, meta TEXT NOT NULL,
        PRIMARY KEY (client_id, key))""",
    """CREATE TABLE IF NOT EXISTS awaiting_rel (
        client_id TEXT NOT NULL, packet_id INTEGER NOT NULL, PRIMARY KEY (client_id, packet_id))""",
    """CREATE TABLE IF NOT EXISTS apps (
        app_id TEXT PRIMARY KEY, name TEXT NOT NULL, secret_hash TEXT NOT NULL,
        description TEXT NOT NULL, enabled INTEGER NOT NULL, created_at REAL NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS auth (
        kind TEXT NOT NULL, subject TEXT NOT NULL, password_hash TEXT NOT NULL,
        created_at REAL NOT NULL, PRIMARY KEY (kind, subject))""",
    _ACL_TABLE.format(name="acl"),
    """CREATE TABLE IF NOT EXISTS banned (
        kind TEXT NOT NULL, who TEXT NOT NULL, by TEXT NOT NULL, reason TEXT NOT NULL,
        at INTEGER NOT NULL, until INTEGER NOT NULL, PRIMARY KEY (kind, who))""",
    """CREATE TABLE IF NOT EXISTS dashboard_users (
        username TEXT PRIMARY KEY, password_hash TEXT NOT NULL, description TEXT NOT NULL,
        created_at REAL NOT NULL)""",
)
# Upgrades from version N to N + 1, keyed by N (new tables, such as awaiting_rel in
# version 2, come from _SCHEMA).
_MIGRATIONS: dict[int, tuple[str, ...]] = {
    # ACL rules keyed by (kind, subject, topic, action), pubsub as two rules,
    # created_at in epoch milliseconds (EMQX 4.4's model); the order is kept.
    1: (
        _ACL_TABLE.format(name="acl_v2"),
        """INSERT INTO acl_v2 (kind, subject, topic, action, access, created_at)
        SELECT kind, subject, topic, a.act, access, CAST(created_at * 1000 AS INTEGER)
        FROM acl JOIN (SELECT 'pub' AS act UNION ALL SELECT 'sub') AS a
        ON acl.action = a.act OR acl.action = 'pubsub' ORDER BY acl.id, a.act""",
        "DROP TABLE acl",
        "ALTER TABLE acl_v2 RENAME TO acl",
    ),
    # Version 3 adds retained_journal: a version 2 broker would not read it, so it refuses
    # a version 3 database rather than lose the retained writes still in the journal.
    2: (),
}

_WIPE = "DELETE FROM session_messages WHERE client_id = ?"
_WIPE_REL = "DELETE FROM awaiting_rel WHERE client_id = ?"
_PUT_REL = "INSERT OR IGNORE INTO awaiting_rel (client_id, packet_id) VALUES (?, ?)"
_DEL_REL = "DELETE FROM awaiting_rel WHERE client_id = ? AND packet_id = ?"
_DEL_SESSION = "DELETE FROM sessions WHERE client_id = ?"
_PUT_SESSION = "INSERT OR REPLACE INTO sessions (client_id, data) VALUES (?, ?)"
_DEL_MESSAGE = "DELETE FROM session_messages WHERE client_id = ? AND key = ?"
_SET_META = "UPDATE session_messages SET meta = ? WHERE client_id = ? AND key = ?"
_PUT_MESSAGE = (
    "INSERT OR REPLACE INTO session_messages (client_id, key, data, meta) VALUES (?, ?, ?, ?)"
)
_DEL_RETAINED = "DELETE FROM retained WHERE topic = ?"
_PUT_RETAINED = "INSERT OR REPLACE INTO retained (topic, data) VALUES (?, ?)"
_PUT_JOURNAL = "INSERT INTO retained_journal (data) VALUES (?)"
_JOURNAL_NEXT = "SELECT seq, data FROM retained_journal WHERE seq > ? ORDER BY seq LIMIT 1"
_JOURNAL_DROP = "DELETE FROM retained_journal WHERE seq <= ?"

_encode_json = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
_decode_json = json.JSONDecoder().decode

# A pending session-message operation: (msg, meta) is a put, (None, meta) a meta
# update, None a delete.
_MessageOp = tuple[Message | None, dict[str, Any]] | None
_Statements = list[tuple[str, list[tuple[Any, ...]]]]
_Job = tuple[Callable[..., Any], tuple[Any, ...], Future[Any]]
_Batch = tuple[
    dict[str, Message | None],  # retained: topic -> message, None to delete
    dict[str, dict[str, Any] | None],  # sessions: client id -> data, None to delete
    set[str],  # client ids whose stored messages are wiped first
    dict[str, dict[int, _MessageOp]],  # session messages: client id -> key -> operation
    dict[tuple[str, int], bool],  # QoS 2 ids awaiting PUBREL: (client id, pid) -> put or delete
]


def _stop(conn: sqlite3.Connection) -> None:
    """Job that ends the writer loop (recognised by identity)."""


class SqliteStore:
    """Durable state in one SQLite file (or ``":memory:"``), see the module docstring."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        flush_interval: float = 0.05,
        *,
        busy_timeout: float = 5.0,
        synchronous: str = "normal",
    ) -> None:
        if flush_interval <= 0:
            raise ValueError("flush_interval must be positive")
        if synchronous not in SYNCHRONOUS:
            raise ValueError(f"synchronous must be one of {SYNCHRONOUS}")
        self.synchronous = synchronous
        self.path = os.fspath(path)
        self.flush_interval = flush_interval
        self._busy_ms = int(busy_timeout * 1000)
        self._lock = threading.RLock()
        #: Held around several message-path writes that must land in one batch.
        self.atomic = self._lock
        self._wake = threading.Event()
        self._state = "new"  # -> "opening" -> "open" -> "closing" -> "closed"
        self._thread: threading.Thread | None = None
        self._writer_ident: int | None = None
        self._conn: sqlite3.Connection | None = None
        # Pending message-path operations; swapped out by the writer under _lock.
        # Retained writes, in order: a Message to put, a topic to delete. Appended without
        # the lock (a deque's append and popleft are atomic): the message path pays one
        # append per retained message, and the writer takes what was there once it had
        # numbered the batch (_writer), so a write never misses the batch it is waited in.
        self._retained_log: deque[Message | str] = deque()
        # put_retained and delete_retained are the deque's own append, bound once: as
        # methods of this class they were an interpreted call on the event loop for every
        # retained message (about 800 instructions of its 21,000, callgrind).
        self.put_retained: Callable[[Message], None] = self._retained_log.append
        self.delete_retained: Callable[[str], None] = self._retained_log.append
        self._sessions: dict[str, dict[str, Any] | None] = {}
        self._wipes: set[str] = set()
        self._messages: dict[str, dict[int, _MessageOp]] = {}
        self._rel: dict[tuple[str, int], bool] = {}
        self._jobs: list[_Job] = []
        # Group commit: the batch number writes join, the highest one waited for,
        # and who is told when a waited-for batch has committed.
        self.open_batch = 1
        self._requested = 0
        self._on_commit: Callable[[int], None] | None = None
        #: Told (on the writer thread) after each admin write that succeeded.
        self._on_admin_write: Callable[[], object] | None = None
        # Writer-thread state: statements of batches that failed to commit.
        self._backlog: _Statements = []
        self._journal_rows = 0  # rows of retained_journal committed and not folded yet
        self._failures = 0
        self._failing_since = 0.0

    # --- lifecycle ---

    def open(self) -> None:
        """Create the file (and its directory), the schema, switch to WAL; start the writer."""
        with self._lock:
            if self._state != "new":
                raise StorageError(f"store is {self._state}")
            self._state = "opening"
        ready: Future[None] = Future()
        thread = threading.Thread(
            target=self._writer, args=(ready,), name="ferrymq-storage", daemon=True
        )
        thread.start()
        try:
            ready.result()
        except BaseException:
            thread.join()
            with self._lock:
                self._state = "new"
            raise
        self._thread = thread
        with self._lock:
            self._state = "open"
        atexit.register(self.close)  # a process that forgets close() still commits

    def close(self) -> None:
        """Commit everything queued, stop the writer thread and close the database."""
        with self._lock:
            if self._state != "open":
                return
            self._state = "closing"
            done: Future[None] = Future()
            self._jobs.append((_stop, (), done))
        atexit.unregister(self.close)
        self._wake.set()
        done.result()
        assert self._thread is not None
        self._thread.join()
        self._thread = None
        with self._lock:
            self._state = "closed"

    def __enter__(self) -> SqliteStore:
        self.open()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def flush(self) -> None:
        """Block until every write queued before the call is committed.

        Raises StorageError when the batch could not be committed (it stays
        queued and is retried).
        """
        self._run(self._check_flushed)

    # --- group commit ---

    def set_commit_listener(self, listener: Callable[[int], None] | None) -> None:
        """``listener(n)`` runs on the writer thread once batch ``n`` (and every one before
        it) is committed, for each ``n`` passed to :meth:`request_commit`."""
        self._on_commit = listener

    def set_admin_listener(self, listener: Callable[[], object] | None) -> None:
        """``listener()`` runs on the writer thread after every admin write (apps, auth
        records, ACL rules, bans, dashboard users) that succeeded; cluster mode spreads
        them from there."""
        self._on_admin_write = listener

    def request_commit(self, batch: int) -> None:
        """Commit batches up to ``batch`` now instead of at the next flush interval."""
        with self._lock:
            if batch <= self._requested:
                return
            self._requested = batch
        self._wake.set()

    # --- message path ---

    def put_session(self, client_id: str, data: dict[str, Any]) -> None:
        with self._lock:
            self._sessions[client_id] = data

    def delete_session(self, client_id: str) -> None:
        with self._lock:
            self._sessions[client_id] = None
            self._messages.pop(client_id, None)
            if self._rel:
                for key in [k for k in self._rel if k[0] == client_id]:
                    del self._rel[key]
            self._wipes.add(client_id)

    def put_awaiting_rel(self, client_id: str, pid: int) -> None:
        with self._lock:
            self._rel[(client_id, pid)] = True

    def delete_awaiting_rel(self, client_id: str, pid: int) -> None:
        with self._lock:
            self._rel[(client_id, pid)] = False

    def put_session_message(
        self, client_id: str, key: int, msg: Message, meta: dict[str, Any]
    ) -> None:
        with self._lock:
            ops = self._messages.get(client_id)
            if ops is None:
                self._messages[client_id] = {key: (msg, meta)}
            else:
                ops[key] = (msg, meta)

    def update_session_message_meta(self, client_id: str, key: int, meta: dict[str, Any]) -> None:
        with self._lock:
            ops = self._messages.get(client_id)
            if ops is None:
                self._messages[client_id] = {key: (None, meta)}
                return
            if key not in ops:
                ops[key] = (None, meta)
            else:
                op = ops[key]
                if op is not None:  # a pending put or meta update: replace its meta
                    ops[key] = (op[0], meta)
            # else: deleted in this batch, stays deleted

    def delete_session_message(self, client_id: str, key: int) -> None:
        with self._lock:
            ops = self._messages.get(client_id)
            if ops is None:
                self._messages[client_id] = {key: None}
            else:
                ops[key] = None

    # --- start-up loading ---

    def load_retained(self) -> list[Message]:
        return self._run(_load_retained)

    def load_sessions(self) -> dict[str, dict[str, Any]]:
        return self._run(_load_sessions)

    def load_session_messages(self) -> dict[str, list[SessionMessage]]:
        return self._run(_load_session_messages)

    def load_awaiting_rel(self) -> dict[str, list[int]]:
        return self._run(_load_awaiting_rel)

    def load_session_keys(self) -> dict[str, int]:
        return self._run(_load_session_keys)

    # --- admin data ---

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` without blocking the event loop.

        A method of this store goes straight to the writer thread; any other
        callable runs in the loop's default executor.
        """
        if getattr(fn, "__self__", None) is self:
            name = fn.__name__
            job = self._check_flushed if name == "flush" else _JOBS.get(name)
            if job is not None:
                return await asyncio.wrap_future(self._submit(job, args))
        return await asyncio.get_running_loop().run_in_executor(None, fn, *args)

    def add_app(
        self, app_id: str, name: str, secret_hash: str, desc: str = "", enabled: bool = True
    ) -> None:
        self._run(_add_app, app_id, name, secret_hash, desc, enabled)

    def get_app(self, app_id: str) -> dict[str, Any] | None:
        return self._run(_get_app, app_id)

    def list_apps(self) -> list[dict[str, Any]]:
        return self._run(_list_apps)

    def set_app_enabled(self, app_id: str, enabled: bool) -> bool:
        return self._run(_set_app_enabled, app_id, enabled)

    def delete_app(self, app_id: str) -> bool:
        return self._run(_delete_app, app_id)

    def add_auth(self, kind: str, subject: str, password_hash: str) -> None:
        self._run(_add_auth, kind, subject, password_hash)

    def get_auth(self, kind: str, subject: str) -> dict[str, Any] | None:
        return self._run(_get_auth, kind, subject)

    def list_auth(self, kind: str) -> list[dict[str, Any]]:
        return self._run(_list_auth, kind)

    def update_auth(self, kind: str, subject: str, password_hash: str) -> bool:
        return self._run(_update_auth, kind, subject, password_hash)

    def delete_auth(self, kind: str, subject: str) -> bool:
        return self._run(_delete_auth, kind, subject)

    def put_acl(
        self,
        kind: str,
        subject: str,
        topic: str,
        action: str,
        access: str,
        created_at: int | None = None,
    ) -> bool:
        """Store a rule as the newest, replacing the one with the same (kind, subject,
        topic, action); ``pubsub`` is stored as a pub and a sub rule. True when one was
        replaced. ``created_at``: epoch milliseconds (default now).
        """
        return self._run(_put_acl, kind, subject, topic, action, access, created_at)

    def list_acl(self, kind: str | None = None, subject: str | None = None) -> list[dict[str, Any]]:
        return self._run(_list_acl, kind, subject)

    def delete_acl(self, kind: str, subject: str, topic: str) -> bool:
        return self._run(_delete_acl, kind, subject, topic)

    def put_ban(self, ban: dict[str, Any]) -> None:
        """Add or replace a ban ``{kind, who, by, reason, at, until}``."""
        self._run(_put_ban, ban)

    def list_bans(self) -> list[dict[str, Any]]:
        return self._run(_list_bans)

    def delete_ban(self, kind: str, who: str) -> bool:
        return self._run(_delete_ban, kind, who)

    def admin_records(self) -> dict[str, dict[str, records.Record]]:
        """All apps, auth records, ACL rules, bans and dashboard users as records
        (``storage/records.py``)."""
        return self._run(records.snapshot)

    def apply_admin_records(self, changes: list[records.Change]) -> list[str]:
        """Write other nodes' changes (compare-and-set, ``records.apply``); not reported
        to the admin listener, which hears only this node's own edits."""
        return self._run(records.apply, changes)

    def add_dashboard_user(self, username: str, password_hash: str, desc: str = "") -> None:
        self._run(_add_dashboard_user, username, password_hash, desc)

    def get_dashboard_user(self, username: str) -> dict[str, Any] | None:
        return self._run(_get_dashboard_user, username)

    def list_dashboard_users(self) -> list[dict[str, Any]]:
        return self._run(_list_dashboard_users)

    def update_dashboard_user(self, username: str, password_hash: str) -> bool:
        return self._run(_update_dashboard_user, username, password_hash)

    def delete_dashboard_user(self, username: str) -> bool:
        return self._run(_delete_dashboard_user, username)

    # --- jobs ---

    def _submit(self, fn: Callable[..., T], args: tuple[Any, ...]) -> Future[T]:
        fut: Future[T] = Future()
        with self._lock:
            if self._state != "open":
                raise StorageError(f"store is {self._state}")
            self._jobs.append((fn, args, fut))
        self._wake.set()
        return fut

    def _run(self, fn: Callable[..., T], *args: Any) -> T:
        if threading.get_ident() == self._writer_ident:  # re-entrant use from a job
            assert self._conn is not None
            return fn(self._conn, *args)
        return self._submit(fn, args).result()

    def _check_flushed(self, conn: sqlite3.Connection) -> None:
        if self._backlog:
            raise StorageError("queued writes could not be committed yet; they will be retried")

    # --- writer thread ---

    def _writer(self, ready: Future[None]) -> None:
        try:
            conn = self._connect()
        except BaseException as exc:
            ready.set_exception(exc)
            return
        self._conn = conn
        self._writer_ident = threading.get_ident()
        ready.set_result(None)
        stopped: Future[None] | None = None
        reported = 0  # highest batch number the commit listener was told
        try:
            while stopped is None:
                self._wake.wait(self.flush_interval)
                self._wake.clear()
                with self._lock:
                    jobs = self._jobs
                    self._jobs = []
                    number = self.open_batch
                    if self._pending() or self._requested >= number:
                        self.open_batch = number + 1
                    # Counted after the number moved on: a retained write appended since
                    # (without the lock) waits for a later batch, or is in this one.
                    retained = len(self._retained_log)
                    batch = self._take_batch(retained)
                    # Every batch up to here is taken: committed once this commit is.
                    done = min(self._requested, self.open_batch - 1)
                try:
                    if batch is not None or self._backlog:
                        self._commit(conn, batch)
                except Exception:
                    log.exception("storage writer failed on a batch")
                if done > reported and not self._backlog and self._on_commit is not None:
                    reported = done
                    try:
                        self._on_commit(done)
                    except Exception:
                        log.exception("commit listener failed")
                for fn, args, fut in jobs:
                    if fn is _stop:
                        stopped = fut
                        continue
                    try:
                        self._run_job(conn, fn, args, fut)
                    except Exception:
                        log.exception("storage writer failed on a job")
                if self._journal_rows and not self._backlog and stopped is None:
                    idle = not jobs and retained < _BUSY_RETAINED
                    try:
                        if idle:
                            self._fold(conn)
                        while self._journal_rows > _JOURNAL_MAX_ROWS and not self._backlog:
                            self._fold(conn)
                    except Exception:
                        log.exception("storage writer failed folding the retained journal")
        finally:
            self._writer_ident = None
            self._conn = None
            if self._backlog:
                log.error("closing with %d uncommitted write statements", len(self._backlog))
            try:
                conn.close()
            except sqlite3.Error:
                log.exception("closing the database failed")
            if stopped is not None:
                stopped.set_result(None)

    def _connect(self) -> sqlite3.Connection:
        if self.path != ":memory:":
            parent = os.path.dirname(os.path.abspath(self.path))
            os.makedirs(parent, exist_ok=True)
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            conn.execute(f"PRAGMA busy_timeout = {self._busy_ms}")
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if mode != "wal" and self.path != ":memory:":
                log.warning("database %s is in journal mode %s, not WAL", self.path, mode)
            conn.execute(f"PRAGMA synchronous = {self.synchronous.upper()}")
            _create_schema(conn)
            self._journal_rows = conn.execute("SELECT count(*) FROM retained_journal").fetchone()[0]
        except BaseException:
            conn.close()
            raise
        return conn

    def _pending(self) -> bool:
        """Whether any message-path write waits (caller holds _lock)."""
        return bool(
            self._retained_log or self._sessions or self._messages or self._wipes or self._rel
        )

    def _take_batch(self, retained: int) -> _Batch | None:
        """Swap out the pending operations and the first ``retained`` retained writes
        (caller holds _lock)."""
        if not (retained or self._sessions or self._messages or self._wipes or self._rel):
            return None
        batch = (
            latest_retained(self._retained_log, retained),
            self._sessions,
            self._wipes,
            self._messages,
            self._rel,
        )
        self._sessions = {}
        self._wipes = set()
        self._messages = {}
        self._rel = {}
        return batch

    def _commit(self, conn: sqlite3.Connection, batch: _Batch | None) -> None:
        """Commit the backlog and ``batch`` in one transaction; on failure keep them as
        the backlog."""
        statements = self._backlog + _statements(*batch) if batch is not None else self._backlog
        if not statements:
            return
        try:
            conn.execute("BEGIN IMMEDIATE")
            for sql, rows in statements:
                conn.executemany(sql, rows)
            conn.execute("COMMIT")
        except Exception as exc:
            _rollback(conn)
            now = time.monotonic()
            if not self._failures:
                self._failing_since = now
            self._failures += 1
            if now - self._failing_since > _GIVE_UP_AFTER:
                log.error(
                    "dropping %d write statements after %d failed commits: %s",
                    len(statements),
                    self._failures,
                    exc,
                )
                self._backlog = []
                self._failures = 0
                return
            self._backlog = statements
            if self._failures & (self._failures - 1) == 0:  # 1, 2, 4, 8 ...: rate-limited
                log.error(
                    "committing a batch failed (attempt %d), will retry: %s", self._failures, exc
                )
            return
        if self._failures:
            log.warning("batch committed after %d failed attempts", self._failures)
            self._failures = 0
        self._backlog = []
        self._journal_rows += sum(len(rows) for sql, rows in statements if sql == _PUT_JOURNAL)

    def _fold(self, conn: sqlite3.Connection) -> None:
        """One fold step: the oldest journal rows, at least ``_FOLD_STEP`` writes (or all),
        applied to ``retained`` and deleted in one transaction. A journal row that cannot
        be read is logged and dropped (loading would skip it too)."""
        latest: dict[str, bytearray | None] = {}
        last = count = rows = 0
        while count < _FOLD_STEP:
            row = conn.execute(_JOURNAL_NEXT, (last,)).fetchone()
            if row is None:
                break
            last = row[0]
            rows += 1
            try:
                count += journal_merge(latest, row[1])
            except ValueError:
                log.exception("dropping unreadable retained journal row %d", last)
        if not rows:
            self._journal_rows = 0
            return
        deletes = [(topic,) for topic, data in latest.items() if data is None]
        puts = [(topic, data) for topic, data in latest.items() if data is not None]
        try:
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany(_DEL_RETAINED, deletes)
            conn.executemany(_PUT_RETAINED, puts)
            conn.execute(_JOURNAL_DROP, (last,))
            conn.execute("COMMIT")
        except Exception:
            _rollback(conn)
            raise
        self._journal_rows = max(0, self._journal_rows - rows)

    def _run_job(
        self,
        conn: sqlite3.Connection,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        fut: Future[Any],
    ) -> None:
        if not fut.set_running_or_notify_cancel():
            return
        try:
            result = fn(conn, *args)
        except sqlite3.Error as exc:
            _rollback(conn)
            fut.set_exception(StorageError(str(exc)))
        except Exception as exc:
            _rollback(conn)
            fut.set_exception(exc)
        else:
            fut.set_result(result)
            listener = self._on_admin_write
            if listener is not None and fn in _ADMIN_WRITES:
                try:
                    listener()
                except Exception:
                    log.exception("admin write listener failed")


def _create_schema(conn: sqlite3.Connection) -> None:
    conn.execute("BEGIN IMMEDIATE")
    try:
        for sql in _SCHEMA:
            conn.execute(sql)
        version = conn.execute("SELECT max(version) FROM schema_version").fetchone()[0]
        if version is None:
            conn.execute("INSERT INTO schema_version (version) VALUES (?)", (SCHEMA_VERSION,))
        elif version > SCHEMA_VERSION:
            raise StorageError(
                f"database schema version {version} is newer than this ferrymq ({SCHEMA_VERSION})"
            )
        else:
            while version < SCHEMA_VERSION:
                for sql in _MIGRATIONS[version]:
                    conn.execute(sql)
                version += 1
            conn.execute("UPDATE schema_version SET version = ?", (version,))
        conn.execute("COMMIT")
    except BaseException:
        _rollback(conn)
        raise


def _rollback(conn: sqlite3.Connection) -> None:
    if conn.in_transaction:
        try:
            conn.execute("ROLLBACK")
        except sqlite3.Error:
            log.exception("rollback failed")


def _statements(
    retained: dict[str, Message | None],
    sessions: dict[str, dict[str, Any] | None],
    wipes: set[str],
    messages: dict[str, dict[int, _MessageOp]],
    rel: dict[tuple[str, int], bool],
) -> _Statements:
    """Encode one batch; an operation that cannot be encoded is logged and skipped."""
    out: _Statements = []
    if wipes:
        wiped = [(cid,) for cid in wipes]
        out.append((_WIPE, wiped))
        out.append((_WIPE_REL, wiped))
    if rel:
        out.append((_DEL_REL, [key for key, put in rel.items() if not put]))
        out.append((_PUT_REL, [key for key, put in rel.items() if put]))
    if sessions:
        deletes: list[tuple[Any, ...]] = []
        puts: list[tuple[Any, ...]] = []
        for cid, data in sessions.items():
            if data is None:
                deletes.append((cid,))
                continue
            try:
                puts.append((cid, _encode_json(data)))
            except Exception:
                log.exception("cannot store session %r", cid)
        out.append((_DEL_SESSION, deletes))
        out.append((_PUT_SESSION, puts))
    if messages:
        deletes = []
        metas: list[tuple[Any, ...]] = []
        puts = []
        for cid, ops in messages.items():
            for key, op in ops.items():
                if op is None:
                    deletes.append((cid, key))
                    continue
                msg, meta = op
                try:
                    if msg is None:
                        metas.append((_encode_json(meta), cid, key))
                    else:
                        puts.append((cid, key, dump_row(msg), _encode_json(meta)))
                except Exception:
                    log.exception("cannot store message %r of session %r", key, cid)
        out.append((_DEL_MESSAGE, deletes))
        out.append((_SET_META, metas))
        out.append((_PUT_MESSAGE, puts))
    if retained:
        out.append((_PUT_JOURNAL, journal_rows(retained, _JOURNAL_ROW)))
    return [stmt for stmt in out if stmt[1]]


# --- jobs run on the writer thread; each takes the connection first ---


def _load_retained(conn: sqlite3.Connection) -> list[Message]:
    """The ``retained`` table, then the journal's writes in order on top of it."""
    latest: dict[str, bytearray | None] = {}
    for seq, data in conn.execute("SELECT seq, data FROM retained_journal ORDER BY seq"):
        try:
            journal_merge(latest, data)
        except ValueError:
            log.exception("skipping unreadable retained journal row %d", seq)
    out: dict[str, Message] = {}
    strings: dict[str, str] = {}  # publishers repeat
    for topic, data in conn.execute("SELECT topic, data FROM retained"):
        if topic in latest:
            continue  # replaced or deleted by the journal
        try:
            out[topic] = load_message(data, strings, topic)
        except ValueError:
            log.exception("skipping unreadable retained message on %r", topic)
    for topic, row in latest.items():
        if row is None:
            continue
        try:
            out[topic] = load_message(bytes(row), strings, topic)
        except ValueError:
            log.exception("skipping unreadable retained message on %r", topic)
    return list(out.values())


def _load_sessions(conn: sqlite3.Connection) -> dict[str, dict[str, Any]]:
    out = {}
    for cid, data in conn.execute("SELECT client_id, data FROM sessions"):
        try:
            out[cid] = _decode_json(data)
        except ValueError:
            log.exception("skipping unreadable session %r", cid)
    return out


def _load_session_messages(conn: sqlite3.Connection) -> dict[str, list[SessionMessage]]:
    """Rows are decoded once per distinct content: a message queued for many sessions
    becomes one shared Message again (as before the restart), equal topics one string,
    and the few distinct metas one shared dict each (callers must not mutate them)."""
    out: dict[str, list[SessionMessage]] = {}
    messages: dict[bytes, Message] = {}
    metas: dict[str, dict[str, Any]] = {}
    strings: dict[str, str] = {}  # topics and publishers repeat
    rows = conn.execute(
        "SELECT client_id, key, data, meta FROM session_messages ORDER BY client_id, key"
    )
    items: list[SessionMessage] = []
    last = None
    for cid, key, data, meta_text in rows:
        try:
            msg = messages.get(data)
            if msg is None:
                msg = messages[data] = load_message(data, strings)
            meta = metas.get(meta_text)
            if meta is None:
                meta = metas[meta_text] = _decode_json(meta_text)
        except ValueError:
            log.exception("skipping unreadable message %r of session %r", key, cid)
            continue
        if cid != last:
            items = out.setdefault(cid, [])
            last = cid
        items.append((key, msg, meta))
    return out


def _load_session_keys(conn: sqlite3.Connection) -> dict[str, int]:
    rows = conn.execute("SELECT client_id, max(key) FROM session_messages GROUP BY client_id")
    return dict(rows.fetchall())


def _load_awaiting_rel(conn: sqlite3.Connection) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for cid, pid in conn.execute("SELECT client_id, packet_id FROM awaiting_rel"):
        out.setdefault(cid, []).append(pid)
    return out


_APP_COLUMNS = "app_id, name, secret_hash, description, enabled, created_at"


def _app(row: tuple[Any, ...]) -> dict[str, Any]:
    return {
        "app_id": row[0],
        "name": row[1],
        "secret_hash": row[2],
        "desc": row[3],
        "enabled": bool(row[4]),
        "created_at": row[5],
    }


def _add_app(
    conn: sqlite3.Connection,
    app_id: str,
    name: str,
    secret_hash: str,
    desc: str = "",
    enabled: bool = True,
) -> None:
    cur = conn.execute(
        f"INSERT INTO apps ({_APP_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
        (app_id, name, secret_hash, desc, int(bool(enabled)), time.time()),
    )
    if cur.rowcount == 0:
        raise DuplicateError(app_id)


def _get_app(conn: sqlite3.Connection, app_id: str) -> dict[str, Any] | None:
    row = conn.execute(f"SELECT {_APP_COLUMNS} FROM apps WHERE app_id = ?", (app_id,)).fetchone()
    return None if row is None else _app(row)


def _list_apps(conn: sqlite3.Connection) -> list[dict[str, Any]]:
    rows = conn.execute(f"SELECT {_APP_COLUMNS} FROM apps ORDER BY created_at, app_id")
    return [_app(row) for row in rows]


def _set_app_enabled(conn: sqlite3.Connection, app_id: str, enabled: bool) -> bool:
    cur = conn.execute("UPDATE apps SET enabled = ? WHERE app_id = ?", (int(bool(enabled)), app_id))
    return cur.rowcount > 0


def _delete_app(conn: sqlite3.Connection, app_id: str) -> bool:
    return conn.execute("DELETE FROM apps WHERE app_id = ?", (app_id,)).rowcount > 0


def _check_auth_kind(kind: str) -> None:
    if kind not in AUTH_KINDS:
        raise ValueError(f"auth kind must be one of {AUTH_KINDS}, not {kind!r}")


def _add_auth(conn: sqlite3.Connection, kind: str, subject: str, password_hash: str) -> None:
    _check_auth_kind(kind)
    cur = conn.execute(
        "INSERT INTO auth (kind, subject, password_hash, created_at) VALUES (?, ?, ?, ?)"
        " ON CONFLICT DO NOTHING",
        (kind, subject, password_hash, time.time()),
    )
    if cur.rowcount == 0:
        raise DuplicateError(subject)


def _get_auth(conn: sqlite3.Connection, kind: str, subject: str) -> dict[str, Any] | None:
    _check_auth_kind(kind)
    row = conn.execute(
        "SELECT subject, password_hash, created_at FROM auth WHERE kind = ? AND subject = ?",
        (kind, subject),
    ).fetchone()
    if row is None:
        return None
    return {"subject": row[0], "password_hash": row[1], "created_at": row[2]}


def _list_auth(conn: sqlite3.Connection, kind: str) -> list[dict[str, Any]]:
    _check_auth_kind(kind)
    rows = conn.execute(
        "SELECT subject, password_hash, created_at FROM auth WHERE kind = ?"
        " ORDER BY created_at, subject",
        (kind,),
    )
    return [{"subject": s, "password_hash": h, "created_at": c} for s, h, c in rows]


def _update_auth(conn: sqlite3.Connection, kind: str, subject: str, password_hash: str) -> bool:
    _check_auth_kind(kind)
    cur = conn.execute(
        "UPDATE auth SET password_hash = ? WHERE kind = ? AND subject = ?",
        (password_hash, kind, subject),
    )
    return cur.rowcount > 0


def _delete_auth(conn: sqlite3.Connection, kind: str, subject: str) -> bool:
    _check_auth_kind(kind)
    cur = conn.execute("DELETE FROM auth WHERE kind = ? AND subject = ?", (kind, subject))
    return cur.rowcount > 0


def _check_acl_kind(kind: str, subject: str) -> None:
    if kind not in ACL_KINDS:
        raise ValueError(f"ACL kind must be one of {ACL_KINDS}, not {kind!r}")
    if kind == "all" and subject:
        raise ValueError('ACL rules of kind "all" have the subject ""')


def _put_acl(
    conn: sqlite3.Connection,
    kind: str,
    subject: str,
    topic: str,
    action: str,
    access: str,
    created_at: int | None = None,
) -> bool:
    """Store a rule as the newest (``pubsub``: a pub and a sub rule); True when it
    replaced one with the same key."""
    _check_acl_kind(kind, subject)
    if action not in ("pub", "sub", "pubsub"):
        raise ValueError(f"an ACL rule's action is pub, sub or pubsub, not {action!r}")
    if created_at is None:
        created_at = int(time.time() * 1000)
    replaced = False
    for one in ("pub", "sub") if action == "pubsub" else (action,):
        cur = conn.execute(
            "DELETE FROM acl WHERE kind = ? AND subject = ? AND topic = ? AND action = ?",
            (kind, subject, topic, one),
        )
        replaced |= cur.rowcount > 0
        conn.execute(
            "INSERT INTO acl (kind, subject, topic, action, access, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (kind, subject, topic, one, access, created_at),
        )
    return replaced


def _list_acl(
    conn: sqlite3.Connection, kind: str | None = None, subject: str | None = None
) -> list[dict[str, Any]]:
    where = []
    params = []
    if kind is not None:
        where.append("kind = ?")
        params.append(kind)
    if subject is not None:
        where.append("subject = ?")
        params.append(subject)
    sql = "SELECT kind, subject, topic, action, access, created_at FROM acl"
    if where:
        sql += " WHERE " + " AND ".join(where)
    rows = conn.execute(sql + " ORDER BY id", params)
    return [
        {"kind": k, "subject": s, "topic": t, "action": a, "access": x, "created_at": c}
        for k, s, t, a, x, c in rows
    ]


def _delete_acl(conn: sqlite3.Connection, kind: str, subject: str, topic: str) -> bool:
    cur = conn.execute(
        "DELETE FROM acl WHERE kind = ? AND subject = ? AND topic = ?", (kind, subject, topic)
    )
    return cur.rowcount > 0


_BAN_FIELDS = ("kind", "who", "by", "reason", "at", "until")


def _put_ban(conn: sqlite3.Connection, ban: dict[str, Any]) -> None:
    conn.execute(
        "INSERT OR REPLACE INTO banned (kind, who, by, reason, at, until)"
        " VALUES (?, ?, ?, ?, ?, ?)",
        tuple(ban[k] for k in _BAN_FIELDS),
    )


def _list_bans(conn: sqlite3.Connection) -> list[dict[str, Any]]:
    rows = conn.execute("SELECT kind, who, by, reason, at, until FROM banned ORDER BY at")
    return [dict(zip(_BAN_FIELDS, row, strict=True)) for row in rows]


def _delete_ban(conn: sqlite3.Connection, kind: str, who: str) -> bool:
    return conn.execute("DELETE FROM banned WHERE kind = ? AND who = ?", (kind, who)).rowcount > 0


_DASHBOARD_COLUMNS = "username, password_hash, description, created_at"


def _dashboard_user(row: tuple[Any, ...]) -> dict[str, Any]:
    return {"username": row[0], "password_hash": row[1], "desc": row[2], "created_at": row[3]}


def _add_dashboard_user(
    conn: sqlite3.Connection, username: str, password_hash: str, desc: str = ""
) -> None:
    cur = conn.execute(
        f"INSERT INTO dashboard_users ({_DASHBOARD_COLUMNS}) VALUES (?, ?, ?, ?)"
        " ON CONFLICT DO NOTHING",
        (username, password_hash, desc, time.time()),
    )
    if cur.rowcount == 0:
        raise DuplicateError(username)


def _get_dashboard_user(conn: sqlite3.Connection, username: str) -> dict[str, Any] | None:
    row = conn.execute(
        f"SELECT {_DASHBOARD_COLUMNS} FROM dashboard_users WHERE username = ?", (username,)
    ).fetchone()
    return None if row is None else _dashboard_user(row)


def _list_dashboard_users(conn: sqlite3.Connection) -> list[dict[str, Any]]:
    rows = conn.execute(
        f"SELECT {_DASHBOARD_COLUMNS} FROM dashboard_users ORDER BY created_at, username"
    )
    return [_dashboard_user(row) for row in rows]


def _update_dashboard_user(conn: sqlite3.Connection, username: str, password_hash: str) -> bool:
    cur = conn.execute(
        "UPDATE dashboard_users SET password_hash = ? WHERE username = ?",
        (password_hash, username),
    )
    return cur.rowcount > 0


def _delete_dashboard_user(conn: sqlite3.Connection, username: str) -> bool:
    cur = conn.execute("DELETE FROM dashboard_users WHERE username = ?", (username,))
    return cur.rowcount > 0


# Store method name -> writer job with the same parameters (after the connection),
# so that ``call`` can skip the executor thread.
_JOBS: dict[str, Callable[..., Any]] = {
    "load_retained": _load_retained,
    "load_sessions": _load_sessions,
    "load_session_messages": _load_session_messages,
    "load_awaiting_rel": _load_awaiting_rel,
    "load_session_keys": _load_session_keys,
    "add_app": _add_app,
    "get_app": _get_app,
    "list_apps": _list_apps,
    "set_app_enabled": _set_app_enabled,
    "delete_app": _delete_app,
    "add_auth": _add_auth,
    "get_auth": _get_auth,
    "list_auth": _list_auth,
    "update_auth": _update_auth,
    "delete_auth": _delete_auth,
    "put_acl": _put_acl,
    "list_acl": _list_acl,
    "delete_acl": _delete_acl,
    "put_ban": _put_ban,
    "list_bans": _list_bans,
    "delete_ban": _delete_ban,
    "add_dashboard_user": _add_dashboard_user,
    "get_dashboard_user": _get_dashboard_user,
    "list_dashboard_users": _list_dashboard_users,
    "update_dashboard_user": _update_dashboard_user,
    "delete_dashboard_user": _delete_dashboard_user,
    "admin_records": records.snapshot,
    "apply_admin_records": records.apply,
}

# The jobs that change what ``admin_records`` returns (the admin listener hears them).
_ADMIN_WRITES = frozenset(
    {
        _add_app,
        _set_app_enabled,
        _delete_app,
        _add_auth,
        _update_auth,
        _delete_auth,
        _put_acl,
        _delete_acl,
        _put_ban,
        _delete_ban,
        _add_dashboard_user,
        _update_dashboard_user,
        _delete_dashboard_user,
    }
)


if TYPE_CHECKING:

    def _implements_store(store: SqliteStore) -> Store:
        """A type checker's proof that ``SqliteStore`` is a ``Store``."""
        return store
