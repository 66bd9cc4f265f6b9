"""Failures a cluster lives through: a node killed outright, Redis stopped and restarted
under traffic. Each test has a cluster of its own."""

from __future__ import annotations

import signal
import threading
import time

import pytest

from api_http import Api
from brokers import BrokerProcess
from clients import V311, TestClient
from redis_server import (
    RedisServer,
    connect,
    node_name,
    received,
    subscribed,
    wait_routed,
    wait_until,
)

pytestmark = pytest.mark.timeout(60)


def payloads(sub: TestClient, wait: float = 0.3) -> list[bytes]:
    return [m.payload for m in received(sub, wait)]


def test_a_killed_node_is_marked_down_and_its_routes_dropped(make_cluster, clients, uid) -> None:
    redis, (n1, n2, n3) = make_cluster(3)
    name2 = node_name(n2)
    s2 = subscribed(clients, n2.port, f"{uid}-s2", f"{uid}/k/#", 1)
    s3 = subscribed(clients, n3.port, f"{uid}-s3", f"{uid}/k/#", 1)
    pub = connect(clients, n1.port, f"{uid}-pub")
    wait_routed(pub, s2, f"{uid}/k/1")
    wait_routed(pub, s3, f"{uid}/k/1")
    r = redis.client()
    assert sorted(r.hkeys(f"ferrymq:route:{uid}/k/#")) == sorted([name2, node_name(n3)])

    n2.stop(signal.SIGKILL)
    killed = time.monotonic()
    api = Api(n1.api_port)

    def status_of_2() -> str | None:
        listed = {n["node"]: n["node_status"] for n in api.get("/nodes").data}
        return listed.get(name2)

    assert wait_until(lambda: status_of_2() == "Stopped", timeout=8)
    assert wait_until(lambda: r.hkeys(f"ferrymq:route:{uid}/k/#") == [node_name(n3)], timeout=3)
    assert time.monotonic() - killed < 6
    assert not r.exists(f"ferrymq:node-routes:{name2}")
    # The others keep working, and node 1 forwards nothing into the void.
    api1 = Api(n1.api_port)
    paused = api1.get("/metrics").data[0]["metrics"]["cluster.forward.paused"]
    forwarded = api1.get("/metrics").data[0]["metrics"]["cluster.forwarded"]
    pub.publish(f"{uid}/k/2", b"after", qos=1)
    assert payloads(s3, 1.0) == [b"after"]
    after = api1.get("/metrics").data[0]["metrics"]
    assert after["cluster.forwarded"] == forwarded + 1  # to node 3 only
    assert after["cluster.forward.paused"] == paused
    assert Api(n3.api_port).get(f"/brokers/{name2}").data["node_status"] == "Stopped"
    # Restarted, it rejoins and gets messages again.
    n2.start()
    # Its previous process's heartbeat must expire first (the name is taken until then).
    assert wait_until(lambda: n2.log().count("joined through") == 2, timeout=8)
    s2b = subscribed(clients, n2.port, f"{uid}-s2b", f"{uid}/k/#", 1)
    wait_routed(pub, s2b, f"{uid}/k/3")
    assert wait_until(lambda: status_of_2() == "Running", timeout=3)


def test_redis_restart_under_traffic(make_cluster, clients, uid) -> None:
    redis, (n1, n2) = make_cluster(2)
    local = subscribed(clients, n1.port, f"{uid}-local", f"{uid}/t", 1)
    remote = subscribed(clients, n2.port, f"{uid}-remote", f"{uid}/t", 1)
    pub = connect(clients, n1.port, f"{uid}-pub")
    wait_routed(pub, remote, f"{uid}/t")
    payloads(local)

    stop = threading.Event()
    sent: list[bytes] = []

    def traffic() -> None:
        i = 0
        while not stop.is_set():
            payload = f"m{i}".encode()
            pub.publish(f"{uid}/t", payload, qos=1)
            sent.append(payload)
            i += 1
            time.sleep(0.02)

    t = threading.Thread(target=traffic, daemon=True)
    t.start()
    try:
        time.sleep(0.3)
        before = max(0, len(sent) - 2)  # the last ones may be on their way when Redis goes
        redis.stop()
        down_at = len(sent)
        time.sleep(1.5)
        during = len(sent)
        redis.start()
        up_at = len(sent)
        # Cross-node resumes: a message sent well after Redis returned reaches node 2.
        assert n1.wait_log("cluster: Redis is back", timeout=8), n1.log()[-3000:]
        assert n2.wait_log("cluster: Redis is back", timeout=8), n2.log()[-3000:]
        time.sleep(0.5)
        resumed_from = len(sent)
        time.sleep(0.5)
    finally:
        stop.set()
        t.join(5)
    got_local = payloads(local, 1.0)
    got_remote = payloads(remote, 0.5)
    # Local delivery never stopped: every message, in order.
    assert got_local == sent
    assert during > down_at  # the publisher was served meanwhile
    # Cross-node: what was sent before the outage and after the resync arrived.
    assert set(sent[:before]) <= set(got_remote)
    assert set(sent[resumed_from:]) <= set(got_remote)
    assert up_at <= resumed_from
    metrics = Api(n1.api_port).get("/metrics").data[0]["metrics"]
    assert metrics["cluster.forward.paused"] > 0
    log = n1.log()
    assert log.count("unreachable") == 1, "the outage is logged once"
    assert "Traceback" not in log and "Traceback" not in n2.log()


def test_a_stalled_node_taken_for_down_announces_its_routes_again(
    make_cluster, clients, uid
) -> None:
    _redis, (n1, n2) = make_cluster(2)
    sub = subscribed(clients, n2.port, f"{uid}-sub", f"{uid}/s", 1)
    pub = connect(clients, n1.port, f"{uid}-pub")
    wait_routed(pub, sub, f"{uid}/s")
    api = Api(n1.api_port)
    assert n2.proc is not None
    n2.proc.send_signal(signal.SIGSTOP)  # its loop stalls past the heartbeat's TTL
    try:
        assert wait_until(
            lambda: (api.get(f"/nodes/{node_name(n2)}").data or {}).get("node_status") == "Stopped",
            timeout=8,
        )
    finally:
        n2.proc.send_signal(signal.SIGCONT)
    assert n2.wait_log("heartbeat lapsed", timeout=5)
    wait_routed(pub, sub, f"{uid}/s")
    pub.publish(f"{uid}/s", b"again", qos=1)
    assert payloads(sub, 1.0) == [b"again"]


def test_qos1_sent_to_a_node_survive_its_restart(make_cluster, clients, uid) -> None:
    _redis, (n1, n2) = make_cluster(2)
    durable = TestClient(f"{uid}-durable", protocol=V311)
    durable.connect(n2.port, clean=False)
    durable.subscribe(f"{uid}/q", 1)
    durable.disconnect()  # its persistent session waits on node 2
    pub = connect(clients, n1.port, f"{uid}-pub")
    probe = subscribed(clients, n2.port, f"{uid}-probe", f"{uid}/q", 0)
    wait_routed(pub, probe, f"{uid}/q")
    assert n2.proc is not None
    n2.proc.send_signal(signal.SIGSTOP)  # in its stream, not yet read, when it dies
    for i in range(5):
        pub.publish(f"{uid}/q", f"kept{i}".encode(), qos=1)
    n2.stop(signal.SIGKILL)
    n2.start()
    # Its previous process's heartbeat must expire first (the name is taken until then).
    assert wait_until(lambda: n2.log().count("joined through") == 2, timeout=8)
    back = TestClient(f"{uid}-durable", protocol=V311)
    back.connect(n2.port, clean=False)
    try:
        # The restarted node reads its stream once it has rejoined: on a loaded machine
        # the first message may take seconds; the rest follow it (its queue holds the
        # probes too, which ``received`` leaves out).
        assert wait_until(lambda: b"kept0" in [m.payload for m in list(back.messages.queue)], 10)
        got = [m.payload for m in received(back, 1.0)]
    finally:
        back.disconnect()
    assert got == [f"kept{i}".encode() for i in range(5)]


def test_a_second_node_with_the_same_name_does_not_join(make_cluster, tmp_path) -> None:
    redis, (n1,) = make_cluster(1)
    twin = BrokerProcess(
        tmp_path / "twin", "--node-name", node_name(n1), "--cluster-redis-url", redis.url
    ).start()
    try:
        assert twin.wait_log("another node named", timeout=5)
        assert "joined" not in twin.log()
        assert n1.alive()
    finally:
        twin.stop()


def test_a_node_stopping_sends_its_clients_wills_and_leaves(make_cluster, clients, uid) -> None:
    _redis, (n1, n2) = make_cluster(2)
    sub = subscribed(clients, n1.port, f"{uid}-sub", f"{uid}/will", 1)
    willing = TestClient(f"{uid}-willing", protocol=V311)
    willing.c.will_set(f"{uid}/will", b"gone", qos=1)
    willing.connect(n2.port)
    clients.append(willing)
    wait_routed(willing, sub, f"{uid}/will")
    api = Api(n1.api_port)
    assert wait_until(lambda: len(api.get("/nodes").data) == 2, timeout=3)
    assert n2.stop() == 0  # SIGTERM: the server closes the connections, wills are due
    assert payloads(sub, 1.0) == [b"gone"]
    assert [n["node"] for n in api.get("/nodes").data] == [node_name(n1)]


def test_a_node_started_before_redis_serves_locally_and_joins_later(tmp_path, clients, uid) -> None:
    redis = RedisServer(tmp_path / "redis")  # its port is chosen, nothing listens yet
    node = BrokerProcess(
        tmp_path / "n", "--node-name", "early@127.0.0.1", "--cluster-redis-url", redis.url
    ).start()
    try:
        assert node.wait_log("unreachable", timeout=5)
        sub = subscribed(clients, node.port, f"{uid}-sub", f"{uid}/l", 1)
        pub = connect(clients, node.port, f"{uid}-pub")
        pub.publish(f"{uid}/l", b"local", qos=1)
        assert payloads(sub, 0.5) == [b"local"]
        redis.start()
        assert node.wait_log("joined through", timeout=8)
        assert wait_until(lambda: redis.client().hkeys(f"ferrymq:route:{uid}/l") != [])
    finally:
        node.stop()
        redis.stop()
