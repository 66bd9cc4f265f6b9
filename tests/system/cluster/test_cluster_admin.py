"""Admin data is cluster-wide: users, client id records, ACL rules, bans and API apps changed
on one node (through the API or the command line) are in force on the others, also when
the change was made while Redis was away. Real redis-server, real nodes, real HTTP."""

from __future__ import annotations

import queue
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import quote

import pytest

from api_http import Api
from brokers import BrokerProcess
from clients import V5, TestClient, connack_code
from redis_server import RedisServer, start_nodes, wait_until

pytestmark = pytest.mark.timeout(90)

CLOSED = ("--no-allow-anonymous",)  # a client needs credentials: a record is visible
SPREAD = 5.0  # generous on a loaded machine; it takes some milliseconds here


def logs_in(node: BrokerProcess, client_id: str, user: str, password: str) -> bool:
    return connack_code(node.port, client_id, user, password) == 0


def member(made: list[TestClient], node: BrokerProcess, client_id: str, user: str) -> TestClient:
    c = TestClient(client_id, protocol=V5)
    c.c.username_pw_set(user, "pw")
    c.connect(node.port)
    made.append(c)
    return c


def delivered(pub: TestClient, sub: TestClient, topic: str, payload: bytes) -> bool:
    pub.publish(topic, payload, qos=1)
    try:
        while True:
            if sub.get(timeout=0.5).payload == payload:
                return True
    except queue.Empty:
        return False


def test_users_and_client_ids_changed_on_one_node_apply_on_all(make_cluster, uid) -> None:
    _redis, (n1, n2, n3) = make_cluster(3, *CLOSED)
    a1, a2, a3 = Api(n1.api_port), Api(n2.api_port), Api(n3.api_port)
    user = f"{uid}-user"
    assert not logs_in(n3, f"{uid}-c", user, "pw1")

    a2.ok("POST", "/auth_username", {"username": user, "password": "pw1"})
    start = time.monotonic()
    assert wait_until(lambda: logs_in(n3, f"{uid}-c", user, "pw1"), SPREAD)
    took = time.monotonic() - start
    assert logs_in(n1, f"{uid}-c", user, "pw1")
    assert not logs_in(n1, f"{uid}-c", user, "wrong")
    print(f"a user added on node 2 logged in on node 3 after {took * 1000:.0f} ms")
    listed = a3.ok("GET", "/auth_username")
    assert [r["username"] for r in listed] == [user]
    assert "password" not in str(listed) and "hash" not in str(listed)

    a1.ok("PUT", f"/auth_username/{user}", {"password": "pw2"})
    assert wait_until(lambda: logs_in(n2, f"{uid}-c", user, "pw2"), SPREAD)
    assert not logs_in(n3, f"{uid}-c", user, "pw1") or logs_in(n3, f"{uid}-c", user, "pw2")
    assert wait_until(lambda: not logs_in(n3, f"{uid}-c", user, "pw1"), SPREAD)

    a3.ok("DELETE", f"/auth_username/{user}")
    assert wait_until(lambda: not logs_in(n1, f"{uid}-c", user, "pw2"), SPREAD)
    assert wait_until(lambda: not logs_in(n2, f"{uid}-c", user, "pw2"), SPREAD)

    client_id = f"{uid}-device"
    a1.ok("POST", "/auth_clientid", {"clientid": client_id, "password": "dev"})
    assert wait_until(lambda: logs_in(n2, client_id, "anyone", "dev"), SPREAD)
    assert wait_until(lambda: logs_in(n3, client_id, "anyone", "dev"), SPREAD)
    assert not logs_in(n3, client_id, "anyone", "nope")
    assert a2.ok("GET", f"/auth_clientid/{client_id}")["clientid"] == client_id


def test_acl_rules_changed_on_one_node_apply_on_all(make_cluster, clients, uid) -> None:
    _redis, (n1, n2, n3) = make_cluster(3, *CLOSED)
    a1, a3 = Api(n1.api_port), Api(n3.api_port)
    user = f"{uid}-u"
    a1.ok("POST", "/auth_username", {"username": user, "password": "pw"})
    assert wait_until(lambda: logs_in(n2, f"{uid}-x", user, "pw"), SPREAD)
    sub = member(clients, n2, f"{uid}-sub", user)
    sub.subscribe(f"{uid}/acl/#", 1)
    pub = member(clients, n2, f"{uid}-pub", user)
    topic = f"{uid}/acl/t"
    assert delivered(pub, sub, topic, b"before")

    # A deny rule added on node 1 stops a publish on node 2.
    a1.ok(
        "POST",
        "/acl",
        {"username": user, "topic": f"{uid}/acl/#", "action": "pub", "access": "deny"},
    )
    assert wait_until(lambda: not delivered(pub, sub, topic, b"probe"), SPREAD, every=0)
    pub.publish(topic, b"denied", qos=1)
    sub.expect_nothing(0.5)
    rules = Api(n2.api_port).ok("GET", f"/acl/username/{user}")
    assert [(r["topic"], r["action"], r["access"]) for r in rules] == [
        (f"{uid}/acl/#", "pub", "deny")
    ]

    # Deleted on node 3: allowed again on node 2.
    a3.ok("DELETE", f"/acl/username/{user}/topic/{quote(f'{uid}/acl/#', safe='')}")
    assert wait_until(lambda: delivered(pub, sub, topic, b"again"), SPREAD, every=0)


def test_bans_and_apps_changed_on_one_node_apply_on_all(make_cluster, clients, uid) -> None:
    _redis, (n1, n2, n3) = make_cluster(3)
    a1, a2, a3 = Api(n1.api_port), Api(n2.api_port), Api(n3.api_port)

    # A ban made on node 3 kicks the client on node 2 and refuses its CONNECT on node 1.
    victim = TestClient(f"{uid}-victim", protocol=V5)
    victim.connect(n2.port)
    clients.append(victim)
    assert logs_in(n1, f"{uid}-other", "", "")
    a3.ok("POST", "/banned", {"who": f"{uid}-victim", "as": "clientid", "reason": "test"})
    assert victim.disconnected.wait(SPREAD)
    assert wait_until(lambda: not logs_in(n1, f"{uid}-victim", "", ""), SPREAD)
    assert logs_in(n1, f"{uid}-other", "", "")
    banned = a1.ok("GET", "/banned")
    assert [(b["who"], b["as"], b["reason"]) for b in banned] == [
        (f"{uid}-victim", "clientid", "test")
    ]
    a1.ok("DELETE", f"/banned/clientid/{uid}-victim")
    assert wait_until(lambda: logs_in(n3, f"{uid}-victim", "", ""), SPREAD)
    assert wait_until(lambda: logs_in(n2, f"{uid}-victim", "", ""), SPREAD)

    # An app created on node 1 works on node 2; disabled on node 3, refused on node 2 at once
    # (its verified credentials were cached there); deleted on node 2, refused everywhere.
    app_id = f"{uid}-app"
    a1.ok("POST", "/apps", {"name": "ops", "app_id": app_id, "secret": "s3cret"})
    on2, on3 = Api(n2.api_port, auth=(app_id, "s3cret")), Api(n3.api_port, auth=(app_id, "s3cret"))
    assert wait_until(lambda: on2.get("/nodes").status == 200, SPREAD)
    assert a3.ok("GET", f"/apps/{app_id}")["name"] == "ops"
    assert "secret" not in a3.ok("GET", f"/apps/{app_id}")
    a3.ok("PUT", f"/apps/{app_id}", {"status": False})
    assert wait_until(lambda: on2.get("/nodes").status == 401, SPREAD)
    a2.ok("DELETE", f"/apps/{app_id}")
    assert wait_until(lambda: a1.get(f"/apps/{app_id}").status == 404, SPREAD)
    assert on3.get("/nodes").status == 401


def ferrymq(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ferrymq", *args], capture_output=True, text=True, timeout=30
    )


def test_a_command_line_edit_of_one_nodes_database_spreads(make_cluster, uid) -> None:
    _redis, (n1, n2, n3) = make_cluster(3, *CLOSED)
    user = f"{uid}-cli"
    done = ferrymq("users", "add", user, "--password", "pw", "--data-dir", str(n1.data_dir))
    assert done.returncode == 0, done.stderr
    assert wait_until(lambda: logs_in(n2, f"{uid}-c", user, "pw"), SPREAD)
    assert wait_until(lambda: logs_in(n3, f"{uid}-c", user, "pw"), SPREAD)
    rule = ("acl", "add", "--username", user, f"{uid}/#", "pubsub", "deny")
    done = ferrymq(*rule, "--data-dir", str(n3.data_dir))
    assert done.returncode == 0, done.stderr
    assert wait_until(lambda: Api(n1.api_port).ok("GET", f"/acl/username/{user}"), SPREAD)


def test_edits_made_while_redis_was_down_spread_when_it_returns(tmp_path: Path, uid) -> None:
    redis = RedisServer(tmp_path / "redis")
    redis.extra = ["--appendonly", "yes", "--appendfsync", "always"]  # its data survives
    redis.start()
    nodes = start_nodes(redis, tmp_path, 2, *CLOSED)
    try:
        n1, n2 = nodes
        a1, a2 = Api(n1.api_port), Api(n2.api_port)
        for name in ("keep", "gone"):
            a1.ok("POST", "/auth_username", {"username": f"{uid}-{name}", "password": "pw"})
        assert wait_until(lambda: logs_in(n2, f"{uid}-c", f"{uid}-gone", "pw"), SPREAD)

        redis.stop()
        assert n1.wait_log("unreachable", timeout=15)
        # Edits on node 1 while it is cut off: in force there at once, not yet on node 2.
        a1.ok("POST", "/auth_username", {"username": f"{uid}-new", "password": "pw"})
        a1.ok("DELETE", f"/auth_username/{uid}-gone")
        assert logs_in(n1, f"{uid}-c", f"{uid}-new", "pw")
        assert not logs_in(n2, f"{uid}-c", f"{uid}-new", "pw")
        # Node 2 changes another record meanwhile: both edits survive the return.
        a2.ok("PUT", f"/auth_username/{uid}-keep", {"password": "changed"})

        redis.start()
        assert wait_until(lambda: logs_in(n2, f"{uid}-c", f"{uid}-new", "pw"), 20)
        assert wait_until(lambda: not logs_in(n2, f"{uid}-c", f"{uid}-gone", "pw"), SPREAD)
        assert wait_until(lambda: logs_in(n1, f"{uid}-c", f"{uid}-keep", "changed"), SPREAD)
        assert logs_in(n2, f"{uid}-c", f"{uid}-keep", "changed")
        users = {r["username"] for r in a2.ok("GET", "/auth_username")}
        assert users == {f"{uid}-keep", f"{uid}-new"}
    finally:
        for node in nodes:
            node.stop()
        redis.stop()


def test_redis_that_lost_everything_is_refilled_keeping_the_outages_edits(
    make_cluster, uid
) -> None:
    redis, (n1, n2) = make_cluster(2, *CLOSED)
    a1, a2 = Api(n1.api_port), Api(n2.api_port)
    for name in ("keep", "gone", "mine", "theirs"):
        a1.ok("POST", "/auth_username", {"username": f"{uid}-{name}", "password": "pw"})
    assert wait_until(lambda: logs_in(n2, f"{uid}-c", f"{uid}-theirs", "pw"), SPREAD)
    redis.stop()
    assert n1.wait_log("unreachable", timeout=15) and n2.wait_log("unreachable", timeout=15)
    # Both nodes edit while Redis is away; it comes back empty (no persistence).
    a2.ok("POST", "/auth_username", {"username": f"{uid}-new", "password": "pw"})
    a2.ok("DELETE", f"/auth_username/{uid}-gone")
    a2.ok("PUT", f"/auth_username/{uid}-theirs", {"password": "two"})
    a1.ok("PUT", f"/auth_username/{uid}-mine", {"password": "one"})
    redis.start()
    expected = {
        f"{uid}-keep": "pw",
        f"{uid}-new": "pw",
        f"{uid}-mine": "one",
        f"{uid}-theirs": "two",
    }
    for node, api in ((n1, a1), (n2, a2)):
        users = lambda api=api: {r["username"] for r in api.ok("GET", "/auth_username")}  # noqa: E731
        assert wait_until(lambda users=users: users() == set(expected), 20), users()
        for name, password in expected.items():
            assert wait_until(
                lambda n=node, u=name, p=password: logs_in(n, f"{uid}-c", u, p), SPREAD
            )
        assert not logs_in(node, f"{uid}-c", f"{uid}-gone", "pw")
    assert set(redis.client().hkeys("ferrymq:admin:username")) == set(expected)
