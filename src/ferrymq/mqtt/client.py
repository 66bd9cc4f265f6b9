"""The client side of an MQTT connection, sans-I/O: what the project's own clients share.

The tests' raw client (``tests/support/rawclient.py``), the load generator
(``loadgen/connection.py``, asyncio) and the benchmark helpers
(``bench/s5.py``, ``bench/durable.py``, blocking sockets) all talk to a
broker through ``ClientConnection``; only how the bytes travel differs.
Rules kept here:

- every byte is built by this package's codec (``encode``, ``encode_publish``)
  and read by its client-side ``Decoder``: no client writes MQTT by hand,
  except tests that send malformed bytes on purpose;
- packet identifiers run 1..65535 and wrap;
- nothing is answered on its own: ``reply`` says what acknowledgement a
  packet is owed, and the caller decides whether to send it (a test may
  withhold it, the load generator always sends it);
- bytes sent many times with only the packet id changing (a publisher's
  PUBLISH, every acknowledgement) are encoded once and split around the
  packet id (``split_at_packet_id``), found by encoding, not by knowing the
  layout of each packet.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ferrymq.mqtt.codec import Decoder, encode, encode_publish
from ferrymq.mqtt.packets import (
    PUBACK,
    PUBCOMP,
    PUBLISH,
    PUBREC,
    PUBREL,
    Connect,
    Packet,
    Puback,
    Pubcomp,
    Pubrec,
    Pubrel,
    Subscribe,
    SubscriptionOptions,
    Unsubscribe,
    Will,
)
from ferrymq.mqtt.wire import decode_varint

# The protocol name of each protocol level, as a client sends it in CONNECT.
PROTOCOL_NAMES = {3: "MQIsdp", 4: "MQTT", 5: "MQTT"}


def split_at_packet_id(make: Callable[[int], bytes]) -> tuple[bytes, bytes]:
    """The bytes ``make(packet_id)`` encodes, split into (before, after) the packet id.

    ``make`` is called with ids 1 and 2; they differ only in the id's low byte.
    """
    one, two = make(1), make(2)
    low = next(i for i, (a, b) in enumerate(zip(one, two, strict=True)) if a != b)
    return one[: low - 1], one[low + 1 :]


def count_packets(buf: bytes, pos: int, kind: int) -> tuple[int, int]:
    """Whole packets of type ``kind`` in ``buf`` from ``pos``: (how many, first unread byte).

    Reads fixed headers only, with the decoder's remaining-length reader: for a
    client that must count what a broker sends faster than the broker sends it
    (decoding 100,000 retained messages made the S5 subscriber the bottleneck).
    """
    n = len(buf)
    count = 0
    while pos + 2 <= n:
        size, start = decode_varint(buf, pos + 1, n)
        if start < 0 or start + size > n:
            break
        if buf[pos] >> 4 == kind:
            count += 1
        pos = start + size
    return count, pos


class ClientConnection:
    """One client connection's codec state: packet ids, a client-side decoder, encoders."""

    __slots__ = ("_next_pid", "decoder", "heads", "version")

    def __init__(self, version: int = 4) -> None:
        self.version = version
        self.decoder = Decoder(server=False, version=version)
        self._next_pid = 0
        # Each acknowledgement up to its packet id (a success needs nothing after it); the
        # lambda is called at once, in its own iteration, so it may read the loop's cls.
        self.heads: dict[int, bytes] = {
            cls.type: split_at_packet_id(lambda pid: encode(cls(pid), version))[0]  # noqa: B023
            for cls in (Puback, Pubrec, Pubrel, Pubcomp)
        }

    # --- reading ----------------------------------------------------------------

    def receive(self, data: bytes) -> list[Packet]:
        """The packets ``data`` completes (MQTTError if the broker sent something invalid)."""
        return self.decoder.feed(data)

    def reply(self, packet: Packet) -> bytes | None:
        """The acknowledgement a client owes for ``packet``, or None if it owes none.

        PUBLISH QoS 1 -> PUBACK, QoS 2 -> PUBREC; PUBREC -> PUBREL; PUBREL -> PUBCOMP.
        """
        kind = packet.type
        if kind == PUBLISH:
            qos = packet.qos  # type: ignore[attr-defined]
            if not qos:
                return None
            kind = PUBACK if qos == 1 else PUBREC
        elif kind == PUBREC:
            kind = PUBREL
        elif kind == PUBREL:
            kind = PUBCOMP
        else:
            return None
        return self.heads[kind] + packet.packet_id.to_bytes(2, "big")  # type: ignore[attr-defined]

    # --- writing ----------------------------------------------------------------

    def pid(self) -> int:
        """The next packet identifier."""
        self._next_pid = self._next_pid % 65535 + 1
        return self._next_pid

    def encode(self, packet: Packet) -> bytes:
        return encode(packet, self.version)

    def connect(
        self,
        client_id: str,
        clean: bool = True,
        keepalive: int = 60,
        will: Will | None = None,
        properties: dict[str, Any] | None = None,
        username: str | None = None,
        password: bytes | None = None,
    ) -> bytes:
        version = self.version
        return self.encode(
            Connect(
                client_id,
                protocol_name=PROTOCOL_NAMES[version],
                protocol_version=version,
                clean_start=clean,
                keepalive=keepalive,
                will=will,
                username=username,
                password=password,
                properties=properties or {},
            )
        )

    def subscribe(
        self, filters: list[SubscriptionOptions], properties: dict[str, Any] | None = None
    ) -> bytes:
        """One SUBSCRIBE (with the next packet id) for ``filters``."""
        return self.encode(Subscribe(self.pid(), filters, properties or {}))

    def unsubscribe(self, filters: list[str]) -> bytes:
        return self.encode(Unsubscribe(self.pid(), filters))

    def publish(
        self,
        topic: str,
        payload: bytes = b"",
        qos: int = 0,
        retain: bool = False,
        pid: int = 0,
        dup: bool = False,
        properties: dict[str, Any] | None = None,
    ) -> bytes:
        """One PUBLISH; ``pid`` is used as given (0 for QoS 0)."""
        return encode_publish(topic, payload, qos, retain, dup, pid, properties, self.version)

    def publish_template(
        self, topic: str, size: int, qos: int, retain: bool = False
    ) -> tuple[bytes, bytes]:
        """A PUBLISH with a ``size``-byte payload up to the payload, split at the packet id.

        (before, after): the packet is ``before + pid + after + payload`` for QoS 1/2
        and ``before + payload`` for QoS 0 (``after`` is then empty).
        """
        version = self.version
        payload = bytes(size)

        def make(pid: int) -> bytes:
            return encode_publish(topic, payload, qos, retain, False, pid, None, version)

        if not qos:
            return make(0)[: -size or None], b""
        before, after = split_at_packet_id(make)
        return before, after[: len(after) - size]
