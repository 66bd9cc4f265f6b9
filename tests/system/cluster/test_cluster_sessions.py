"""One client id, one session, cluster-wide: takeover across nodes (MQTT 5 0x8E), racing
CONNECTs, a persistent session that moves from node to node while messages arrive, and
one whose node is killed. Real redis-server, real nodes, paho-mqtt."""

from __future__ import annotations

import signal
import threading
import time

import pytest

from api_http import Api
from brokers import BrokerProcess
from clients import V5, V311, TestClient, props
from redis_server import connect, node_name, persistent, received, wait_routed, wait_until

pytestmark = pytest.mark.timeout(120)


def online_on(nodes: list[BrokerProcess], client_id: str) -> list[str]:
    """The nodes that hold ``client_id`` connected, by the cluster-wide API of each node
    (``/clients/{id}`` lists the client with its ``node``); every node must tell the same."""
    seen = []
    for node in nodes:
        got = Api(node.api_port).get(f"/clients/{client_id}")
        items = got.data or () if got.status == 200 else ()
        seen.append(sorted(c["node"] for c in items if c.get("connected")))
    return seen[0] if all(s == seen[0] for s in seen) else ["disagree", *map(str, seen)]


def test_a_connect_on_another_node_takes_the_session_over(cluster3, clients, uid) -> None:
    redis, (n1, n2, n3) = cluster3
    old = persistent(clients, n1.port, f"{uid}-c", present=False)
    old.subscribe(f"{uid}/t", 1)
    new = persistent(clients, n2.port, f"{uid}-c", present=True)
    assert old.disconnects.get(timeout=5).value == 0x8E  # session taken over
    assert redis.client().hget(f"ferrymq:client:{uid}-c", "node") == node_name(n2)
    # The subscription came along: a message published on node 3 reaches the new one.
    pub = connect(clients, n3.port, f"{uid}-pub")
    wait_routed(pub, new, f"{uid}/t")
    pub.publish(f"{uid}/t", b"after", qos=1)
    assert [m.payload for m in received(new, 1.0)] == [b"after"]
    old.expect_nothing(0.3)
    assert wait_until(lambda: online_on([n1, n2, n3], f"{uid}-c") == [node_name(n2)], 5)


def test_an_mqtt3_connection_taken_over_elsewhere_is_closed(cluster3, clients, uid) -> None:
    _, (n1, n2, _) = cluster3
    old = TestClient(f"{uid}-v3", protocol=V311, reconnect_on_failure=False)
    old.connect(n1.port)
    clients.append(old)
    new = TestClient(f"{uid}-v3", protocol=V311)
    new.connect(n2.port)
    clients.append(new)
    assert old.disconnected.wait(5)
    assert wait_until(lambda: online_on([n1, n2], f"{uid}-v3") == [node_name(n2)], 5)


def _race(go: threading.Barrier, c: TestClient, port: int) -> None:
    go.wait()
    expiry = props(SessionExpiryInterval=300)
    c.c.connect("127.0.0.1", port, clean_start=False, properties=expiry)
    c.c.loop_start()


def _live(c: TestClient) -> bool:
    """Connected and not closed by the broker since (paho's own flag lags behind)."""
    return c.c.is_connected() and not c.disconnected.is_set()


def _one_connected(racers: list[TestClient]) -> bool:
    return sum(_live(c) for c in racers) == 1


def test_racing_connects_on_two_nodes_leave_one_winner(cluster3, clients, uid) -> None:
    redis, (n1, n2, n3) = cluster3
    r = redis.client()
    for round_ in range(8):
        cid = f"{uid}-race{round_}"
        racers = [TestClient(cid, protocol=V5, reconnect_on_failure=False) for _ in range(2)]
        clients.extend(racers)
        go = threading.Barrier(2)
        threads = [
            threading.Thread(target=_race, args=(go, racers[0], n1.port)),
            threading.Thread(target=_race, args=(go, racers[1], n2.port)),
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

        assert wait_until(lambda rs=racers: _one_connected(rs), 8), (
            f"round {round_}: not exactly one connected"
        )
        time.sleep(0.3)  # a loser's 0x8E would be here by now
        live = [_live(c) for c in racers]
        assert live.count(True) == 1, f"round {round_}: {live}"
        winner = live.index(True)
        names = [node_name(n1), node_name(n2)]
        assert r.hget(f"ferrymq:client:{cid}", "node") == names[winner]
        assert online_on([n1, n2, n3], cid) == [names[winner]]


def test_a_persistent_session_hops_across_the_nodes_while_messages_arrive(
    cluster3, clients, uid
) -> None:
    _, (n1, n2, n3) = cluster3
    topic = f"{uid}/hop"
    sub = persistent(clients, n2.port, f"{uid}-hop", present=False)
    sub.subscribe(topic, 1)
    pub = connect(clients, n1.port, f"{uid}-pub")
    wait_routed(pub, sub, topic)
    sent: list[bytes] = []
    stop = threading.Event()

    def publish() -> None:
        i = 0
        while not stop.is_set():
            payload = f"m{i}".encode()
            pub.publish(topic, payload, qos=1)
            sent.append(payload)
            i += 1
            time.sleep(0.01)

    got: list[bytes] = []
    publisher = threading.Thread(target=publish)
    publisher.start()
    try:
        for port in (n3.port, n1.port, n2.port, n3.port):
            time.sleep(0.5)
            sub.disconnect()
            got += [m.payload for m in received(sub, 0.05)]  # all it got before it left
            time.sleep(0.2)  # messages arrive while the session is offline
            sub = persistent(clients, port, f"{uid}-hop", present=True)
        time.sleep(0.5)
    finally:
        stop.set()
        publisher.join()
    got += [m.payload for m in received(sub, 2.0)]
    assert len(sent) > 100
    missing = [p for p in sent if p not in set(got)]
    assert not missing, f"{len(missing)} of {len(sent)} QoS 1 messages lost: {missing[:10]}"


@pytest.mark.parametrize("online", [False, True], ids=["offline", "online"])
def test_a_session_outlives_the_node_killed_under_it(make_cluster, clients, uid, online) -> None:
    redis, (n1, n2, n3) = make_cluster(3)
    topic = f"{uid}/k"
    sub = persistent(clients, n2.port, f"{uid}-k", present=False)
    sub.subscribe(topic, 1)
    pub = connect(clients, n1.port, f"{uid}-pub")
    wait_routed(pub, sub, topic)
    if not online:
        sub.disconnect()
        for i in range(5):
            pub.publish(topic, f"q{i}".encode(), qos=1)
        # Node 2 has them (its inbox acknowledged: queued for the session, in Redis).
        inbox = f"ferrymq:inbox:{node_name(n2)}"
        assert wait_until(lambda: redis.client().xlen(inbox) == 0, 5)
    n2.stop(signal.SIGKILL)
    if online:
        sub.drop()
    # Taken in by another node once node 2's heartbeat is gone; the client comes back there.
    r = redis.client()
    assert wait_until(lambda: r.hget(f"ferrymq:client:{uid}-k", "node") != node_name(n2), 10)
    back = persistent(clients, n3.port, f"{uid}-k", present=True)
    if not online:
        assert [m.payload for m in back.get_many(5, timeout=5)] == [
            f"q{i}".encode() for i in range(5)
        ]
    wait_routed(pub, back, topic)
    pub.publish(topic, b"after", qos=1)
    assert [m.payload for m in received(back, 1.0)] == [b"after"]


def test_an_offline_session_expires_on_the_node_that_holds_it(cluster3, clients, uid) -> None:
    redis, (n1, n2, _) = cluster3
    c = TestClient(f"{uid}-exp", protocol=V5)
    c.connect(n1.port, clean=False, properties=props(SessionExpiryInterval=2))
    c.subscribe(f"{uid}/e", 1)
    c.disconnect()
    r = redis.client()
    assert wait_until(lambda: r.exists(f"ferrymq:session:{uid}-exp"), 3)
    assert wait_until(lambda: not r.exists(f"ferrymq:session:{uid}-exp"), 8)
    assert not r.exists(f"ferrymq:client:{uid}-exp")
    again = persistent(clients, n2.port, f"{uid}-exp", present=False)
    again.disconnect()


def test_qos2_for_a_session_whose_node_is_killed_under_traffic_arrives_once(
    make_cluster, clients, uid
) -> None:
    """Batches the killed node had dispatched into the session were acknowledged with
    it; the others are delivered from its inbox by the node that takes the session in:
    each message once, none twice."""
    redis, (n1, n2, n3) = make_cluster(3)
    topic = f"{uid}/x"
    sub = persistent(clients, n2.port, f"{uid}-x", present=False)
    sub.subscribe(topic, 2)
    pub = connect(clients, n1.port, f"{uid}-pub")
    wait_routed(pub, sub, topic)
    sub.disconnect()
    stop = threading.Event()
    sent = []

    def publish() -> None:
        i = 0
        while not stop.is_set():
            pub.publish(topic, f"x{i}".encode(), qos=2)
            sent.append(i)
            i += 1

    publisher = threading.Thread(target=publish)
    publisher.start()
    try:
        time.sleep(1.0)
        n2.stop(signal.SIGKILL)
        time.sleep(0.5)
    finally:
        stop.set()
        publisher.join()
    r = redis.client()
    assert wait_until(lambda: r.hget(f"ferrymq:client:{uid}-x", "node") != node_name(n2), 10)
    back = persistent(clients, n3.port, f"{uid}-x", present=True)
    got = [m.payload for m in received(back, 2.0)]
    assert len(sent) > 50 and len(got) > 20
    twice = {p for p in got if got.count(p) > 1}
    assert not twice, f"delivered twice: {sorted(twice)[:10]}"
