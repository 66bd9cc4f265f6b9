"""Slow-consumer isolation: a subscriber that cannot keep up fills its own bounded queue and
drops (counted against it); it never slows the publishers, so other subscribers of the same
topic see no extra latency and no stall."""

from __future__ import annotations

import itertools
import socket
import threading
import time
from typing import Any

from api_http import Api
from ferrymq.mqtt.codec import Decoder, encode
from ferrymq.mqtt.packets import (
    Connect,
    Puback,
    Publish,
    Subscribe,
    SubscriptionOptions,
)
from ferrymq.mqtt.wire import encode_varint
from loadgen_cli import bench, finish, start_subscribers
from rawclient import RawClient

PUBLISHERS = 5
SUBSCRIBERS = 2
INTERVAL_MS = 2  # 500 msg/s per publisher
SECONDS = 6
PAYLOAD = 512
# 512-byte payloads: 1.3 MB/s for each subscriber, so a slow one fills the socket buffers
# (up to 4 MiB on Linux) within the run and its queue has to take the rest. The load stays
# well inside what the Python load generators and the broker get from a shared 2-core machine:
# a broker starved of CPU by its own test clients is overloaded, which is not what this checks.


class SlowSubscriber:
    """A subscriber with a tiny receive buffer that reads 2 KiB every 50 ms (about 40 KB/s,
    under a fiftieth of what the topic carries) and acknowledges what it reads."""

    def __init__(self, port: int, client_id: str, topic: str, qos: int) -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self.sock.connect(("127.0.0.1", port))
        self.sock.settimeout(5)
        self.sock.sendall(encode(Connect(client_id, keepalive=0), 4))
        self.sock.sendall(encode(Subscribe(1, [SubscriptionOptions(topic, qos)]), 4))
        self.decoder = Decoder(server=False, version=4)
        self.received = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.wait(0.05):
            try:
                data = self.sock.recv(2048)
            except OSError:
                return
            if not data:
                return
            acks = b""
            for packet in self.decoder.feed(data):
                if isinstance(packet, Publish):
                    self.received += 1
                    if packet.qos == 1:
                        acks += encode(Puback(packet.packet_id), 4)
            if acks:
                self.sock.sendall(acks)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(2)
        self.sock.close()


class GapMonitor:
    """A normal QoS 0 subscriber in this process: the longest silence between two messages.

    Every message on the topic has the same size, so it counts bytes instead of decoding:
    this subscriber has to keep up with 1.3 MB/s from a test process.
    """

    def __init__(self, port: int, client_id: str, topic: str) -> None:
        self.client = RawClient(port, 4, timeout=5)
        self.client.connect(client_id)
        self.client.subscribe(topic, 0)
        body = 2 + len(topic.encode()) + PAYLOAD
        self.packet_size = 1 + len(encode_varint(body)) + body
        self.bytes = 0
        self.arrivals: list[float] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    @property
    def seen(self) -> int:
        return self.bytes // self.packet_size

    def _run(self) -> None:
        sock = self.client.sock
        sock.settimeout(0.2)
        while not self.stop.is_set():
            try:
                data = sock.recv(262144)
            except TimeoutError:
                continue
            except OSError:
                return
            if not data:
                return
            self.bytes += len(data)
            self.arrivals.append(time.monotonic())

    def longest_gap(self) -> float:
        a = self.arrivals
        return max((b - x for x, b in itertools.pairwise(a)), default=float("inf"))

    def close(self) -> None:
        self.stop.set()
        self.thread.join(2)
        self.client.close()


def _run_traffic(port: int, topic: str) -> tuple[dict[str, Any], dict[str, Any], float, int]:
    """Five paced QoS 1 publishers, two normal QoS 1 subscribers (bench) and a gap monitor."""
    subs = start_subscribers(
        "-p", str(port), "-c", str(SUBSCRIBERS), "-t", topic, "-q", "1", "-w", "1",
        "-d", str(SECONDS + 6),
    )  # fmt: skip
    monitor = GapMonitor(port, f"gap-{topic.replace('/', '-')}", topic)
    try:
        code, pub, err = bench(
            "pub", "-p", str(port), "-c", str(PUBLISHERS), "-t", topic, "-q", "1",
            "-I", str(INTERVAL_MS), "-s", str(PAYLOAD), "-w", "1", "-d", str(SECONDS),
            timeout=SECONDS + 30,
        )  # fmt: skip
        assert code == 0, err
        time.sleep(1)
    finally:
        monitor.close()
    _, sub = finish(subs)
    return pub, sub, monitor.longest_gap(), monitor.seen


def test_slow_subscribers_cost_only_themselves(make_broker, uid):
    b = make_broker()
    api = Api(b.api_port)

    base_pub, base_sub, base_gap, base_seen = _run_traffic(b.port, f"iso/{uid}/base")
    assert base_sub["received"] == SUBSCRIBERS * base_pub["acked"] > 0
    assert base_seen == base_pub["acked"] and base_gap < 1.0

    topic = f"iso/{uid}/slow"
    slow = [SlowSubscriber(b.port, f"slow{q}-{uid}", topic, q) for q in (0, 1)]
    try:
        pub, sub, gap, seen = _run_traffic(b.port, topic)
        metrics = api.get("/metrics").data[0]["metrics"]
        dropped = {
            f"qos{q}": api.get(f"/clients/slow{q}-{uid}").data[0]["mqueue_dropped"] for q in (0, 1)
        }
    finally:
        for s in slow:
            s.close()

    base_p99, p99 = base_sub["lat_ms"]["p99"], sub["lat_ms"]["p99"]
    report = (
        f"p99 {base_p99:.1f} -> {p99:.1f} ms, max {sub['lat_ms']['max']:.1f} ms, "
        f"gap {base_gap:.3f} -> {gap:.3f} s, sent {base_pub['acked']} -> {pub['acked']}, "
        f"slow drops {dropped}"
    )
    print(report)  # shown with pytest -rP
    # The normal subscribers: everything, on time, without a stall.
    assert sub["received"] == SUBSCRIBERS * pub["acked"], report
    assert seen == pub["acked"], report
    assert pub["acked"] >= 0.7 * base_pub["acked"], report  # the publishers were not slowed
    assert p99 <= 2 * base_p99 + 50, report
    assert gap < 1.0, report
    # The slow ones paid for it themselves, and it shows against them.
    assert all(n > 0 for n in dropped.values()), report
    assert metrics["delivery.dropped.queue_full"] >= sum(dropped.values()), report
    assert all(s.received < pub["acked"] for s in slow), report
