"""What an idle connected client costs the broker, in Python allocations.

Ten thousand idle connections are a common load (S4 in ``make bench``), so each
one's state is kept small: no timer of its own (shared deadline slots), no dicts
or lists before they hold something, shared strings. The bound below is the
broker's side only (client, connection machine, decoder, session, registry and
deadline entries); the transport is shared here.
``tests/system/transport/test_idle_connection_memory.py`` bounds the whole over real
TCP, transport included, and ``bench/conn_memory.py`` measures it, also as RSS.
"""

from __future__ import annotations

import gc
import tracemalloc
from pathlib import Path
from typing import Any

from ferrymq.core.client import Client
from ferrymq.mqtt.client import ClientConnection
from memory import serving, settle

# Bytes per idle connected client (MQTT 3.1.1, keep alive 60 s, a 13-character client
# id): about 1,200 today; 2,150 with a loop timer each and the dicts made up front.
BOUND = 1350
CLIENTS = 500


class NullTransport:
    """One transport for every client: it takes the CONNACKs and forgets them."""

    def write(self, data: bytes) -> None:
        pass

    def is_closing(self) -> bool:
        return False

    def can_write_eof(self) -> bool:
        return False

    def close(self) -> None:
        pass

    def abort(self) -> None:
        pass

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 40000) if name == "peername" else default


async def test_an_idle_connection_stays_small(tmp_path: Path) -> None:
    async with serving(tmp_path) as broker:
        transport = NullTransport()
        connects = [
            ClientConnection(4).connect(f"idle-{i:08d}", keepalive=60) for i in range(CLIENTS + 20)
        ]

        def connect(i: int) -> Client:
            client = Client(broker, transport)  # type: ignore[arg-type]
            client.data_received(connects[i])
            return client

        warm = [connect(i) for i in range(20)]  # lazily made shared state
        await settle()
        clients: list[Client] = []
        clients_size = (CLIENTS + 1) * 8
        gc.collect()
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            clients.extend(connect(i) for i in range(20, 20 + CLIENTS))
            await settle()
            gc.collect()
            after = tracemalloc.get_traced_memory()[0]
        finally:
            tracemalloc.stop()
        assert all(c.connected for c in clients + warm)
        assert len(broker.clients) == CLIENTS + 20
        per_client = (after - before - clients_size) / CLIENTS
        assert 300 < per_client <= BOUND, f"{per_client:.0f} bytes per idle connection"
