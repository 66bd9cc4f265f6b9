"""GET /status, /brokers, /nodes, /stats and /routes against real brokers with real clients."""

from __future__ import annotations

import os
import re

from api_http import Api, wait_for
from clients import TestClient
from ferrymq import __version__

SIZE = re.compile(r"^\d+\.\d\d[KMG]$")


def test_status_is_public_plain_text(broker) -> None:
    api = Api(broker.api_port)
    r = api.get("/status", auth=False, prefix="")
    assert r.status == 200
    assert r.raw.decode() == "Node ferrymq@127.0.0.1 is started\nferrymq is running"
    assert r.headers["Content-Type"].startswith("text/plain")
    # only the root form is public; the API itself still wants credentials
    assert api.get("/brokers", auth=False).status == 401


def test_brokers_and_nodes(broker) -> None:
    api = Api(broker.api_port)
    brokers = api.ok("GET", "/brokers")
    assert len(brokers) == 1
    info = brokers[0]
    assert info["node"] == "ferrymq@127.0.0.1"
    assert info["version"] == __version__
    assert info["node_status"] == "Running"
    assert info["otp_release"].startswith("Python 3.")
    assert re.match(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d$", info["datetime"])
    assert info["uptime"].endswith("seconds")
    assert api.ok("GET", "/brokers/ferrymq@127.0.0.1")["sysdescr"] == info["sysdescr"]
    r = api.get("/brokers/nobody@nowhere")
    assert r.status == 404 and r.code == 102

    c = TestClient("nodes-probe")
    c.connect(broker.port)
    try:
        nodes = api.ok("GET", "/nodes")
        assert [n["node"] for n in nodes] == ["ferrymq@127.0.0.1"]
        node = api.ok("GET", "/nodes/ferrymq@127.0.0.1")
        assert node["node_status"] == "Running"
        assert node["live_connections"] >= 1 and node["connections"] >= node["live_connections"]
        load1, load5, load15 = os.getloadavg()
        for key, real in (("load1", load1), ("load5", load5), ("load15", load15)):
            assert abs(float(node[key]) - real) < 2.0, (key, node[key], real)
        assert SIZE.match(node["memory_total"]) and SIZE.match(node["memory_used"])
        assert node["max_fds"] > 0 and 0 < node["process_used"] <= node["max_fds"]
        assert api.get("/nodes/nobody@nowhere").status == 404
    finally:
        c.disconnect()


def test_stats_high_water_marks(make_broker) -> None:
    b = make_broker()
    api = Api(b.api_port)
    clients = [TestClient(f"stats-{i}") for i in range(3)]
    for i, c in enumerate(clients):
        c.connect(b.port)
        c.subscribe(f"stats/{i}/#")
    clients[0].subscribe("$share/g/stats/shared")
    retained = api.ok("GET", "/stats")[0]["stats"]["retained.count"]  # $SYS topics count too
    clients[0].publish("stats/kept", b"x", retain=True)
    wait_for(lambda: api.ok("GET", "/stats")[0]["stats"]["retained.count"] == retained + 1)
    for c in clients[1:]:
        c.disconnect()
    stats = wait_for(
        lambda: (s := api.ok("GET", "/stats")[0]["stats"])["live_connections.count"] == 1 and s
    )
    assert api.ok("GET", "/stats")[0]["node"] == "ferrymq@127.0.0.1"
    assert stats["live_connections.max"] == 3
    assert stats["connections.count"] == 1 and stats["connections.max"] == 3
    assert stats["sessions.count"] == 1 and stats["sessions.max"] == 3
    assert stats["subscriptions.count"] == 2 and stats["subscriptions.max"] == 4
    assert stats["subscriptions.shared.count"] == 1
    assert stats["topics.count"] == 2 and stats["routes.count"] == 2
    assert stats["routes.max"] == 4
    assert stats["retained.count"] == retained + 1
    one = api.ok("GET", "/nodes/ferrymq@127.0.0.1/stats")
    assert one["live_connections.max"] == 3
    assert set(one) == set(stats)
    clients[0].disconnect()


def test_routes(make_broker) -> None:
    b = make_broker()
    api = Api(b.api_port)
    a, c = TestClient("routes-a"), TestClient("routes-c")
    a.connect(b.port)
    c.connect(b.port)
    try:
        a.subscribe("r/+/temp")
        c.subscribe("r/+/temp")
        a.subscribe("$share/g/r/x")
        a.subscribe("r/#")
        r = api.get("/routes?_limit=2")
        assert r.meta["count"] == 3 and r.meta["hasnext"] is True
        assert r.data == [
            {"topic": "r/#", "node": "ferrymq@127.0.0.1"},
            {"topic": "r/+/temp", "node": "ferrymq@127.0.0.1"},
        ]
        assert api.get("/routes?_page=2&_limit=2").data == [
            {"topic": "r/x", "node": "ferrymq@127.0.0.1"}
        ]
        assert api.ok("GET", "/routes/r%2F%2B%2Ftemp") == [
            {"topic": "r/+/temp", "node": "ferrymq@127.0.0.1"}
        ]
        assert api.ok("GET", "/routes/r%2Fa%2Ftemp") == []  # exact route, not matching
        a.unsubscribe("r/+/temp")
        assert api.ok("GET", "/routes/r%2F%2B%2Ftemp") != []
        c.unsubscribe("r/+/temp")
        assert api.ok("GET", "/routes/r%2F%2B%2Ftemp") == []
        assert api.get("/routes").meta["count"] == 2
    finally:
        a.disconnect()
        c.disconnect()
