"""Back-pressure: a publisher faster than its subscribers is slowed, not allowed to overflow
their queues, so QoS 1 messages are not lost and the broker's memory stays bounded."""

from __future__ import annotations

import time

from api_http import Api
from clients import V311, TestClient
from ferrymq.protocol.packets import Puback, Publish
from rawclient import RawClient


def _metrics(b) -> dict[str, int]:
    return Api(b.api_port).get("/metrics").data[0]["metrics"]


def test_slow_qos1_subscriber_slows_the_publisher_instead_of_dropping(make_broker, uid):
    b = make_broker("--max-mqueue-len", "200", "--max-inflight", "10")
    topic = f"bp/{uid}"
    sub = RawClient(b.port, 4, timeout=10)
    sub.connect(f"slow-{uid}")
    sub.subscribe(topic, 1)
    pub = TestClient(f"fast-{uid}", V311)
    pub.c.max_inflight_messages_set(20)
    pub.c.max_queued_messages_set(0)
    pub.connect(b.port)
    total = 2000
    infos = [pub.publish(topic, str(i).encode(), 1, wait=False) for i in range(total)]
    got: list[int] = []
    while len(got) < total:
        packet = sub.recv()
        assert isinstance(packet, Publish)
        got.append(int(packet.payload))
        time.sleep(0.0005)  # a subscriber slower than the publisher
        sub.send(Puback(packet.packet_id))
    for info in infos:
        info.wait_for_publish(10)
    assert got == list(range(total))
    assert _metrics(b)["delivery.dropped.queue_full"] == 0
    pub.disconnect()
    sub.close()
