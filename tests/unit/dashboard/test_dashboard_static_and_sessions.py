"""The dashboard without a broker: its files ship as package data, its pages only use the
API, its sessions are bounded."""

from __future__ import annotations

import tomllib

import pytest

from ferrymq.dashboard import auth
from ferrymq.dashboard.users import add_user, set_password
from ferrymq.storage.sqlite import SqliteStore
from paths import ROOT, STATIC


def test_every_static_file_is_package_data() -> None:
    """A wheel must carry the dashboard: pyproject's patterns cover every file."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = config["tool"]["setuptools"]["package-data"]["ferrymq.dashboard"]
    package = STATIC.parent
    covered = {p for pattern in patterns for p in package.glob(pattern) if p.is_file()}
    files = {p for p in STATIC.rglob("*") if p.is_file()}
    assert files and files == covered, sorted(str(p) for p in files - covered)
    assert (STATIC / "vendor" / "mqtt.LICENSE.md").is_file()
    assert (STATIC / "vendor" / "uplot.LICENSE").is_file()


@pytest.mark.parametrize("asset", sorted(p.name for p in (STATIC / "js" / "pages").glob("*.js")))
def test_pages_only_talk_to_the_api(asset: str) -> None:
    """Everything a page shows comes from /api/v4 (the WebSocket tool speaks MQTT)."""
    text = (STATIC / "js" / "pages" / asset).read_text()
    assert "fetch(" not in text and "XMLHttpRequest" not in text
    assert "innerHTML" not in text


async def test_sessions_evict_the_oldest_and_follow_the_user_record(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(auth, "MAX_SESSIONS", 3)
    monkeypatch.setattr(auth, "RECHECK", 0.0)
    store = SqliteStore(tmp_path / "ferrymq.db")
    store.open()
    try:
        add_user(store, "ann", "pw")
        add_user(store, "bob", "pw")
        sessions = auth.Sessions(store, timeout=60)
        assert await sessions.login("ann", "nope") is None
        assert await sessions.login("nobody", "pw") is None
        tokens = [await sessions.login("ann", "pw") for _ in range(3)]
        bob = await sessions.login("bob", "pw")  # a fourth session: the oldest goes
        assert await sessions.check(tokens[0]) is None
        assert [await sessions.check(t) for t in tokens[1:]] == ["ann", "ann"]
        assert await sessions.check(bob) == "bob"
        assert await sessions.check(None) is None and await sessions.check("forged") is None
        set_password(store, "ann", "new")  # a new password ends ann's sessions, not bob's
        assert await sessions.check(tokens[1]) is None
        assert await sessions.check(bob) == "bob"
        store.delete_dashboard_user("bob")
        assert await sessions.check(bob) is None
    finally:
        store.close()
