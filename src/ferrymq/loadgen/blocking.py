"""A blocking-socket MQTT client on ``mqtt.client.ClientConnection``, for scripts and tests.

The benchmark helpers (``bench/s5.py``, ``bench/durable.py``) and the tests'
raw client (``tests/support/rawclient.py``) drive a broker one step at a time: send
exactly these bytes, then wait for so many packets or a deadline. This is
that loop, once; the packets themselves come from ``ClientConnection``, as
the asyncio load generator's do. It sends only what it is told to: no
acknowledgement, no PINGREQ of its own.
"""

from __future__ import annotations

import socket
import time
from typing import Any

from ferrymq.mqtt.client import ClientConnection
from ferrymq.mqtt.packets import Connack, Packet


class ConnectionClosed(Exception):
    """The broker closed the connection."""


class BlockingClient:
    """One TCP connection speaking MQTT ``version`` (3, 4 or 5)."""

    def __init__(
        self,
        port: int,
        version: int = 4,
        timeout: float = 3.0,
        host: str = "127.0.0.1",
        nodelay: bool = False,
    ) -> None:
        self.version = version
        self.timeout = timeout
        self.mqtt = ClientConnection(version)
        self.sock = socket.create_connection((host, port), timeout=timeout)
        if nodelay:
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.pending: list[Packet] = []
        self.eof = False

    # --- sending ------------------------------------------------------------

    def send(self, packet: Packet | bytes) -> None:
        """Send ``packet``, or bytes as they are (pre-encoded, or malformed on purpose)."""
        self.sock.sendall(packet if isinstance(packet, bytes) else self.mqtt.encode(packet))

    def connect(self, client_id: str, *args: Any, **kwargs: Any) -> Connack:
        """Send ``ClientConnection.connect(client_id, ...)``; return the CONNACK, whatever
        its reason code (ConnectionError if the broker answers something else)."""
        self.send(self.mqtt.connect(client_id, *args, **kwargs))
        ack = self.recv()
        if not isinstance(ack, Connack):
            raise ConnectionError(f"expected CONNACK, got {ack!r}")
        return ack

    # --- receiving ----------------------------------------------------------

    def _fill(self, deadline: float) -> bool:
        """Read once into ``pending``; False when the deadline passed first."""
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        self.sock.settimeout(left)
        try:
            data = self.sock.recv(262144)
        except TimeoutError:
            return False
        except ConnectionResetError:
            data = b""
        if not data:
            self.eof = True
        else:
            self.pending.extend(self.mqtt.receive(data))
        return True

    def recv(self, timeout: float | None = None) -> Packet:
        """The next packet from the broker; TimeoutError if none, ConnectionClosed at EOF."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while not self.pending:
            if self.eof:
                raise ConnectionClosed("the broker closed the connection")
            if not self._fill(deadline):
                raise TimeoutError("no packet from the broker")
        return self.pending.pop(0)

    def read(self, n: int, deadline: float) -> list[Packet]:
        """Up to ``n`` packets, fewer if ``deadline`` (monotonic) comes first;
        ConnectionClosed at EOF."""
        while len(self.pending) < n:
            if self.eof:
                raise ConnectionClosed("the broker closed the connection")
            if not self._fill(deadline):
                break
        got, self.pending = self.pending[:n], self.pending[n:]
        return got

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> BlockingClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def connect(
    port: int, client_id: str, timeout: float, clean: bool = True, version: int = 4
) -> tuple[BlockingClient, Connack]:
    """A connected client (keep alive off, TCP_NODELAY) and its CONNACK; ConnectionError
    when the broker refuses or does not answer, OSError when nothing listens."""
    client = BlockingClient(port, version, timeout, nodelay=True)
    try:
        ack = client.connect(client_id, clean, keepalive=0)
    except (ConnectionClosed, TimeoutError) as exc:
        client.close()
        raise ConnectionError(f"no CONNACK for {client_id}: {exc}") from None
    except OSError:
        client.close()
        raise
    if ack.reason_code:
        client.close()
        raise ConnectionError(f"CONNACK for {client_id} refused: {ack.reason_code:#x}")
    return client, ack
