"""A minimal blocking MQTT client on a raw socket, for protocol details paho cannot express.

It sends exactly what the test asks (packets built with the project's codec,
or hand-built bytes) and acknowledges nothing on its own, so tests can
withhold PUBACK, resend a QoS 2 PUBLISH, use topic aliases or send AUTH.
"""

from __future__ import annotations

import select
import socket
import time
from typing import Any

from ferrymq.mqtt.codec import Decoder, encode
from ferrymq.mqtt.packets import (
    Connack,
    Connect,
    Disconnect,
    Packet,
    Publish,
    Suback,
    Subscribe,
    SubscriptionOptions,
    Unsuback,
    Unsubscribe,
    Will,
)
from ferrymq.mqtt.wire import encode_varint

_NAMES = {3: "MQIsdp", 4: "MQTT", 5: "MQTT"}


class ConnectionClosed(Exception):
    """The broker closed the connection."""


class RawClient:
    """One TCP connection speaking MQTT ``version`` (3, 4 or 5) with no automatic behaviour."""

    def __init__(self, port: int, version: int = 4, timeout: float = 3.0) -> None:
        self.version = version
        self.timeout = timeout
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.decoder = Decoder(server=False, version=version)
        self.pending: list[Packet] = []
        self.eof = False
        self._next_pid = 0

    # --- sending --------------------------------------------------------

    def send(self, packet: Packet | bytes) -> None:
        data = packet if isinstance(packet, bytes) else encode(packet, self.version)
        self.sock.sendall(data)

    def pid(self) -> int:
        self._next_pid = self._next_pid % 65535 + 1
        return self._next_pid

    def connect(
        self,
        client_id: str,
        clean: bool = True,
        keepalive: int = 60,
        will: Will | None = None,
        properties: dict[str, Any] | None = None,
        username: str | None = None,
        password: bytes | None = None,
    ) -> Connack:
        """Send CONNECT and return the CONNACK (whatever its reason code)."""
        self.send(
            Connect(
                client_id,
                protocol_name=_NAMES[self.version],
                protocol_version=self.version,
                clean_start=clean,
                keepalive=keepalive,
                will=will,
                username=username,
                password=password,
                properties=properties,
            )
        )
        ack = self.recv()
        assert isinstance(ack, Connack), ack
        return ack

    def subscribe(
        self, topic_filter: str, qos: int = 0, properties: dict[str, Any] | None = None, **opts: Any
    ) -> Suback:
        self.send(
            Subscribe(self.pid(), [SubscriptionOptions(topic_filter, qos, **opts)], properties)
        )
        return self.expect(Suback)

    def unsubscribe(self, topic_filter: str) -> Unsuback:
        self.send(Unsubscribe(self.pid(), [topic_filter]))
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
        self.send(Publish(topic, payload, qos, retain, dup, pid or 0, properties))
        return pid or 0

    # --- receiving ------------------------------------------------------

    def recv(self, timeout: float | None = None) -> Packet:
        """The next packet from the broker; TimeoutError if none, ConnectionClosed at EOF."""
        if self.pending:
            return self.pending.pop(0)
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while not self.pending:
            if self.eof:
                raise ConnectionClosed("the broker closed the connection")
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no packet from the broker")
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                raise TimeoutError("no packet from the broker") from None
            except ConnectionResetError:
                data = b""
            if not data:
                self.eof = True
                continue
            self.pending.extend(self.decoder.feed(data))
        return self.pending.pop(0)

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
            self.send(b"\xc0\x00")
            while True:
                packet = self.recv(wait + 2)
                if type(packet).__name__ == "Pingresp":
                    return True
                self.pending.append(packet)
        except (ConnectionClosed, OSError, TimeoutError):
            return False

    def disconnect(self, reason_code: int = 0, properties: dict[str, Any] | None = None) -> None:
        try:
            self.send(Disconnect(reason_code, properties))
        finally:
            self.close()

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> RawClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


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
    proto = name if name is not None else _NAMES[version].encode()
    body = utf8(proto) + bytes((version, flags)) + keepalive.to_bytes(2, "big")
    if version == 5:
        body += props
    return frame(0x10, body + utf8(client_id))
