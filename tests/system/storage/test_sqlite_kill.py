"""The SQLite store in other processes: SIGKILL keeps flushed data and a sound file, a
short-lived process writes beside an open store, exiting without close commits."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from ferrymq.model.message import Message
from ferrymq.storage.sqlite import SqliteStore
from paths import SRC


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "data" / "ferrymq.db"


def raw(path: Path) -> sqlite3.Connection:
    """An independent connection, to see what is really committed."""
    return sqlite3.connect(path, isolation_level=None)


def run_python(code: str, **kwargs: Any) -> subprocess.Popen[str]:
    env = dict(os.environ, PYTHONPATH=str(SRC) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code)],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
        **kwargs,
    )


def test_sigkill_keeps_flushed_data_and_a_sound_file(db: Path) -> None:
    proc = run_python(
        f"""
        import time
        from ferrymq.model.message import Message
        from ferrymq.storage.sqlite import SqliteStore
        s = SqliteStore({str(db)!r}, flush_interval=3600)
        s.open()
        for i in range(500):
            s.put_retained(Message(f"r/{{i}}", b"x" * 100, 1, True))
            s.put_session_message("c", i, Message("q", bytes([i % 256])), {{"i": i}})
        s.put_session("c", {{"expiry_interval": 60}})
        s.add_app("app", "n", "h")
        s.flush()
        s.put_retained(Message("unflushed", b""))
        s.delete_session("c")
        print("ready", flush=True)
        time.sleep(60)
        """
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    with raw(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    with SqliteStore(db) as s:
        assert len(s.load_retained()) == 500
        assert s.load_sessions() == {"c": {"expiry_interval": 60}}
        msgs = s.load_session_messages()["c"]
        assert [(k, m.payload, meta) for k, m, meta in msgs] == [
            (i, bytes([i % 256]), {"i": i}) for i in range(500)
        ]
        assert s.get_app("app") is not None


def test_sigkill_during_heavy_writes_leaves_whole_batches(db: Path) -> None:
    # Each step moves one session message forward and records its key in a
    # retained message; any committed state must have them (nearly) agree.
    proc = run_python(
        f"""
        from ferrymq.model.message import Message
        from ferrymq.storage.sqlite import SqliteStore
        s = SqliteStore({str(db)!r}, flush_interval=0.002)
        s.open()
        i = 0
        while True:
            s.put_session_message("c", i, Message("q", b"p" * 200), {{"i": i}})
            s.delete_session_message("c", i - 1)
            s.put_retained(Message("counter", str(i).encode()))
            if i == 2000:
                s.flush()
                print("flushed", flush=True)
            i += 1
        """
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "flushed"
        time.sleep(0.3)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    with raw(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    with SqliteStore(db) as s:
        (counter,) = s.load_retained()
        last = int(counter.payload)
        assert last >= 2000
        keys = [k for k, _, meta in s.load_session_messages()["c"] if meta == {"i": k}]
        # A batch may end between the three calls of one step, never inside a call.
        assert keys in ([last], [last, last + 1], [last + 1])


@pytest.mark.parametrize("after_s", [0.0, 0.05, 0.15, 0.4])
def test_sigkill_while_the_retained_journal_is_folded_loses_nothing(
    db: Path, after_s: float
) -> None:
    """Killed at some point of the fold (each step one transaction), the store reopens
    with every flushed retained write applied once and in order: later puts replace,
    deletes stay deleted, whichever of the two tables holds them."""
    proc = run_python(
        f"""
        from ferrymq.model.message import Message
        from ferrymq.storage.sqlite import SqliteStore
        s = SqliteStore({str(db)!r}, flush_interval=0.01)
        s.open()
        for i in range(20000):
            s.put_retained(Message(f"r/{{i}}", b"first", 0, True))
        s.flush()
        for i in range(0, 20000, 3):
            s.delete_retained(f"r/{{i}}")
        for i in range(1, 20000, 3):
            s.put_retained(Message(f"r/{{i}}", b"second", 0, True))
        s.flush()
        print("ready", s._journal_rows, flush=True)
        import time
        time.sleep(60)
        """
    )
    try:
        assert proc.stdout is not None
        ready, rows = proc.stdout.readline().split()
        assert ready == "ready" and int(rows) > 0  # the fold has not caught up yet
        time.sleep(after_s)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    with raw(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    expected = {f"r/{i}": b"second" if i % 3 == 1 else b"first" for i in range(20000) if i % 3}
    with SqliteStore(db) as s:
        assert {m.topic: m.payload for m in s.load_retained()} == expected


def test_short_lived_process_writes_while_another_store_is_open(db: Path) -> None:
    with SqliteStore(db, flush_interval=0.005) as s:
        stop = threading.Event()

        def broker_traffic() -> None:
            i = 0
            while not stop.is_set():
                s.put_retained(Message(f"t/{i % 100}", b"x" * 500))
                i += 1
                if i % 100 == 0:
                    time.sleep(0.001)

        traffic = threading.Thread(target=broker_traffic)
        traffic.start()
        try:
            proc = run_python(
                f"""
                from ferrymq.storage.sqlite import SqliteStore
                with SqliteStore({str(db)!r}) as cli:
                    cli.add_app("cli-app", "from the command line", "h")
                    cli.put_acl("username", "u", "a/b", "pub", "deny", 1)
                    print(len(cli.list_apps()), flush=True)
                """
            )
            out, _ = proc.communicate(timeout=30)
        finally:
            stop.set()
            traffic.join()
        assert proc.returncode == 0
        assert out.strip() == "1"
        assert s.get_app("cli-app")["name"] == "from the command line"  # type: ignore[index]
        assert [r["topic"] for r in s.list_acl("username", "u")] == ["a/b"]
        s.flush()
        assert len(s.load_retained()) == 100


def test_exiting_without_close_commits_pending_writes(db: Path) -> None:
    proc = run_python(
        f"""
        from ferrymq.model.message import Message
        from ferrymq.storage.sqlite import SqliteStore
        s = SqliteStore({str(db)!r}, flush_interval=3600)
        s.open()
        s.put_retained(Message("pending", b"at exit"))
        """
    )
    proc.communicate(timeout=30)
    assert proc.returncode == 0
    with SqliteStore(db) as s:
        assert [m.payload for m in s.load_retained()] == [b"at exit"]
