"""The broker in memory: a real core and SQLite store, fake transports, MQTT bytes both ways.

The one place that builds a ``Broker`` and ``Client`` for the unit tests: when the core's
constructors change, only this file follows. Peers speak bytes made by the project's codec
(``encode``) and read the broker's bytes with a client-side ``Decoder(server=False)``, so
tests assert what a real client would see on the wire, on the real asyncio loop.

Writes reach a transport when the broker flushes at the end of a loop iteration (and acks
of durable writes after the store commits): ``Peer.expect`` waits for them, ``settle`` lets
a few iterations pass before asserting that nothing (more) came.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from ferrymq.config import Settings
from ferrymq.core.broker import Broker
from ferrymq.core.client import Client
from ferrymq.mqtt.codec import Decoder, encode
from ferrymq.mqtt.packets import Connack, Connect, Packet
from ferrymq.storage.sqlite import SqliteStore


class FakeTransport:
    """What ``Client`` needs of an asyncio transport; keeps every byte written and whether
    reading is paused (flow control) or the connection closed."""

    def __init__(self) -> None:
        self.data = b""
        self.closed = False
        self.reading = True

    def write(self, data: bytes) -> None:
        self.data += data

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def can_write_eof(self) -> bool:
        return False  # as TLS: Client.close then closes without a half-close

    def write_eof(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 1) if name == "peername" else default


def new_broker(store: SqliteStore | None, **settings: Any) -> Broker:
    """A broker on the running loop, without listeners; ``$SYS`` off unless asked for."""
    settings.setdefault("sys_interval", 0)
    return Broker(Settings(**settings), store, asyncio.get_running_loop())


def open_store(path: Path, **options: Any) -> SqliteStore:
    store = SqliteStore(path, **options)
    store.open()
    return store


@contextlib.asynccontextmanager
async def serving(data_dir: Path, **settings: Any) -> AsyncIterator[Broker]:
    """A broker started as ``server.serve`` starts one (store, restore, timers), no listeners;
    shut down and its store closed on exit."""
    store = open_store(data_dir / "ferrymq.db", flush_interval=0.001)
    broker = new_broker(store, **settings)
    try:
        broker.load_state()
        broker.start()
        await broker.finish_restore()
        yield broker
    finally:
        broker.shutdown()
        store.close()


async def settle() -> None:
    """Let the loop run a few iterations: the end-of-iteration flush and what it triggers."""
    for _ in range(5):
        await asyncio.sleep(0)


async def until(check: Callable[[], Any], timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.002)


class Peer:
    """One client connection into the broker: sends encoded packets, decodes the replies.

    Sends CONNECT at once unless ``connect=False``; ``connect_fields`` go to ``Connect``.
    """

    def __init__(
        self,
        broker: Broker,
        client_id: str,
        clean: bool = True,
        *,
        version: int = 4,
        connect: bool = True,
        **connect_fields: Any,
    ) -> None:
        self.version = version
        self.transport = FakeTransport()
        self.client = Client(broker, self.transport)
        self.decoder = Decoder(server=False, version=version)
        self.seen = 0
        if connect:
            self.send(
                Connect(client_id, protocol_version=version, clean_start=clean, **connect_fields)
            )

    def send(self, packet: Packet) -> None:
        self.client.data_received(encode(packet, self.version))

    def send_bytes(self, data: bytes) -> None:
        self.client.data_received(data)

    def received(self) -> list[Any]:
        """Packets written since the last call (CONNACK and SUBACK included)."""
        new = self.transport.data[self.seen :]
        self.seen = len(self.transport.data)
        return self.decoder.feed(new)

    async def expect(self, count: int = 1, timeout: float = 1.0) -> list[Any]:
        """Wait until ``count`` packets came, then return all that came (with a settle, so a
        packet more than expected shows in the result)."""
        got: list[Any] = []

        def enough() -> bool:
            got.extend(self.received())
            return len(got) >= count

        await until(enough, timeout)
        await settle()
        got.extend(self.received())
        return got

    async def connack(self) -> Connack:
        (packet,) = await self.expect()
        assert isinstance(packet, Connack), packet
        return packet

    @property
    def closed(self) -> bool:
        return self.transport.closed

    def lose(self) -> None:
        """The network drops the connection (no DISCONNECT): what asyncio reports."""
        self.transport.closed = True
        self.client.connection_lost(ConnectionResetError("reset by peer"))
