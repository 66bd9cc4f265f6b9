"""/alarms: real alarms raised by a real broker, their history, and the alarm book-keeping."""

from __future__ import annotations

import json
import time

from api_http import Api, wait_for
from clients import TestClient
from ferrymq.core.alarms import AlarmChecks, Alarms

NODE = "ferrymq@127.0.0.1"


def _names(api: Api, which: str = "") -> list[str]:
    data = api.ok("GET", "/alarms" + which)
    assert [entry["node"] for entry in data] == [NODE]
    return [a["name"] for a in data[0]["alarms"]]


def test_connection_and_memory_alarms(make_broker) -> None:
    b = make_broker(
        "--max-connections",
        "8",
        "--alarm-connections-high-watermark",
        "40",
        "--alarm-sysmem-high-watermark",
        "0.01",
        "--alarm-procmem-high-watermark",
        "0",
        "--alarm-check-interval",
        "0.1",
    )
    api = Api(b.api_port)
    watcher = TestClient("alarm-watcher")
    watcher.connect(b.port)
    watcher.subscribe(f"$SYS/brokers/{NODE}/alarms/#")
    wait_for(lambda: "high_system_memory_usage" in _names(api, "/activated"))
    assert "high_process_memory_usage" not in _names(api)  # watermark 0: check off
    assert "too_many_connections" not in _names(api)
    clients = [TestClient(f"alarm-{i}") for i in range(3)]
    for c in clients:
        c.connect(b.port)
    wait_for(lambda: "too_many_connections" in _names(api, "/activated"))
    announced = json.loads(
        next(m for m in iter(watcher.get, None) if b"too_many_connections" in m.payload).payload
    )
    assert announced["name"] == "too_many_connections" and announced["activated"] is True
    alarm = next(
        a
        for a in api.ok("GET", "/alarms/activated")[0]["alarms"]
        if a["name"] == "too_many_connections"
    )
    assert alarm["activated"] is True and alarm["deactivate_at"] == "infinity"
    # the three clients and the watcher
    assert alarm["details"]["current"] == 4 and alarm["details"]["max"] == 8
    assert alarm["details"]["usage"] == 50 and alarm["details"]["high_watermark"] == 40
    assert "50% of the 8 connections" in alarm["message"]
    assert abs(alarm["activate_at"] / 1e6 - time.time()) < 30
    for c in clients[1:]:
        c.disconnect()
    wait_for(lambda: "too_many_connections" in _names(api, "/deactivated"))
    gone = next(m for m in iter(watcher.get, None) if m.topic.endswith("/deactivate"))
    assert json.loads(gone.payload)["name"] == "too_many_connections"
    assert "too_many_connections" not in _names(api, "/activated")
    old = next(
        a
        for a in api.ok("GET", "/alarms/deactivated")[0]["alarms"]
        if a["name"] == "too_many_connections"
    )
    assert old["activated"] is False
    assert old["duration"] == old["deactivate_at"] - old["activate_at"] > 0
    # all = active ones, then the history
    assert set(_names(api)) >= {"high_system_memory_usage", "too_many_connections"}

    r = api.post("/alarms/deactivated", {"node": NODE, "name": "high_system_memory_usage"})
    assert (r.status, r.code) == (200, 0)
    assert "high_system_memory_usage" in _names(api, "/deactivated")
    assert api.post("/alarms/deactivated", {"node": NODE, "name": "nope"}).status == 404
    assert api.post("/alarms/deactivated", {"node": "x@y", "name": "nope"}).status == 404
    r = api.post("/alarms/deactivated", {"node": NODE})
    assert (r.status, r.code) == (400, 107)
    one = api.ok("GET", f"/nodes/{NODE}/alarms/deactivated")
    assert [a["name"] for a in one] == _names(api, "/deactivated")
    assert [a["name"] for a in api.ok("GET", f"/nodes/{NODE}/alarms/activated")] == _names(
        api, "/activated"
    )
    assert len(api.ok("GET", f"/nodes/{NODE}/alarms")) == len(_names(api))
    assert api.get("/nodes/x@y/alarms").status == 404
    assert api.ok("DELETE", f"/nodes/{NODE}/alarms/deactivated") is None
    assert api.ok("GET", f"/nodes/{NODE}/alarms/deactivated") == []
    assert api.ok("DELETE", "/alarms/deactivated") is None
    assert "too_many_connections" not in _names(api, "/deactivated")
    clients[0].disconnect()
    watcher.disconnect()


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
