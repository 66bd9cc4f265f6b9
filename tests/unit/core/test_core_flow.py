"""Back-pressure in memory: a subscriber whose socket is backed up, and its publishers.

A real Broker and Clients on the running event loop, over transports that only
collect what is written and record whether reading is paused. The broker counts
as short of CPU (the one reason to hold publishers) when a test says so.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from ferrymq.config import Settings
from ferrymq.core.broker import Broker
from ferrymq.core.client import Client
from ferrymq.core.flow import FEW_READY, INPUT_BACKLOG
from ferrymq.mqtt.codec import Decoder, encode
from ferrymq.mqtt.packets import Connect, Puback, Publish, Subscribe, SubscriptionOptions
from memory import FakeTransport


class Peer:
    def __init__(self, broker: Broker, client_id: str) -> None:
        self.wire = FakeTransport()
        self.client = Client(broker, self.wire)
        self.decoder = Decoder(server=False)
        self.seen = 0
        self.send(Connect(client_id))

    def send(self, packet: Any) -> None:
        self.client.data_received(encode(packet, 4))

    def publishes(self) -> list[Publish]:
        """The PUBLISH packets written to this peer since the last call."""
        self.client.broker.flow.flush()
        new = bytes(self.wire.data[self.seen :])
        self.seen = len(self.wire.data)
        return [p for p in self.decoder.feed(new) if isinstance(p, Publish)]


@pytest.fixture
async def broker() -> AsyncIterator[Broker]:
    b = Broker(Settings(sys_interval=0, max_mqueue_len=8), None, asyncio.get_running_loop())
    yield b
    b.shutdown()


def subscriber(broker: Broker, qos: int) -> Peer:
    peer = Peer(broker, "sub")
    peer.send(Subscribe(1, [SubscriptionOptions("f/#", qos)]))
    peer.publishes()
    return peer


def held(broker: Broker) -> tuple[Peer, Peer]:
    """A saturated broker, a paused QoS 0 subscriber and a publisher that just sent it "x"."""
    broker.flow.hold_saturated()
    sub = subscriber(broker, 0)
    pub = Peer(broker, "pub")
    sub.client.pause_writing()
    pub.send(Publish("f/a", b"x"))
    return sub, pub


async def test_a_paused_subscriber_queues_drops_its_oldest_and_drains(broker: Broker) -> None:
    sub = subscriber(broker, 0)
    pub = Peer(broker, "pub")
    sub.client.pause_writing()
    for i in range(12):
        pub.send(Publish("f/a", b"%d" % i))
    assert sub.publishes() == []
    session = broker.sessions["sub"]
    assert session.mqueue_len() == 8 and session.dropped == 4
    assert broker.metrics["delivery.dropped.queue_full"] == 4
    assert pub.wire.reading  # the broker has CPU to spare: nobody is held up
    sub.client.resume_writing()
    assert [p.payload for p in sub.publishes()] == [b"%d" % i for i in range(4, 12)]
    assert not session.queue


async def test_saturated_broker_holds_the_publisher_until_the_queue_drains(broker: Broker) -> None:
    sub, pub = held(broker)
    assert not pub.wire.reading and pub.client in broker.flow.paused
    assert sub.client.blocked == [pub.client]
    sub.client.resume_writing()
    assert pub.wire.reading and not broker.flow.paused and not sub.client.blocked
    assert [p.payload for p in sub.publishes()] == [b"x"]


async def test_acknowledgements_release_the_publishers_of_a_backed_up_queue(broker: Broker) -> None:
    broker.flow.hold_saturated()
    broker.settings.max_inflight = 1
    sub = subscriber(broker, 1)
    pub = Peer(broker, "pub")
    for i in range(5):  # one inflight, the rest queue up past queue_high (4 of 8)
        pub.send(Publish("f/a", b"%d" % i, 1, packet_id=i + 1))
    assert not pub.wire.reading
    got = []
    while len(got) < 5:
        (p,) = sub.publishes()
        got.append(p.payload)
        sub.send(Puback(p.packet_id))
        assert pub.wire.reading == (broker.sessions["sub"].mqueue_len() <= broker.flow.queue_low)
    assert got == [b"%d" % i for i in range(5)] and pub.wire.reading


async def test_a_publisher_is_held_at_most_max_pause(broker: Broker) -> None:
    sub, pub = held(broker)
    assert not pub.wire.reading
    broker.flow.tick(time.monotonic() + 1.0)
    assert pub.wire.reading and sub.client.slow
    pub.send(Publish("f/a", b"y"))  # a slow subscriber holds nobody up any more
    assert pub.wire.reading


async def test_a_closing_publisher_leaves_no_pause_behind(broker: Broker) -> None:
    sub, pub = held(broker)
    pub.client.connection_lost(None)
    assert not broker.flow.paused and not sub.client.blocked


def one_read(count: int) -> bytes:
    """``count`` QoS 0 PUBLISHes to ``f/a`` as the bytes of one read."""
    return b"".join(encode(Publish("f/a", b"%d" % i), 4) for i in range(count))


def held_read(broker: Broker) -> tuple[Peer, Peer]:
    """A saturated broker, a paused QoS 0 subscriber and a publisher whose one read brought
    20 messages, more than the subscriber's queue (8) holds."""
    broker.flow.hold_saturated()
    sub = subscriber(broker, 0)
    pub = Peer(broker, "pub")
    sub.client.pause_writing()
    pub.client.data_received(one_read(20))
    assert not pub.wire.reading
    return sub, pub


async def test_the_rest_of_a_read_waits_for_a_backed_up_subscriber(broker: Broker) -> None:
    sub, pub = held_read(broker)
    session = broker.sessions["sub"]
    # Routed until its queue (8) is half full, the rest not yet: nothing dropped.
    assert session.mqueue_len() == 4 and session.dropped == 0
    sub.client.resume_writing()
    got = [p.payload for p in sub.publishes()]
    for _ in range(20):
        if len(got) == 20:
            break
        await asyncio.sleep(0)  # the held packets are routed from the event loop
        got += [p.payload for p in sub.publishes()]
    assert got == [b"%d" % i for i in range(20)]
    assert session.dropped == 0 and broker.metrics["delivery.dropped"] == 0
    assert pub.wire.reading and not broker.flow.paused


async def test_a_subscriber_that_stays_backed_up_holds_the_rest_of_a_read_at_most_max_pause(
    broker: Broker,
) -> None:
    sub, pub = held_read(broker)
    broker.flow.tick(time.monotonic() + 1.0)  # it never drains: slow, it holds nobody up
    for _ in range(20):
        if pub.wire.reading:
            break
        await asyncio.sleep(0)
    session = broker.sessions["sub"]
    assert pub.wire.reading and sub.client.slow
    assert session.mqueue_len() == 8 and session.dropped == 12  # its own queue, its own loss


def busy_for(broker: Broker, seconds: float) -> None:
    """The load probe finds that the broker used all of its CPU for the last ``seconds``."""
    now, cpu = time.monotonic(), time.process_time()
    broker.flow.cpu_mark = (now - seconds, cpu - seconds)
    broker.flow.probe_load()


async def test_a_cpu_bound_broker_lets_a_publisher_one_queued_window_ahead() -> None:
    """While the broker's own CPU is the limit, one inflight window queued beyond the
    one in flight is all a publisher gets ahead of a subscriber; a longer queue would
    only add waiting. Otherwise half the queue limit absorbs a subscriber's short stall."""
    settings = Settings(sys_interval=0, max_inflight=4)  # max_mqueue_len stays 1000
    broker = Broker(settings, None, asyncio.get_running_loop())
    try:
        assert (broker.flow.queue_high, broker.flow.queue_low) == (500, 250)
        busy_for(broker, 0.1)  # a burst, as after a stall: saturated, not CPU-bound
        assert broker.flow.saturated()
        assert (broker.flow.queue_high, broker.flow.queue_low) == (500, 250)
        busy_for(broker, 0.6)
        assert (broker.flow.queue_high, broker.flow.queue_low) == (4, 2)
        broker.flow.hold_saturated()
        sub = subscriber(broker, 1)
        pub = Peer(broker, "pub")
        for i in range(7):  # 4 inflight, 3 queued
            pub.send(Publish("f/a", b"%d" % i, 1, packet_id=i + 1))
        assert pub.wire.reading
        pub.send(Publish("f/a", b"7", 1, packet_id=8))  # a whole window queued
        assert not pub.wire.reading
        inflight = sub.publishes()
        assert len(inflight) == 4
        sub.send(Puback(inflight[0].packet_id))  # 3 queued: still more than half a window
        assert not pub.wire.reading
        sub.send(Puback(inflight[1].packet_id))  # 2 queued
        assert pub.wire.reading and not broker.flow.paused
    finally:
        broker.shutdown()


async def test_writes_leave_with_their_read_until_the_broker_is_short_of_cpu(
    broker: Broker,
) -> None:
    """With CPU to spare a read's delivery and its PUBACK are written before the next
    read is handled; once the load probe finds the broker busy they wait for the one
    flush at the end of the loop iteration."""
    sub = subscriber(broker, 1)
    pub = Peer(broker, "pub")
    pub.wire.data = b""
    sent = len(sub.wire.data)
    pub.send(Publish("f/a", b"now", 1, packet_id=1))
    assert len(sub.wire.data) > sent and pub.wire.data  # no flush called: written at once
    busy_for(broker, 0.1)
    assert not broker.flow.write_at_once
    sent, acked = len(sub.wire.data), len(pub.wire.data)
    pub.send(Publish("f/a", b"later", 1, packet_id=2))
    assert (len(sub.wire.data), len(pub.wire.data)) == (sent, acked)
    await asyncio.sleep(0)  # the end-of-iteration flush
    assert len(sub.wire.data) > sent and len(pub.wire.data) > acked
    assert [p.payload for p in sub.publishes()][-2:] == [b"now", b"later"]
    broker.flow.cpu_mark = (time.monotonic() - 0.05, time.process_time())  # idle since
    broker.flow.probe_load()
    assert not broker.flow.write_at_once  # busy counts for _HOLD: a lull is no recovery
    broker.flow.polled(1)
    assert not broker.flow.write_at_once  # a short poll does not overrule the probe


async def test_a_poll_with_many_sockets_ready_batches_the_writes(broker: Broker) -> None:
    """The CPU probe cannot see a broker starved by other programs; a poll that finds
    more than FEW_READY sockets ready shows input waiting, so writes wait for the
    end-of-iteration flush until a poll finds few again."""
    sub = subscriber(broker, 0)
    pub = Peer(broker, "pub")
    broker.flow.polled(FEW_READY + 1)
    sent = len(sub.wire.data)
    pub.send(Publish("f/a", b"batched"))
    assert len(sub.wire.data) == sent
    await asyncio.sleep(0)
    assert [p.payload for p in sub.publishes()] == [b"batched"]
    broker.flow.polled(FEW_READY)
    sent = len(sub.wire.data)
    pub.send(Publish("f/a", b"at once"))
    assert len(sub.wire.data) > sent  # no flush called
    assert [p.payload for p in sub.publishes()] == [b"at once"]


async def test_a_read_whose_writes_leave_with_it_schedules_no_flush(
    broker: Broker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While writes leave with their read, the read flushes what it wrote, so no
    end-of-iteration callback is scheduled (at a moderate rate each read is an
    iteration of its own); batched writes still get theirs."""
    sub = subscriber(broker, 1)
    pub = Peer(broker, "pub")
    loop = asyncio.get_running_loop()
    scheduled: list[Any] = []
    call_soon = loop.call_soon

    def recording(callback: Any, *args: Any, **kwargs: Any) -> asyncio.Handle:
        scheduled.append(callback)
        return call_soon(callback, *args, **kwargs)

    monkeypatch.setattr(loop, "call_soon", recording)
    sent, acked = len(sub.wire.data), len(pub.wire.data)
    pub.send(Publish("f/a", b"now", 1, packet_id=1))
    assert len(sub.wire.data) > sent and len(pub.wire.data) > acked
    assert broker.flow.flush not in scheduled
    broker.flow.polled(FEW_READY + 1)
    sent = len(sub.wire.data)
    pub.send(Publish("f/a", b"batched", 1, packet_id=2))
    assert len(sub.wire.data) == sent
    assert broker.flow.flush in scheduled
    await asyncio.sleep(0)
    assert [p.payload for p in sub.publishes()][-2:] == [b"now", b"batched"]


class SocketTransport(FakeTransport):
    """A FakeTransport that shows a real (unconnected) TCP socket as its ``socket``."""

    def __init__(self) -> None:
        super().__init__()
        self.sock = socket.socket()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self.sock if name == "socket" else super().get_extra_info(name, default)


def _rcvbuf(sock: socket.socket) -> int:
    return sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)


@pytest.mark.parametrize("count", [INPUT_BACKLOG - 1, INPUT_BACKLOG])
async def test_a_read_of_many_packets_pins_the_receive_buffer(broker: Broker, count: int) -> None:
    """A read that brings INPUT_BACKLOG packets or more shows the broker fell behind this
    connection: its receive buffer is pinned so that the backlog waits at the publisher."""
    wire = SocketTransport()
    client = Client(broker, wire)
    client.data_received(encode(Connect("pub"), 4))
    wire.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 512 * 1024)  # as if autotuned
    grown = _rcvbuf(wire.sock)
    with socket.socket() as pinned:
        pinned.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        expected = _rcvbuf(pinned)  # in the kernel's unit (Linux doubles what is set)
    assert expected < grown
    client.data_received(encode(Publish("f/a", b"x"), 4) * count)
    assert broker.metrics["messages.received"] == count
    assert _rcvbuf(wire.sock) == (expected if count >= INPUT_BACKLOG else grown)
    wire.sock.close()


class Elsewhere:
    """A target short of another process' CPU (cluster mode: another node behind)."""

    def __init__(self) -> None:
        self.blocked: list[Client] | tuple[()] = ()
        self.slow = False


async def test_spare_cpu_ends_local_pauses_but_not_one_for_a_target_elsewhere(
    broker: Broker,
) -> None:
    """An idle probe resumes the publishers of a backed-up local subscriber; one paused
    for a target elsewhere waits for its owner's release (or ``tick``'s bound), with the
    rest of its read held."""
    far, near = Elsewhere(), Elsewhere()
    waits, resumes = Peer(broker, "waits"), Peer(broker, "resumes")
    broker.flow.block(waits.client, far, elsewhere=True)  # type: ignore[arg-type]
    broker.flow.block(resumes.client, near)  # type: ignore[arg-type]
    assert not waits.wire.reading and not resumes.wire.reading
    assert waits.client.conn.on_hold and not resumes.client.conn.on_hold
    broker.flow._busy_until = 0.0
    broker.flow.cpu_mark = (time.monotonic() - 0.05, time.process_time())  # idle since
    broker.flow.probe_load()
    assert resumes.wire.reading
    assert not waits.wire.reading
    broker.flow.release_publishers(far)  # type: ignore[arg-type]
    await asyncio.sleep(0)
    assert waits.wire.reading and not broker.flow.paused
