"""The management API of the whole cluster from any node: three real nodes, a real Redis,
real HTTP and paho clients; every request goes to a node that does not hold the client."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from urllib.parse import quote

import pytest

from api_http import Api
from clients import V5, TestClient
from redis_server import connect, node_name, received, subscribed, wait_routed, wait_until

pytestmark = pytest.mark.timeout(90)


def _listed(api: Api, path: str) -> list[dict]:  # type: ignore[type-arg]
    r = api.get(path)
    assert r.status == 200 and r.code == 0, r
    return r.data


def _answered(api: Api, path: str) -> list[dict] | None:  # type: ignore[type-arg]
    """``data`` of a successful list, else None (for polling)."""
    r = api.get(path)
    return r.data if r.status == 200 and r.code == 0 else None


@pytest.fixture
def cluster3(cluster3):  # type: ignore[no-untyped-def]
    """The module's cluster, once every node knows the others (their heartbeats, 1 s)."""
    for node in cluster3[1]:
        api = Api(node.api_port)
        assert wait_until(lambda api=api: len(_listed(api, "/nodes")) == 3, timeout=5)
    return cluster3


def test_clients_of_every_node_from_any_node(cluster3, clients, uid) -> None:
    _redis, nodes = cluster3
    names = [node_name(n) for n in nodes]
    for i, node in enumerate(nodes):
        c = TestClient(f"{uid}-c{i}", protocol=V5)
        c.c.username_pw_set(f"{uid}-user{i}")
        c.connect(node.port)
        clients.append(c)
    for asker in nodes:
        api = Api(asker.api_port)
        # Any node sees all three, each with the node holding it, in node order.
        found = _listed(api, f"/clients?_like_clientid={uid}")
        assert [(c["clientid"], c["node"]) for c in found] == [
            (f"{uid}-c{i}", names[i]) for i in range(3)
        ]
        assert all(
            c["connected"] and c["username"] == f"{uid}-user{i}" for i, c in enumerate(found)
        )
    api = Api(nodes[0].api_port)
    # Filters run on every node.
    two = _listed(api, f"/clients?clientid={uid}-c1&clientid={uid}-c2")
    assert [c["node"] for c in two] == names[1:]
    assert (
        _listed(api, f"/clients?username={uid}-user2&conn_state=connected")[0]["node"] == names[2]
    )
    assert _listed(api, f"/clients?_like_clientid={uid}&conn_state=disconnected") == []
    # Pages are cut from the nodes' lists one after another, the same from every node.
    pages = []
    for page in (1, 2, 3, 4):
        r = Api(nodes[page % 3].api_port).get(
            f"/clients?_like_clientid={uid}&_limit=1&_page={page}"
        )
        assert r.status == 200, r
        assert r.meta == {"page": page, "limit": 1, "count": 3, "hasnext": page < 3}
        pages += [c["clientid"] for c in r.data]
    assert pages == [f"{uid}-c{i}" for i in range(3)]
    r = api.get(f"/clients?_like_clientid={uid}&_limit=2&_page=2")
    assert [c["clientid"] for c in r.data] == [f"{uid}-c2"] and r.meta["count"] == 3
    # One client, by id and by username, from a node that does not hold it.
    one = _listed(Api(nodes[0].api_port), f"/clients/{uid}-c2")
    assert [(c["clientid"], c["node"]) for c in one] == [(f"{uid}-c2", names[2])]
    assert _listed(Api(nodes[2].api_port), f"/clients/{uid}-nobody") == []
    by_user = _listed(Api(nodes[2].api_port), f"/clients/username/{uid}-user0")
    assert [(c["clientid"], c["node"]) for c in by_user] == [(f"{uid}-c0", names[0])]
    # The /nodes/{node}/ forms answer for that node only.
    per_node = _listed(api, f"/nodes/{names[1]}/clients?_like_clientid={uid}")
    assert [c["clientid"] for c in per_node] == [f"{uid}-c1"]
    assert _listed(api, f"/nodes/{names[1]}/clients/{uid}-c1")[0]["node"] == names[1]
    assert _listed(api, f"/nodes/{names[1]}/clients/{uid}-c2") == []
    assert _listed(api, f"/nodes/{names[2]}/clients/username/{uid}-user2")[0]["node"] == names[2]
    unknown = api.get("/nodes/nope@nowhere/clients")
    assert (unknown.status, unknown.code) == (404, 102)
    bad = api.get("/clients?conn_state=sleeping")  # checked before any node is asked
    assert (bad.status, bad.code) == (400, 108)


def test_a_kick_reaches_the_node_holding_the_client(cluster3, clients, uid) -> None:
    _redis, (n1, n2, n3) = cluster3
    victim = TestClient(f"{uid}-victim", protocol=V5)
    victim.connect(n3.port)
    clients.append(victim)
    api = Api(n1.api_port)
    # Its ACL cache is node 3's (a rule there makes it check), read and cleared from node 1.
    rule = {"clientid": f"{uid}-victim", "topic": f"{uid}/secret", "action": "pub"}
    assert Api(n3.api_port).post("/acl", {**rule, "access": "deny"}).status == 200
    victim.publish(f"{uid}/cached", b"1", qos=1)
    assert wait_until(
        lambda: (
            _listed(api, f"/clients/{uid}-victim/acl_cache")
            == [{"access": "publish", "topic": f"{uid}/cached", "result": "allow"}]
        )
    )
    assert api.delete(f"/clients/{uid}-victim/acl_cache").status == 200
    assert _listed(Api(n2.api_port), f"/clients/{uid}-victim/acl_cache") == []
    r = api.delete(f"/clients/{uid}-victim")
    assert (r.status, r.code) == (200, 0), r
    assert victim.disconnected.wait(5), "the client on node 3 was not disconnected"
    assert wait_until(lambda: _listed(Api(n2.api_port), f"/clients/{uid}-victim") == [])
    again = api.delete(f"/clients/{uid}-victim")
    assert (again.status, again.code) == (404, 112)
    gone = api.get(f"/clients/{uid}-victim/acl_cache")
    assert (gone.status, gone.code) == (404, 112)


def test_subscriptions_and_routes_of_every_node(cluster3, clients, uid) -> None:
    _redis, (n1, n2, n3) = cluster3
    name2 = node_name(n2)
    sub = subscribed(clients, n2.port, f"{uid}-sub", [(f"{uid}/a/#", 1), (f"{uid}/b", 0)])
    assert sub.client_id == f"{uid}-sub"
    api1, api3 = Api(n1.api_port), Api(n3.api_port)
    expected = [
        {"node": name2, "clientid": f"{uid}-sub", "topic": f"{uid}/a/#", "qos": 1},
        {"node": name2, "clientid": f"{uid}-sub", "topic": f"{uid}/b", "qos": 0},
    ]
    assert _listed(api1, f"/subscriptions?clientid={uid}-sub") == expected
    assert _listed(api3, f"/subscriptions/{uid}-sub") == expected
    assert _listed(api3, f"/subscriptions?_match_topic={uid}/a/x") == expected[:1]
    assert _listed(api1, f"/subscriptions?topic={uid}/b&qos=0") == expected[1:]
    assert _listed(api1, f"/nodes/{name2}/subscriptions/{uid}-sub") == expected
    assert _listed(api1, f"/nodes/{node_name(n1)}/subscriptions/{uid}-sub") == []
    r = api1.get(f"/subscriptions/{uid}-sub?_limit=1&_page=2")
    assert r.data == expected[1:] and r.meta["count"] == 2
    # Routes: complete from any node, and one topic's routes.
    routes = _listed(api1, "/routes")
    assert {"topic": f"{uid}/a/#", "node": name2} in routes
    assert _listed(api3, f"/routes/{quote(f'{uid}/a/#', safe='')}") == [
        {"topic": f"{uid}/a/#", "node": name2}
    ]
    # A second subscriber on node 3: the route is listed for both nodes.
    subscribed(clients, n3.port, f"{uid}-sub3", f"{uid}/b", 0)
    assert _listed(api1, f"/routes/{quote(f'{uid}/b', safe='')}") == [
        {"topic": f"{uid}/b", "node": name2},
        {"topic": f"{uid}/b", "node": node_name(n3)},
    ]
    r = api1.get("/routes?_limit=1&_page=1")
    assert r.meta["count"] == len(_listed(api3, "/routes")) and len(r.data) == 1


def test_api_subscribe_and_unsubscribe_act_on_another_node(cluster3, clients, uid) -> None:
    _redis, (n1, n2, n3) = cluster3
    target = connect(clients, n2.port, f"{uid}-target")
    pub = connect(clients, n3.port, f"{uid}-pub")
    api1, api3 = Api(n1.api_port), Api(n3.api_port)
    r = api1.post("/mqtt/subscribe", {"clientid": f"{uid}-target", "topic": f"{uid}/s", "qos": 1})
    assert (r.status, r.code) == (200, 0), r
    assert _listed(api3, f"/subscriptions/{uid}-target")[0]["node"] == node_name(n2)
    wait_routed(pub, target, f"{uid}/s")  # the message published on node 3 reaches it
    pub.publish(f"{uid}/s", b"hello", qos=1)
    got = received(target, 1.0)
    assert [(m.payload, m.qos) for m in got] == [(b"hello", 1)]
    r = api3.post("/mqtt/unsubscribe", {"clientid": f"{uid}-target", "topic": f"{uid}/s"})
    assert (r.status, r.code) == (200, 0), r
    assert _listed(api1, f"/subscriptions/{uid}-target") == []
    # Errors of the node holding the client come back as they are.
    r = api1.post("/mqtt/subscribe", {"clientid": f"{uid}-target", "topic": f"{uid}/bad/#/x"})
    assert (r.status, r.code) == (400, 115), r
    r = api1.post("/mqtt/subscribe", {"clientid": f"{uid}-nobody", "topic": f"{uid}/s"})
    assert (r.status, r.code) == (404, 112), r
    # The batch forms: one result per item.
    r = api3.post(
        "/mqtt/subscribe_batch",
        [
            {"clientid": f"{uid}-target", "topic": f"{uid}/b1", "qos": 1},
            {"clientid": f"{uid}-nobody", "topic": f"{uid}/b1"},
        ],
    )
    assert r.status == 200 and [i["code"] for i in r.data] == [0, 112], r
    assert [s["topic"] for s in _listed(api1, f"/subscriptions/{uid}-target")] == [f"{uid}/b1"]
    r = api1.post(
        "/mqtt/unsubscribe_batch",
        [
            {"clientid": f"{uid}-target", "topic": f"{uid}/b1"},
            {"clientid": f"{uid}-nobody", "topic": f"{uid}/b1"},
        ],
    )
    assert r.status == 200 and [i["code"] for i in r.data] == [0, 112], r
    assert _listed(api3, f"/subscriptions/{uid}-target") == []


def test_metrics_stats_and_listeners_have_an_entry_per_node(cluster3, clients, uid) -> None:
    _redis, nodes = cluster3
    names = [node_name(n) for n in nodes]
    api = Api(nodes[1].api_port)

    def connects() -> dict[str, int]:
        return {m["node"]: m["metrics"]["client.connect"] for m in _listed(api, "/metrics")}

    before = connects()
    assert sorted(before) == names
    connect(clients, nodes[2].port, f"{uid}-counted")
    after = connects()
    # Each entry is that node's own count: only node 3 counted the CONNECT.
    assert after[names[2]] == before[names[2]] + 1
    assert after[names[0]] == before[names[0]]
    assert (
        _listed(Api(nodes[0].api_port), f"/nodes/{names[2]}/metrics")["client.connect"]
        == (after[names[2]])
    )
    stats = _listed(api, "/stats")
    assert [s["node"] for s in stats] == names
    assert all(s["stats"]["connections.count"] >= 0 for s in stats)
    one = _listed(Api(nodes[0].api_port), f"/nodes/{names[2]}/stats")
    assert one["connections.count"] >= 1
    listeners = _listed(api, "/listeners")
    assert [entry["node"] for entry in listeners] == names
    for node, entry in zip(nodes, listeners, strict=True):
        assert any(lst["listen_on"].endswith(f":{node.port}") for lst in entry["listeners"])
    theirs = _listed(Api(nodes[0].api_port), f"/nodes/{names[2]}/listeners")
    assert any(lst["listen_on"].endswith(f":{nodes[2].port}") for lst in theirs)
    r = api.get("/nodes/nope@nowhere/metrics")
    assert (r.status, r.code) == (404, 102)


def _status(url: str | None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:  # type: ignore[type-arg]
    args = ["--cluster-redis-url", url] if url else []
    environ = {k: v for k, v in os.environ.items() if k != "FERRYMQ_CLUSTER_REDIS_URL"}
    return subprocess.run(
        [sys.executable, "-m", "ferrymq", "cluster", "status", *args],
        capture_output=True,
        text=True,
        timeout=30,
        env={**environ, **(env or {})},
    )


def _rows(out: str) -> dict[str, list[str]]:
    """``ferrymq cluster status`` rows by node name: [state, clients, routes, version]."""
    lines = out.splitlines()
    assert lines[1].split() == ["NODE", "STATE", "CLIENTS", "ROUTES", "VERSION"], out
    return {line.split()[0]: line.split()[1:] for line in lines[2:]}


def test_cluster_status_command(cluster3, clients, uid, tmp_path) -> None:
    redis, nodes = cluster3
    names = [node_name(n) for n in nodes]
    subscribed(clients, nodes[1].port, f"{uid}-st", f"{uid}/status/#", 0)
    r = redis.client()

    def node2_seen() -> bool:
        done = _status(redis.url)
        assert done.returncode == 0, done.stderr
        row = _rows(done.stdout)[names[1]]
        return int(row[1]) >= 1 and int(row[2]) == r.scard(f"ferrymq:node-routes:{names[1]}")

    assert wait_until(node2_seen, timeout=5, every=0.3)
    done = _status(None, env={"FERRYMQ_CLUSTER_REDIS_URL": redis.url})
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0].endswith("3 nodes, 3 running")
    rows = _rows(done.stdout)
    assert sorted(rows) == names
    assert all(row[0] == "Running" for row in rows.values())
    config = tmp_path / "c.toml"
    config.write_text(f'cluster_redis_url = "{redis.url}"\n')
    via_file = subprocess.run(
        [sys.executable, "-m", "ferrymq", "cluster", "status", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert via_file.returncode == 0 and sorted(_rows(via_file.stdout)) == names
    # Redis unreachable, no URL: a clear line and a non-zero status.
    gone = _status("redis://127.0.0.1:1/0")
    assert gone.returncode == 1 and "cannot read the cluster from Redis" in gone.stderr
    assert "Traceback" not in gone.stderr
    missing = _status(None)
    assert missing.returncode == 2 and "no Redis URL" in missing.stderr


def test_a_frozen_node_fails_cluster_lists_then_answers_again(make_cluster, clients, uid) -> None:
    redis, (n1, n2, n3) = make_cluster(3)
    name3 = node_name(n3)
    connect(clients, n3.port, f"{uid}-on3")  # keep alive 60 s: it outlives the freeze
    api = Api(n1.api_port)
    assert wait_until(lambda: len(_listed(api, "/clients")) == 1)
    assert n3.proc is not None
    n3.proc.send_signal(signal.SIGSTOP)
    try:
        began = time.monotonic()
        r = api.get("/clients")
        took = time.monotonic() - began
        assert (r.status, r.code) == (500, 101), r
        assert took < 9, f"the request took {took:.1f} s"
        # Once its heartbeat expired it is out of the cluster: Stopped, and not asked.
        assert wait_until(
            lambda: _rows(_status(redis.url).stdout).get(name3, [""])[0] == "Stopped",
            timeout=10,
            every=0.5,
        )
        assert _listed(api, "/clients") == []
        r = api.get(f"/nodes/{name3}/clients")
        assert (r.status, r.code) == (500, 101), r
    finally:
        n3.proc.send_signal(signal.SIGCONT)
    # Awake, it answers again: its client is listed from node 1 and node 2.
    assert wait_until(
        lambda: [c["node"] for c in _answered(api, "/clients") or ()] == [name3],
        timeout=20,
        every=0.3,
    ), n3.log()[-5000:]
    # Node 2 sees it come back at its own next membership read, not at node 1's.
    assert wait_until(
        lambda: (
            [c["clientid"] for c in _answered(Api(n2.api_port), "/clients") or ()] == [f"{uid}-on3"]
        ),
        timeout=5,
        every=0.3,
    )
    assert _rows(_status(redis.url).stdout)[name3][0] == "Running"
    assert "Traceback" not in n1.log() and "Traceback" not in n3.log()
