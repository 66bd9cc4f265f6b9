"""Acknowledgements after commit, in memory: a real broker core and SQLite store, a fake
transport, and the store's writer held back so that "not before the commit" is visible."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from ferrymq.config import Settings
from ferrymq.core.broker import Broker
from ferrymq.core.client import Client
from ferrymq.mqtt.codec import Decoder, encode
from ferrymq.mqtt.packets import (
    Connect,
    Puback,
    Pubcomp,
    Publish,
    Pubrec,
    Pubrel,
    Subscribe,
    SubscriptionOptions,
)
from ferrymq.storage.sqlite import SqliteStore


class FakeTransport:
    def __init__(self) -> None:
        self.data = b""

    def write(self, data: bytes) -> None:
        self.data += data

    def is_closing(self) -> bool:
        return False

    def close(self) -> None:
        pass

    def can_write_eof(self) -> bool:
        return False  # as TLS: Client.close then closes without a half-close

    def abort(self) -> None:
        pass

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def get_extra_info(self, name: str) -> Any:
        return ("127.0.0.1", 1) if name == "peername" else None


class Peer:
    """One connection into the broker core."""

    def __init__(self, broker: Broker, client_id: str, clean: bool = True) -> None:
        self.transport = FakeTransport()
        self.client = Client(broker, self.transport)
        self.decoder = Decoder(server=False, version=4)
        self.seen = 0
        self.send(Connect(client_id, clean_start=clean))

    def send(self, packet: Any) -> None:
        self.client.data_received(encode(packet, 4))

    def received(self) -> list[Any]:
        """Packets written since the last call (CONNACK and SUBACK included)."""
        new = self.transport.data[self.seen :]
        self.seen = len(self.transport.data)
        return self.decoder.feed(new)


async def _settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def _until(check: Any, timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.005)


@pytest.fixture
def store(tmp_path: Path) -> Any:
    s = SqliteStore(tmp_path / "ferrymq.db", flush_interval=3600)
    s.open()
    yield s
    s.close()


def _broker(store: SqliteStore, durability: str = "acked") -> Broker:
    return Broker(
        Settings(durability=durability, sys_interval=0), store, asyncio.get_running_loop()
    )


async def test_acks_wait_for_the_commit_and_keep_their_order(store: SqliteStore) -> None:
    broker = _broker(store)
    sub = Peer(broker, "sub", clean=False)
    sub.send(Subscribe(1, [SubscriptionOptions("durable/#", 1)]))
    pub = Peer(broker, "pub")
    await _settle()
    sub.received()
    pub.received()
    with store.atomic:  # the writer cannot take the batch while we hold this
        pub.send(Publish("durable/a", b"1", 1, packet_id=1))  # queued for a persistent session
        pub.send(Publish("nobody/listens", b"2", 1, packet_id=2))  # touches no durable state
        pub.send(Publish("retained/x", b"3", 1, retain=True, packet_id=3))
        await _settle()
        assert pub.received() == []  # nothing acknowledged before the commit
        assert [type(p) for p in sub.received()] == [Publish]  # delivery is not held
    await _until(lambda: pub.transport.data[pub.seen :])
    await _settle()
    acks = pub.received()
    assert [(type(a), a.packet_id) for a in acks] == [(Puback, 1), (Puback, 2), (Puback, 3)]
    with store.atomic:
        pub.send(Publish("nobody/listens", b"4", 1, packet_id=4))
        await _settle()
        # Nothing waits: acknowledged at once, while the writer is still held.
        assert [(type(a), a.packet_id) for a in pub.received()] == [(Puback, 4)]


async def test_qos2_flow_steps_wait_for_the_commit(store: SqliteStore) -> None:
    broker = _broker(store)
    pub = Peer(broker, "pub2", clean=False)  # persistent: its packet ids are durable state
    sub = Peer(broker, "sub2", clean=False)
    sub.send(Subscribe(1, [SubscriptionOptions("q2", 2)]))
    await _settle()
    pub.received()
    sub.received()
    with store.atomic:
        pub.send(Publish("q2", b"x", 2, packet_id=9))
        await _settle()
        assert pub.received() == []  # PUBREC waits
        assert sub.received() == []  # the QoS 2 PUBLISH waits for its packet id too
    await _until(lambda: pub.transport.data[pub.seen :])
    await _settle()
    assert [(type(p), p.packet_id) for p in pub.received()] == [(Pubrec, 9)]
    (delivery,) = sub.received()
    assert isinstance(delivery, Publish) and delivery.qos == 2
    with store.atomic:
        sub.send(Pubrec(delivery.packet_id))
        pub.send(Pubrel(9))
        await _settle()
        assert sub.received() == []  # PUBREL waits for the "PUBREL sent" state
        assert pub.received() == []  # PUBCOMP waits for the packet id's removal
    await _until(lambda: pub.transport.data[pub.seen :] and sub.transport.data[sub.seen :])
    await _settle()
    assert [(type(p), p.packet_id) for p in pub.received()] == [(Pubcomp, 9)]
    assert [(type(p), p.packet_id) for p in sub.received()] == [(Pubrel, delivery.packet_id)]
    assert store.load_awaiting_rel() == {}


async def test_batched_mode_acknowledges_at_once(store: SqliteStore) -> None:
    broker = _broker(store, "batched")
    pub = Peer(broker, "pub3")
    await _settle()
    pub.received()
    with store.atomic:
        pub.send(Publish("retained/y", b"1", 1, retain=True, packet_id=1))
        await _settle()
        assert [(type(a), a.packet_id) for a in pub.received()] == [(Puback, 1)]
