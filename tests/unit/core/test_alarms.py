"""The alarm book-keeping and the listener alarm check, in memory (no broker process)."""

from __future__ import annotations

import time

from ferrymq.core.alarms import AlarmChecks, Alarms


def test_alarm_book_keeping() -> None:
    alarms = Alarms(size_limit=2, validity_period=3600)
    assert alarms.activate("a", "A", {"x": 1})
    assert not alarms.activate("a", "again")
    assert not alarms.deactivate("b")
    for name in ("a", "b", "c"):
        alarms.activate(name, name.upper())
        alarms.deactivate(name)
    history = alarms.listed("deactivated")
    assert [a["name"] for a in history] == ["c", "b"]  # newest first, bounded
    assert all(a["activated"] is False for a in history)
    alarms.activate("d", "D")
    assert [a["name"] for a in alarms.listed()] == ["d", "c", "b"]
    alarms.validity_us = 0
    time.sleep(0.01)
    assert [a["name"] for a in alarms.listed()] == ["d"]  # old history forgotten


def test_listener_connection_alarm_in_memory() -> None:
    from types import SimpleNamespace

    from ferrymq.config import Settings

    published: list[str] = []
    listener = {"identifier": "mqtt:tcp:default", "current_conns": 10, "max_conns": 10}
    broker = SimpleNamespace(
        settings=Settings(alarm_sysmem_high_watermark=0, alarm_procmem_high_watermark=0),
        online_count=lambda: 9,
        publish_sys=lambda messages, retain: published.extend(t for t, _p in messages),
    )
    checks = AlarmChecks(broker)  # type: ignore[arg-type]
    checks.listeners = SimpleNamespace(describe=lambda: [listener])  # type: ignore[assignment]
    checks.check()
    names = [a["name"] for a in checks.alarms.listed("activated")]
    assert names == ["too_many_connections/tcp:default"]  # max_connections 0: no global limit
    listener["current_conns"] = 8
    checks.check()
    assert checks.alarms.listed("activated") == []
    assert [a["name"] for a in checks.alarms.listed("deactivated")] == names
    node = "$SYS/brokers/ferrymq@127.0.0.1/alarms/"
    assert published == [node + "activate", node + "deactivate"]
