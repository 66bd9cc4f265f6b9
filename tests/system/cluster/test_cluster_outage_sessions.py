"""One client id connected on two nodes while Redis was away: the later CONNECT wins,
whichever node resynchronises first, and the session in Redis afterwards is the
winner's alone. Real redis-server (stopped and started again), real nodes, paho-mqtt."""

from __future__ import annotations

import signal
import time

import pytest

from clients import V5, TestClient, props
from redis_server import connect, node_name, persistent, received, wait_routed, wait_until

pytestmark = pytest.mark.timeout(120)


def _during_outage(made: list[TestClient], port: int, client_id: str, topic: str) -> TestClient:
    """A persistent session opened (from the node's memory) while Redis is away."""
    c = TestClient(client_id, protocol=V5, reconnect_on_failure=False)
    c.connect(port, clean=False, properties=props(SessionExpiryInterval=300))
    made.append(c)
    c.subscribe(topic, 1)
    return c


@pytest.mark.parametrize("resyncs_first", ["earlier", "later"])
def test_a_client_id_on_two_nodes_in_an_outage_goes_to_the_later_connect(
    make_cluster, clients, uid, resyncs_first
) -> None:
    redis, (n1, n2) = make_cluster(2)
    cid = f"{uid}-two"
    early_topic, late_topic = f"{uid}/early", f"{uid}/late"
    redis.stop()
    for n in (n1, n2):
        assert n.wait_log("unreachable", timeout=15), n.log()[-3000:]
    early = _during_outage(clients, n1.port, cid, early_topic)
    time.sleep(0.05)  # the CONNECTs' order, in wall-clock time
    late = _during_outage(clients, n2.port, cid, late_topic)
    # The node of the other CONNECT is frozen until this one has claimed the client id.
    frozen = n2 if resyncs_first == "earlier" else n1
    frozen.proc.send_signal(signal.SIGSTOP)
    r = redis.client()
    try:
        redis.start()
        assert wait_until(lambda: r.hget(f"ferrymq:client:{cid}", "node") is not None, 20)
    finally:
        frozen.proc.send_signal(signal.SIGCONT)
    assert early.disconnects.get(timeout=20).value == 0x8E  # session taken over
    assert wait_until(lambda: r.hget(f"ferrymq:client:{cid}", "node") == node_name(n2), 20)
    # The later connection stays, with its own session: its subscription, not the other's.
    pub = connect(clients, n1.port, f"{uid}-pub")
    wait_routed(pub, late, late_topic, timeout=15)
    pub.publish(early_topic, b"for the closed one", qos=1)
    pub.publish(late_topic, b"for it", qos=1)
    assert [m.payload for m in received(late, 1.0)] == [b"for it"]
    assert late.disconnects.empty()
    # Redis holds that session alone: resumed on the other node, it is the same.
    late.disconnect()
    time.sleep(0.3)  # the session's last writes (its disconnection) reach Redis
    back = persistent(clients, n1.port, cid, present=True)
    pub.publish(early_topic, b"still not", qos=1)
    pub.publish(late_topic, b"again", qos=1)
    assert [m.payload for m in received(back, 1.0)] == [b"again"]
    record = r.get(f"ferrymq:session:{cid}") or ""
    assert late_topic in record and early_topic not in record
