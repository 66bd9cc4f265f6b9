"""The plain TCP listener: an ``asyncio.Protocol`` that feeds a core ``Client``."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from ferrymq.core.client import Client

if TYPE_CHECKING:
    from ferrymq.core.broker import Broker

# Socket buffer high-water mark: beyond it the client counts as backed up.
WRITE_HIGH_WATER = 256 * 1024


class MQTTProtocol(asyncio.Protocol):
    """Glue between an asyncio transport and the transport-agnostic Client."""

    __slots__ = ("broker", "client", "listener", "zone")

    def __init__(self, broker: Broker, listener: str, zone: str = "default") -> None:
        self.broker = broker
        self.listener = listener
        self.zone = zone
        self.client: Client | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.set_write_buffer_limits(high=WRITE_HIGH_WATER)  # type: ignore[attr-defined]
        # typeshed: BaseTransport; a stream protocol is handed an asyncio.Transport's methods.
        self.client = Client(self.broker, transport, self.listener, self.zone)  # type: ignore[arg-type]

    def data_received(self, data: bytes) -> None:
        self.client.data_received(data)  # type: ignore[union-attr]

    def eof_received(self) -> bool:
        return False

    def pause_writing(self) -> None:
        self.client.pause_writing()  # type: ignore[union-attr]

    def resume_writing(self) -> None:
        self.client.resume_writing()  # type: ignore[union-attr]

    def connection_lost(self, exc: Exception | None) -> None:
        if self.client is not None:
            self.client.connection_lost(exc)
