"""A standalone node restarted as a cluster node: the persistent sessions of its local
database are carried into Redis once, never over a newer one there. Real redis-server,
real nodes, paho-mqtt."""

from __future__ import annotations

import pytest

from brokers import BrokerProcess
from clients import V5, TestClient, props
from redis_server import RedisServer, connect, received, wait_until

pytestmark = pytest.mark.timeout(120)

EXPIRY = props(SessionExpiryInterval=300)


def offline_session(made: list[TestClient], port: int, client_id: str, topic: str) -> None:
    """A persistent MQTT 5 session subscribed to ``topic`` (QoS 1), left offline."""
    c = TestClient(client_id, protocol=V5, reconnect_on_failure=False)
    c.connect(port, clean=False, properties=EXPIRY)
    c.subscribe(topic, 1)
    c.disconnect()
    made.append(c)


def resume(made: list[TestClient], port: int, client_id: str) -> TestClient:
    c = TestClient(client_id, protocol=V5, reconnect_on_failure=False)
    flags, _, _ = c.connect(port, clean=False, properties=EXPIRY)
    assert flags.session_present, f"no session for {client_id} on port {port}"
    made.append(c)
    return c


def test_standalone_sessions_are_carried_into_redis_at_the_first_cluster_start(
    tmp_path, clients, uid
) -> None:
    redis = RedisServer(tmp_path / "redis").start()
    one = BrokerProcess(tmp_path / "node1").start()  # standalone first
    two = BrokerProcess(
        tmp_path / "node2", "--node-name", "node2@127.0.0.1", "--cluster-redis-url", redis.url
    )
    try:
        moved, kept = f"{uid}-moved", f"{uid}-kept"
        offline_session(clients, one.port, moved, f"{uid}/a")
        offline_session(clients, one.port, kept, f"{uid}/old")
        pub = connect(clients, one.port, f"{uid}-pub")
        for i in range(5):
            pub.publish(f"{uid}/a", f"q{i}".encode(), qos=1)
        pub.publish(f"{uid}/old", b"stale", qos=1)
        pub.disconnect()
        # Meanwhile the cluster has a newer session of ``kept``: it must stay as it is.
        two.start().wait_log("joined through")
        offline_session(clients, two.port, kept, f"{uid}/new")
        r = redis.client()
        assert wait_until(lambda: r.exists(f"ferrymq:session:{kept}"), 5)
        newer = r.get(f"ferrymq:session:{kept}")

        one.args += ["--node-name", "node1@127.0.0.1", "--cluster-redis-url", redis.url]
        one.restart().wait_log("joined through")
        assert one.wait_log("1 of 2 persistent sessions of the local database carried")
        assert r.hget(f"ferrymq:client:{moved}", "node") == "node1@127.0.0.1"
        assert r.get(f"ferrymq:session:{kept}") == newer

        # The carried session resumes on the other node, queued messages and all.
        back = resume(clients, two.port, moved)
        assert [m.payload for m in back.get_many(5, timeout=10)] == [
            f"q{i}".encode() for i in range(5)
        ]
        pub = connect(clients, one.port, f"{uid}-pub2")
        pub.publish(f"{uid}/a", b"after", qos=1)
        assert [m.payload for m in received(back, 1.0)] == [b"after"]
        # The newer one kept its own subscription and none of the stale queue.
        other = resume(clients, one.port, kept)
        assert received(other, 0.5) == []
        pub.publish(f"{uid}/new", b"fresh", qos=1)
        assert [m.payload for m in received(other, 1.0)] == [b"fresh"]

        # Once: restarted again, the node has nothing left to carry.
        one.restart()
        assert wait_until(lambda: one.log().count("joined through") == 2, 10)
        assert one.log().count("carried into Redis") == 1
    finally:
        one.stop()
        two.stop()
        redis.stop()
