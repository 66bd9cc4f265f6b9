"""A minimal blocking MQTT client on a raw socket, for protocol details paho cannot express.

It sends exactly what the test asks (packets built with the project's codec,
or hand-built bytes) and acknowledges nothing on its own, so tests can
withhold PUBACK, resend a QoS 2 PUBLISH, use topic aliases or send AUTH. The
socket loop is ``ferrymq.loadgen.blocking.BlockingClient`` and the packets come
from ``ferrymq.mqtt.client.ClientConnection``, as for the benchmark helpers and
the load generator; this file adds the assertions tests want, and the
hand-built bytes (``frame``, ``connect_bytes``) that malformed-input tests send.
"""

from __future__ import annotations

import select
from typing import Any

from ferrymq.loadgen.blocking import BlockingClient, ConnectionClosed
from ferrymq.mqtt.client import PROTOCOL_NAMES
from ferrymq.mqtt.packets import (
    Disconnect,
    Packet,
    Pingreq,
    Pingresp,
    Suback,
    SubscriptionOptions,
    Unsuback,
)
from ferrymq.mqtt.wire import encode_varint

__all__ = ["ConnectionClosed", "RawClient", "connect_bytes", "frame", "utf8"]


class RawClient(BlockingClient):
    """One TCP connection speaking MQTT ``version`` (3, 4 or 5) with no automatic behaviour."""

    # --- sending --------------------------------------------------------

    def pid(self) -> int:
        return self.mqtt.pid()

    def subscribe(
        self, topic_filter: str, qos: int = 0, properties: dict[str, Any] | None = None, **opts: Any
    ) -> Suback:
        self.send(self.mqtt.subscribe([SubscriptionOptions(topic_filter, qos, **opts)], properties))
        return self.expect(Suback)

    def unsubscribe(self, topic_filter: str) -> Unsuback:
        self.send(self.mqtt.unsubscribe([topic_filter]))
        return self.expect(Unsuback)

    def publish(
        self,
        topic: str,
        payload: bytes = b"",
        qos: int = 0,
        retain: bool = False,
        pid: int | None = None,
        dup: bool = False,
        properties: dict[str, Any] | None = None,
    ) -> int:
        """Send one PUBLISH; return its packet id (0 for QoS 0). No acknowledgement is awaited."""
        if qos and pid is None:
            pid = self.pid()
        self.send(self.mqtt.publish(topic, payload, qos, retain, pid or 0, dup, properties))
        return pid or 0

    # --- receiving ------------------------------------------------------

    def expect(self, kind: type[Packet], timeout: float | None = None) -> Any:
        """The next packet, which must be of type ``kind``."""
        packet = self.recv(timeout)
        assert isinstance(packet, kind), f"expected {kind.__name__}, got {packet!r}"
        return packet

    def recv_all(self, n: int, timeout: float | None = None) -> list[Packet]:
        return [self.recv(timeout) for _ in range(n)]

    def nothing(self, wait: float = 0.3) -> None:
        """Assert that the broker sends nothing for ``wait`` seconds."""
        try:
            packet = self.recv(wait)
        except TimeoutError:
            return
        raise AssertionError(f"unexpected packet {packet!r}")

    def quiet(self) -> bool:
        """True when the broker has sent nothing (not even EOF) that is still unread."""
        return not self.pending and not select.select([self.sock], [], [], 0)[0]

    def closed_after(self, timeout: float | None = None) -> list[Packet]:
        """Wait for the broker to close the connection; return the packets sent before it."""
        out: list[Packet] = []
        while True:
            try:
                out.append(self.recv(timeout))
            except ConnectionClosed:
                return out

    def is_open(self, wait: float = 0.2) -> bool:
        """True when the connection still works: a PINGREQ gets its PINGRESP."""
        try:
            self.send(Pingreq())
            while True:
                packet = self.recv(wait + 2)
                if isinstance(packet, Pingresp):
                    return True
                self.pending.append(packet)
        except (ConnectionClosed, OSError, TimeoutError):
            return False

    def disconnect(self, reason_code: int = 0, properties: dict[str, Any] | None = None) -> None:
        try:
            self.send(Disconnect(reason_code, properties))
        finally:
            self.close()

    def __enter__(self) -> RawClient:
        return self


def frame(first: int, body: bytes) -> bytes:
    """A packet with fixed header byte ``first`` and the given body (length encoded here)."""
    return bytes((first,)) + encode_varint(len(body)) + body


def utf8(text: str | bytes) -> bytes:
    data = text.encode() if isinstance(text, str) else text
    return len(data).to_bytes(2, "big") + data


def connect_bytes(
    client_id: str = "raw",
    version: int = 4,
    flags: int = 0x02,
    keepalive: int = 60,
    props: bytes = b"\x00",
    name: bytes | None = None,
) -> bytes:
    """A hand-built CONNECT (``props`` is the raw v5 property block, ignored for 3/4)."""
    proto = name if name is not None else PROTOCOL_NAMES[version].encode()
    body = utf8(proto) + bytes((version, flags)) + keepalive.to_bytes(2, "big")
    if version == 5:
        body += props
    return frame(0x10, body + utf8(client_id))
