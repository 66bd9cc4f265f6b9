"""Sessions in memory: resume with queued messages, takeover, expiry, kick, wills, the store.

A real Broker and Clients on the running event loop, over transports that only
collect what is written; what a client received is decoded with the client-side
codec. Timers are brought forward by moving the loop's clock, so nothing sleeps.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from ferrymq.config import Settings
from ferrymq.core.broker import Broker
from ferrymq.core.client import Client
from ferrymq.core.router import Router
from ferrymq.mqtt import reason_codes as rc
from ferrymq.mqtt.codec import Decoder, encode
from ferrymq.mqtt.packets import (
    MQTT5,
    Connack,
    Connect,
    Disconnect,
    Puback,
    Publish,
    Subscribe,
    SubscriptionOptions,
    Will,
)
from ferrymq.storage.sqlite import SqliteStore
from memory import FakeTransport


class Peer:
    """One MQTT client connected to the broker core, speaking packets."""

    def __init__(self, broker: Broker, client_id: str, version: int = 4, **connect: Any) -> None:
        self.version = version
        self.wire = FakeTransport()
        self.client = Client(broker, self.wire)
        self.decoder = Decoder(server=False, version=version)
        self.seen = 0
        self.send(Connect(client_id, protocol_version=version, **connect))

    def send(self, packet: Any) -> None:
        self.client.data_received(encode(packet, self.version))

    def received(self) -> list[Any]:
        """The packets written to this peer since the last call."""
        self.client.broker.flow.flush()
        new = bytes(self.wire.data[self.seen :])
        self.seen = len(self.wire.data)
        return self.decoder.feed(new)

    def drop(self) -> None:
        """The network connection is lost (no DISCONNECT)."""
        self.client.connection_lost(None)


@pytest.fixture
async def broker() -> AsyncIterator[Broker]:
    b = Broker(Settings(sys_interval=0), None, asyncio.get_running_loop())
    yield b
    b.shutdown()


async def later(seconds: float, monkeypatch: pytest.MonkeyPatch) -> None:
    """Let ``seconds`` pass for the loop's timers at once, and run what became due."""
    loop = asyncio.get_running_loop()
    now = loop.time()
    monkeypatch.setattr(loop, "time", lambda: now + seconds)
    for _ in range(3):
        await asyncio.sleep(0)


def publishes(packets: list[Any]) -> list[bytes]:
    return [p.payload for p in packets if isinstance(p, Publish)]


async def test_resume_delivers_the_queued_qos1_messages_in_order(broker: Broker) -> None:
    sub = Peer(broker, "s", clean_start=False)
    sub.send(Subscribe(1, [SubscriptionOptions("q/t", 1)]))
    sub.send(Disconnect())
    pub = Peer(broker, "p")
    for i in range(3):
        pub.send(Publish("q/t", b"m%d" % i, 1, packet_id=i + 1))
    assert [type(p) for p in pub.received()] == [Connack, Puback, Puback, Puback]
    assert broker.sessions["s"].mqueue_len() == 3

    again = Peer(broker, "s", clean_start=False)
    packets = again.received()
    assert isinstance(packets[0], Connack) and packets[0].session_present
    assert publishes(packets) == [b"m0", b"m1", b"m2"]
    session = broker.sessions["s"]
    assert session.client is again.client and not session.queue
    for p in packets[1:]:
        again.send(Puback(p.packet_id))
    assert not session.inflight
    assert broker.metrics["session.resumed"] == 1


async def test_unacknowledged_messages_are_resent_with_dup(broker: Broker) -> None:
    sub = Peer(broker, "s", clean_start=False)
    sub.send(Subscribe(1, [SubscriptionOptions("t", 1)]))
    Peer(broker, "p").send(Publish("t", b"once", 1, packet_id=1))
    first = [p for p in sub.received() if isinstance(p, Publish)]
    assert len(first) == 1 and not first[0].dup
    sub.drop()
    again = Peer(broker, "s", clean_start=False)
    resent = [p for p in again.received() if isinstance(p, Publish)]
    pid = first[0].packet_id
    assert [(p.payload, p.packet_id, p.dup) for p in resent] == [(b"once", pid, True)]


async def test_takeover_sends_the_old_connection_disconnect_0x8e(broker: Broker) -> None:
    old = Peer(broker, "x", MQTT5, clean_start=False, properties={"session_expiry_interval": 60})
    old.send(Subscribe(1, [SubscriptionOptions("t", 1)]))
    old.received()
    new = Peer(broker, "x", MQTT5, clean_start=False, properties={"session_expiry_interval": 60})
    gone = old.received()
    assert [type(p) for p in gone] == [Disconnect]
    assert gone[0].reason_code == rc.SESSION_TAKEN_OVER
    assert old.wire.closed and old.client.closing
    connack = new.received()[0]
    assert isinstance(connack, Connack) and connack.session_present
    assert broker.clients["x"] is new.client and broker.online_count() == 1
    assert "t" in broker.sessions["x"].subscriptions
    assert broker.metrics["session.takeovered"] == 1


async def test_clean_start_discards_the_session(broker: Broker) -> None:
    first = Peer(broker, "c", clean_start=False)
    first.send(Subscribe(1, [SubscriptionOptions("t", 1)]))
    first.send(Disconnect())
    fresh = Peer(broker, "c", clean_start=True)
    connack = fresh.received()[0]
    assert isinstance(connack, Connack) and not connack.session_present
    assert not broker.sessions["c"].subscriptions
    assert broker.router.match("t") == ([], [])
    assert broker.metrics["session.discarded"] == 1


async def test_offline_session_expires_after_its_interval(
    broker: Broker, monkeypatch: pytest.MonkeyPatch
) -> None:
    peer = Peer(broker, "e", MQTT5, clean_start=False, properties={"session_expiry_interval": 5})
    peer.send(Subscribe(1, [SubscriptionOptions("t", 1)]))
    peer.send(Disconnect())
    await later(4.9, monkeypatch)
    assert "e" in broker.sessions
    await later(5.0, monkeypatch)
    assert "e" not in broker.sessions
    assert broker.router.match("t") == ([], [])
    assert broker.metrics["session.terminated"] == 1


async def test_a_resumed_session_does_not_expire(
    broker: Broker, monkeypatch: pytest.MonkeyPatch
) -> None:
    props = {"session_expiry_interval": 5}
    Peer(broker, "e", MQTT5, clean_start=False, properties=props).send(Disconnect())
    Peer(broker, "e", MQTT5, clean_start=False, properties=props)
    await later(6, monkeypatch)
    assert broker.sessions["e"].client is not None


async def test_disconnect_with_expiry_zero_ends_the_session(broker: Broker) -> None:
    peer = Peer(broker, "z", MQTT5, clean_start=False, properties={"session_expiry_interval": 60})
    peer.send(Disconnect(properties={"session_expiry_interval": 0}))
    assert "z" not in broker.sessions


async def test_kick_closes_with_0x98_and_ends_the_session(broker: Broker) -> None:
    peer = Peer(broker, "k", MQTT5, clean_start=False, properties={"session_expiry_interval": 60})
    peer.received()
    assert broker.kick("k")
    packets = peer.received()
    assert [type(p) for p in packets] == [Disconnect]
    assert packets[0].reason_code == rc.ADMINISTRATIVE_ACTION
    assert "k" not in broker.sessions and "k" not in broker.clients
    assert not broker.kick("k")


@contextlib.contextmanager
def stored_broker(path: Path) -> Iterator[Broker]:
    """A broker over the SQLite file ``path`` (acknowledgements at once), shut down after."""
    store = SqliteStore(path)
    store.open()
    try:
        settings = Settings(sys_interval=0, durability="batched")
        broker = Broker(settings, store, asyncio.get_running_loop())
        yield broker
        broker.shutdown()
    finally:
        store.close()


async def test_persistent_session_and_its_messages_survive_a_restart(tmp_path: Path) -> None:
    db = tmp_path / "ferrymq.db"
    with stored_broker(db) as broker:
        sub = Peer(broker, "s", clean_start=False)
        sub.send(Subscribe(1, [SubscriptionOptions("q/+", 1)]))
        sub.send(Disconnect())
        Peer(broker, "p").send(Publish("q/a", b"kept", 1, packet_id=1))
    with stored_broker(db) as broker:
        broker.load_state()
        assert broker.restoring and "s" in broker.sessions
        back = Peer(broker, "s", clean_start=False)
        assert back.received() == []  # the CONNECT waits for the messages
        await broker.finish_restore()
        packets = back.received()
        assert isinstance(packets[0], Connack) and packets[0].session_present
        assert publishes(packets) == [b"kept"]
        assert not broker.restoring


# --- wills ------------------------------------------------------------------------


def will_peer(broker: Broker, delay: int, expiry: int = 60, client_id: str = "w") -> Peer:
    will = Will("last/w", b"bye", 1, properties={"will_delay_interval": delay})
    props = {"session_expiry_interval": expiry}
    return Peer(broker, client_id, MQTT5, clean_start=False, will=will, properties=props)


def watcher(broker: Broker) -> Peer:
    peer = Peer(broker, "watch")
    peer.send(Subscribe(1, [SubscriptionOptions("last/#", 1)]))
    peer.received()
    return peer


async def test_will_waits_for_its_delay(broker: Broker, monkeypatch: pytest.MonkeyPatch) -> None:
    watch = watcher(broker)
    will_peer(broker, delay=2).drop()
    await later(1.9, monkeypatch)
    assert publishes(watch.received()) == []
    assert broker.sessions["w"].will_due is not None  # stored with the session
    await later(2.0, monkeypatch)
    assert publishes(watch.received()) == [b"bye"]
    assert broker.sessions["w"].will is None


async def test_resuming_within_the_will_delay_cancels_the_will(
    broker: Broker, monkeypatch: pytest.MonkeyPatch
) -> None:
    watch = watcher(broker)
    will_peer(broker, delay=2).drop()
    Peer(broker, "w", MQTT5, clean_start=False, properties={"session_expiry_interval": 60})
    await later(3, monkeypatch)
    assert publishes(watch.received()) == []


async def test_clean_start_within_the_will_delay_publishes_the_will(broker: Broker) -> None:
    watch = watcher(broker)
    will_peer(broker, delay=30).drop()
    Peer(broker, "w", MQTT5, clean_start=True)
    assert publishes(watch.received()) == [b"bye"]


async def test_will_delay_is_capped_by_the_session_expiry(
    broker: Broker, monkeypatch: pytest.MonkeyPatch
) -> None:
    watch = watcher(broker)
    will_peer(broker, delay=30, expiry=1).drop()
    await later(1, monkeypatch)
    assert publishes(watch.received()) == [b"bye"]
    assert "w" not in broker.sessions


async def test_will_follows_only_an_abnormal_end(broker: Broker) -> None:
    watch = watcher(broker)
    will_peer(broker, delay=0, client_id="normal").send(Disconnect())
    assert publishes(watch.received()) == []
    will_peer(broker, delay=0, client_id="asks").send(Disconnect(rc.DISCONNECT_WITH_WILL))
    assert publishes(watch.received()) == [b"bye"]
    will_peer(broker, delay=0, client_id="taken")
    watch.received()
    Peer(broker, "taken", MQTT5, clean_start=False)  # a takeover: the old connection's will
    assert publishes(watch.received()) == [b"bye"]


async def test_a_pending_will_fires_after_a_restart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = tmp_path / "ferrymq.db"
    with stored_broker(db) as broker:
        will_peer(broker, delay=30).drop()
        assert broker.sessions["w"].will_due is not None
    with stored_broker(db) as broker:
        broker.load_state()
        await broker.finish_restore()
        watch = watcher(broker)
        await later(29, monkeypatch)
        assert publishes(watch.received()) == []
        await later(31, monkeypatch)
        assert publishes(watch.received()) == [b"bye"]


async def test_the_broker_routes_through_the_route_table_it_is_given() -> None:
    class Counting(Router):
        """A route table seen from outside: every lookup counted."""

        lookups = 0

        def targets(self, topic: str) -> Any:
            Counting.lookups += 1
            return super().targets(topic)

    table = Counting()
    broker = Broker(Settings(sys_interval=0), None, asyncio.get_running_loop(), router=table)
    sub = Peer(broker, "s")
    sub.send(Subscribe(1, [SubscriptionOptions("t", 0)]))
    Peer(broker, "p").send(Publish("t", b"via the table"))
    assert broker.router is table and Counting.lookups == 1
    assert publishes(sub.received()) == [b"via the table"]
    broker.shutdown()
