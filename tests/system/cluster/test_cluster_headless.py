"""A node that serves neither the API nor the dashboard still answers for itself: the other
nodes list its clients and subscriptions, kick them, subscribe them, and show it Running,
while it never builds (nor imports) an HTTP server."""

from __future__ import annotations

from pathlib import Path

import pytest

from api_http import Api
from brokers import BrokerProcess
from clients import V5, TestClient
from redis_server import (
    RedisServer,
    connect,
    start_nodes,
    subscribed,
    wait_routed,
    wait_until,
)

pytestmark = pytest.mark.timeout(120)


def _listed(api: Api, path: str) -> list[dict]:  # type: ignore[type-arg]
    r = api.get(path)
    assert r.status == 200 and r.code == 0, r
    return r.data


def _maps_aiohttp(pid: int) -> bool:
    """Whether the process has aiohttp's compiled HTTP parser loaded (it imported aiohttp)."""
    return "aiohttp" in Path(f"/proc/{pid}/maps").read_text()


def test_a_node_without_api_or_dashboard_answers_the_others(tmp_path: Path, clients, uid) -> None:
    redis = RedisServer(tmp_path / "redis").start()
    nodes = []
    try:
        nodes = start_nodes(redis, tmp_path, 2)
        # The third node: no API, no dashboard.
        name3 = "headless@127.0.0.1"
        n3 = BrokerProcess(
            tmp_path / "headless",
            *("--node-name", name3, "--cluster-redis-url", redis.url, "--api-port", "0"),
        )
        nodes.append(n3.start())
        assert n3.wait_log("joined through", 10)
        n1, n2, _ = nodes
        api = Api(n1.api_port)
        # Both API nodes see it (each reads the heartbeats on its own schedule).
        for each in (api, Api(n2.api_port)):
            assert wait_until(
                lambda each=each: (
                    {(n["node"], n["node_status"]) for n in _listed(each, "/nodes")}
                    >= {(name3, "Running")}
                ),
                timeout=10,
            )
        sub = subscribed(clients, n3.port, f"{uid}-sub", f"{uid}/headless/#", 1)
        victim = TestClient(f"{uid}-victim", protocol=V5)
        victim.connect(n3.port)
        clients.append(victim)

        # Its clients and subscriptions are listed from another node, with it as their node.
        listed = _listed(api, f"/clients?_like_clientid={uid}")
        assert {(c["clientid"], c["node"]) for c in listed} == {
            (f"{uid}-sub", name3),
            (f"{uid}-victim", name3),
        }
        subs = _listed(Api(n2.api_port), f"/nodes/{name3}/subscriptions/{uid}-sub")
        assert subs == [
            {"node": name3, "clientid": f"{uid}-sub", "topic": f"{uid}/headless/#", "qos": 1}
        ]
        assert _listed(api, f"/nodes/{name3}/metrics")["client.connect"] >= 2
        assert _listed(api, f"/nodes/{name3}/stats")["connections.count"] >= 2

        # An API subscribe acts on its client, and a publish from another node reaches it.
        r = api.post(
            "/mqtt/subscribe", {"clientid": f"{uid}-victim", "topic": f"{uid}/api", "qos": 1}
        )
        assert (r.status, r.code) == (200, 0), r
        assert wait_until(
            lambda: any(s["topic"] == f"{uid}/api" for s in _listed(api, "/subscriptions"))
        )
        pub = connect(clients, n2.port, f"{uid}-pub")
        wait_routed(pub, victim, f"{uid}/api", timeout=15)

        # A kick from another node disconnects its client.
        r = api.delete(f"/clients/{uid}-victim")
        assert (r.status, r.code) == (200, 0), r
        assert victim.disconnected.wait(10), "the client on the headless node stayed"
        assert wait_until(lambda: _listed(api, f"/clients/{uid}-victim") == [])
        assert not sub.disconnected.is_set()

        # Answering never built an HTTP server there.
        assert n3.proc is not None and not _maps_aiohttp(n3.proc.pid)
        assert n1.proc is not None and _maps_aiohttp(n1.proc.pid)  # the check sees it
        assert all(n.alive() for n in nodes)
    finally:
        for node in nodes:
            node.stop()
        redis.stop()
