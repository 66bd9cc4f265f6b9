"""Back-pressure across nodes: a sustained cross-node overload toward slow subscribers on
node 2 is felt by node 1's publishers instead of piling up anywhere. Real redis-server,
two real nodes, a paho QoS 1 publisher and slow paho subscriber, mosquitto_pub flooding
QoS 0 toward subscribers that read nothing, and a local pair on node 2."""

from __future__ import annotations

import subprocess
import threading
import time
from typing import Any

import pytest

from api_http import Api
from brokers import rss_kib
from clients import V5, TestClient
from ferrymq.cluster.pressure import INBOX_HIGH
from rawclient import RawClient
from redis_server import connect, node_name, wait_routed, wait_until

pytestmark = pytest.mark.timeout(90)

#: Node 2's ``max_mqueue_len``: small, so its queues fill within a fraction of a second.
MQUEUE = 100
RUN = 8.0  # seconds of overload
SLOW = 0.002  # seconds the slow subscriber takes per message
WINDOW = 50  # QoS 1 messages the publisher sends ahead of its acknowledgements
QOS0_LINES = 200_000
STUCK = 10


def metrics(node: Any) -> dict[str, int]:
    return Api(node.api_port).get(f"/nodes/{node_name(node)}/metrics").data  # type: ignore[no-any-return]


def cluster_lines(node: Any) -> list[str]:
    """What a node logged of the cluster: a connection lost, a resynchronisation."""
    return [line for line in node.log().splitlines() if "cluster:" in line]


def test_an_overloaded_receiving_node_slows_its_senders_and_loses_nothing_acknowledged(
    make_cluster, clients, uid, tmp_path
) -> None:
    """What a user checks: every QoS 1 message node 1 acknowledged reaches the slow
    subscriber on node 2 (none pushed out of its queue), node 2's stream in Redis and its
    memory stay bounded, its pub/sub connection is never closed (no resynchronisation),
    the QoS 0 messages it could not deliver are counted, not lost silently, and a local
    client on node 2 is served all along."""
    redis, (n1, n2) = make_cluster(2, "--max-mqueue-len", str(MQUEUE))
    q1, q0 = f"{uid}/q1", f"{uid}/q0"
    got: list[bytes] = []

    def slow_receive(c: Any, u: Any, msg: Any) -> None:
        time.sleep(SLOW)  # paho acknowledges once this returns: a slow QoS 1 subscriber
        got.append(msg.payload)

    slow = TestClient(f"{uid}-slow", protocol=V5)
    slow.connect(n2.port)
    clients.append(slow)
    slow.subscribe(q1, 1)
    slow.c.on_message = slow_receive
    stuck = []  # subscribers that never read their socket: each QoS 0 message costs node 2
    for i in range(STUCK):
        raw = RawClient(n2.port, 5, timeout=5.0)
        raw.connect(f"{uid}-stuck{i}")
        raw.subscribe(q0, 0)
        stuck.append(raw)
    # Redis closes a pub/sub connection whose output buffer passes this (32 MB by default):
    # a receiving node that leaves its QoS 0 inbox unread would lose it within the run.
    redis.client().config_set("client-output-buffer-limit", "pubsub 4mb 2mb 2")
    publisher = TestClient(f"{uid}-pub", protocol=V5)
    publisher.connect(n1.port)
    clients.append(publisher)
    probe = connect(clients, n1.port, f"{uid}-probe")
    watcher = TestClient(f"{uid}-watch", protocol=V5)
    watcher.connect(n2.port)
    clients.append(watcher)
    watcher.subscribe([(q1, 0), (q0, 0)])
    wait_routed(probe, watcher, q1)
    wait_routed(probe, watcher, q0)
    watcher.unsubscribe([q1, q0])
    local_sub = connect(clients, n2.port, f"{uid}-local-sub")
    local_sub.subscribe(f"{uid}/local", 1)
    local_pub = connect(clients, n2.port, f"{uid}-local-pub")
    time.sleep(0.5)
    got.clear()  # probes
    base_rss = rss_kib(n2.proc.pid)  # type: ignore[union-attr]
    stream = f"ferrymq:inbox:{node_name(n2)}"
    peaks = {"rss": base_rss, "stream": 0}
    local_waits: list[float] = []
    acked: list[bytes] = []
    done = threading.Event()

    def publish_qos1() -> None:
        acks = threading.Semaphore(WINDOW)
        sent: dict[int, bytes] = {}

        def on_publish(c: Any, u: Any, mid: int, rc: Any, props: Any = None) -> None:
            payload = sent.pop(mid, None)
            if payload is not None:
                acked.append(payload)
                acks.release()

        publisher.c.on_publish = on_publish
        i = 0
        while not done.is_set():
            if not acks.acquire(timeout=0.1):
                continue
            payload = b"m%d" % i
            sent[publisher.c.publish(q1, payload, 1).mid] = payload
            i += 1

    def watch() -> None:
        r = redis.client()
        while not done.is_set():
            peaks["rss"] = max(peaks["rss"], rss_kib(n2.proc.pid))  # type: ignore[union-attr]
            peaks["stream"] = max(peaks["stream"], int(r.xlen(stream)))
            time.sleep(0.1)

    def serve_locally() -> None:
        i = 0
        while not done.is_set():
            start = time.monotonic()
            local_pub.publish(f"{uid}/local", b"l%d" % i, 1)
            msg = local_sub.get(timeout=5.0)
            assert msg.payload == b"l%d" % i
            local_waits.append(time.monotonic() - start)
            i += 1
            time.sleep(0.1)

    lines = tmp_path / "qos0.txt"
    lines.write_text("".join(f"qos0 message {i:08d} {'x' * 64}\n" for i in range(QOS0_LINES)))
    threads = [threading.Thread(target=t) for t in (publish_qos1, watch, serve_locally)]
    for t in threads:
        t.start()
    started = time.monotonic()
    with lines.open("rb") as source:
        flood = subprocess.run(
            ["mosquitto_pub", "-h", "127.0.0.1", "-p", str(n1.port), "-t", q0, "-l"],
            stdin=source, check=False, timeout=RUN + 20,
        )  # fmt: skip
    time.sleep(max(0.0, RUN - (time.monotonic() - started)))
    done.set()
    for t in threads:
        t.join(10)
    for raw in stuck:
        raw.close()
    assert flood.returncode == 0
    # Every acknowledged QoS 1 message reaches the slow subscriber, once it catches up.
    wanted = set(acked)
    assert len(wanted) > 1000, f"only {len(wanted)} QoS 1 messages acknowledged in {RUN} s"
    wait_until(lambda: wanted <= set(got), timeout=20.0)
    missing = wanted - set(got)
    assert not missing, f"{len(missing)} of {len(wanted)} acknowledged messages never arrived"
    # Node 1 was held back at node 2's stream bound: the backlog stayed in Redis, bounded.
    assert peaks["stream"] <= 2 * INBOX_HIGH, peaks
    assert (peaks["rss"] - base_rss) < 60 * 1024, peaks

    # Nothing forwarded went unaccounted: dispatched on node 2, or dropped and counted.
    def accounted() -> tuple[int, int, int]:
        m1, m2 = metrics(n1), metrics(n2)
        return (
            m1["cluster.forwarded"],
            m2["cluster.received"],
            m2["cluster.dropped.queue_full"],
        )

    wait_until(lambda: (lambda f, r, d: f == r + d)(*accounted()), timeout=10.0)
    forwarded, received, dropped = accounted()
    # A string, which pytest prints whole (a tuple's repr it cuts short).
    assert forwarded == received + dropped, "\n".join(
        [
            f"forwarded {forwarded}, received {received}, dropped {dropped}",
            "node 1:", *cluster_lines(n1), "node 2:", *cluster_lines(n2),
            f"node 2: {({k: v for k, v in metrics(n2).items() if k.startswith('cluster.')})}",
        ]
    )  # fmt: skip
    m2 = metrics(n2)
    assert m2["delivery.dropped.queue_full"] + m2["cluster.dropped.queue_full"] > 0
    # Node 2 never lost its pub/sub connection, and served its local client throughout.
    log = n2.log()
    assert "unreachable" not in log and "Redis is back" not in log
    assert len(local_waits) >= RUN * 5, local_waits
    assert max(local_waits) < 2.0, max(local_waits)
