"""A publisher's acknowledgement of a message for another node means the message is in
Redis: the publisher's node killed right after its PUBACKs / PUBRECs loses none of the
acknowledged messages. Real redis-server, real nodes, raw MQTT publishers (to see each
PUBACK and PUBREC as it arrives), a paho subscriber."""

from __future__ import annotations

import signal
import threading
import time

import pytest

from clients import V5, TestClient, props
from rawclient import RawClient
from redis_server import connect, received, wait_routed

pytestmark = pytest.mark.timeout(120)

#: Messages per QoS; Redis holds the nodes' writes for PAUSE_MS while they are acknowledged.
COUNT = 100
PAUSE_MS = 1500


def acked(client: RawClient, count: int, payloads: dict[int, bytes]) -> list[bytes]:
    """The payloads of the first ``count`` acknowledgements ``client`` reads."""
    return [payloads[client.recv(15.0).packet_id] for _ in range(count)]  # type: ignore[attr-defined]


def test_acknowledged_messages_survive_their_publishers_node_killed(
    make_cluster, clients, uid
) -> None:
    """Redis is made to hold every write (``CLIENT PAUSE ... WRITE``) while the publishers
    send, which keeps the batches carrying their messages out of Redis for that long: the
    gap between an early acknowledgement and the send is then wide, not a matter of luck.
    Node 1 is killed the moment the last acknowledgement arrives; node 2 must deliver each
    acknowledged message, each QoS 2 one exactly once."""
    redis, (n1, n2) = make_cluster(2)
    sub = TestClient(f"{uid}-sub", protocol=V5, reconnect_on_failure=False)
    sub.connect(n2.port, clean=False, properties=props(SessionExpiryInterval=300))
    clients.append(sub)
    sub.subscribe([(f"{uid}/q1", 1), (f"{uid}/q2", 2)])
    probe = connect(clients, n1.port, f"{uid}-probe")
    wait_routed(probe, sub, f"{uid}/q1")
    wait_routed(probe, sub, f"{uid}/q2")
    publishers = {}
    for qos in (1, 2):
        raw = RawClient(n1.port, 4, timeout=15.0)
        raw.connect(f"{uid}-pub{qos}")
        publishers[qos] = raw
    redis.client().execute_command("CLIENT", "PAUSE", PAUSE_MS, "WRITE")
    started = time.monotonic()
    sent: dict[int, dict[int, bytes]] = {1: {}, 2: {}}
    for i in range(COUNT):
        for qos, raw in publishers.items():
            payload = f"q{qos}-{i}".encode()
            sent[qos][raw.publish(f"{uid}/q{qos}", payload, qos)] = payload
    got: dict[int, list[bytes]] = {}

    def read(qos: int) -> None:
        got[qos] = acked(publishers[qos], COUNT, sent[qos])

    readers = [threading.Thread(target=read, args=(qos,)) for qos in publishers]
    for reader in readers:
        reader.start()
    for reader in readers:
        reader.join()
    n1.stop(signal.SIGKILL)  # at once: whatever is not in Redis yet dies with the node
    held = time.monotonic() - started
    for raw in publishers.values():
        raw.close()
    assert sorted(got[1]) == sorted(sent[1].values())  # every PUBACK came
    assert sorted(got[2]) == sorted(sent[2].values())  # every PUBREC came
    delivered = [m.payload for m in received(sub, 3.0)]
    for qos in (1, 2):
        missing = [p for p in got[qos] if p not in delivered]
        assert not missing, (
            f"QoS {qos}: {len(missing)} acknowledged messages lost with node 1 "
            f"(acknowledged {held:.2f} s after the first PUBLISH, Redis paused "
            f"{PAUSE_MS} ms): {missing[:5]}"
        )
    twice = sorted({p for p in delivered if p.startswith(b"q2-") and delivered.count(p) > 1})
    assert not twice, f"QoS 2 delivered twice: {twice[:5]}"
