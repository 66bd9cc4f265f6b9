"""The per-session queue: a subscriber that does not keep up gets its inflight window and a
bounded queue; beyond that its oldest messages are dropped and counted against it, and the
publisher is acknowledged as usual."""

from __future__ import annotations

import asyncio

from api_http import Api
from clients import V311, TestClient
from ferrymq.config import Settings
from ferrymq.core import flow as flow_module
from ferrymq.core.broker import Broker
from ferrymq.mqtt.packets import Publish
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


class _Conn:
    """What the pause bookkeeping touches of a Client (and of its transport and its
    connection machine, which holds no packets here)."""

    def __init__(self) -> None:
        self.paused_by: set[_Conn] = set()
        self.blocked: list[_Conn] = []
        self.read_paused = self.closing = self.slow = self.on_hold = False
        self.resumed = 0
        self.transport = self.conn = self

    def holding(self) -> bool:
        return False

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        self.resumed += 1


class _Clock:
    def __init__(self) -> None:
        self.wall = 100.0
        self.cpu = 10.0

    def advance(self, wall: float, cpu: float) -> None:
        self.wall += wall
        self.cpu += cpu


def test_only_a_saturated_broker_holds_publishers(monkeypatch):
    """The load probe in memory: CPU share and loop lag decide, and a held publisher is
    read again once the broker has CPU to spare, even if its subscriber is still slow."""
    clock = _Clock()
    monkeypatch.setattr(flow_module.time, "monotonic", lambda: clock.wall)
    monkeypatch.setattr(flow_module.time, "process_time", lambda: clock.cpu)
    loop = asyncio.new_event_loop()
    broker = Broker(Settings(), None, loop)
    flow = broker.flow

    def run(seconds: float, share: float) -> None:
        """Probe every 50 ms, on time, with the process on the CPU ``share`` of the time."""
        for _ in range(round(seconds / 0.05)):
            clock.advance(0.05, 0.05 * share)
            flow.probe_load()

    try:
        flow.cpu_mark = (clock.wall, clock.cpu)
        flow.probe_load()
        run(1.0, 0.4)  # 40% busy, as with a slow subscriber beside normal ones
        assert not flow.saturated()
        publisher, subscriber = _Conn(), _Conn()
        run(0.05, 0.95)
        assert flow.saturated()
        flow.block(publisher, subscriber)
        assert publisher.read_paused and flow.paused == {publisher}
        run(0.5, 0.0)  # paused: the broker idles, but within the hold
        assert flow.saturated() and publisher.read_paused
        run(0.55, 0.0)  # over a second without load: the publisher is read again
        assert not flow.saturated()
        assert not publisher.read_paused and publisher.resumed == 1 and not flow.paused

        clock.advance(0.2, 0.1)  # one long iteration: 150 ms behind the probe
        assert flow.saturated()
        flow.probe_load()
        run(0.2, 0.0)
        assert flow.saturated()  # held a quarter second after the lag
        run(0.1, 0.0)
        assert not flow.saturated()
    finally:
        broker.shutdown()
        loop.close()
