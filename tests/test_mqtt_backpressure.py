"""The per-session queue: a subscriber that does not keep up gets its inflight window and a
bounded queue; beyond that its oldest messages are dropped and counted against it, and the
publisher is acknowledged as usual."""

from __future__ import annotations

from api_http import Api
from clients import V311, TestClient
from ferrymq.protocol.packets import Publish
from rawclient import RawClient


def test_stuck_qos1_subscriber_drops_its_oldest_queued_messages(make_broker, uid):
    b = make_broker("--max-mqueue-len", "200", "--max-inflight", "10")
    api = Api(b.api_port)
    topic = f"bp/{uid}"
    sub = RawClient(b.port, 4, timeout=10)
    sub.connect(f"stuck-{uid}")
    sub.subscribe(topic, 1)
    pub = TestClient(f"pub-{uid}", V311)
    pub.c.max_inflight_messages_set(20)
    pub.c.max_queued_messages_set(0)
    pub.connect(b.port)
    total = 2000
    infos = [pub.publish(topic, str(i).encode(), 1, wait=False) for i in range(total)]
    for info in infos:
        info.wait_for_publish(10)  # every message acknowledged while the subscriber reads nothing
    assert all(info.is_published() for info in infos)
    client = api.get(f"/clients/stuck-{uid}").data[0]
    assert (client["inflight"], client["mqueue_len"]) == (10, 200)
    assert client["mqueue_dropped"] == total - 210
    assert api.get("/metrics").data[0]["metrics"]["delivery.dropped.queue_full"] == total - 210
    got = []
    for _ in range(210):
        packet = sub.recv()
        assert isinstance(packet, Publish)
        got.append(int(packet.payload))
        sub.send(b"\x40\x02" + packet.packet_id.to_bytes(2, "big"))  # PUBACK
    # The window went out first; the queue kept the newest 200 (the oldest were dropped).
    assert got == list(range(10)) + list(range(total - 200, total))
    sub.nothing(0.5)
    pub.disconnect()
    sub.close()
