"""Chunk boundaries never matter: any split of one byte stream is handed out the same."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from ferrymq.config import Settings
from ferrymq.mqtt.codec import encode
from ferrymq.mqtt.connection import CONNECT_RECEIVED, Reply, ServerConnection
from ferrymq.mqtt.packets import CONNECT, Connect, Pingreq, Publish

_LIMITS = Settings()


def _handed_out(stream: bytes, cuts: list[int]) -> list[Any]:
    server = ServerConnection(_LIMITS, 0.0)
    taken: list[Any] = []

    def take(out: list[Any], packet: Any) -> None:
        out.append(packet)
        if packet.type == CONNECT and server.state is CONNECT_RECEIVED:
            server.negotiate(packet, packet.client_id)
            server.accept(False, {}, 0.0)

    handlers = [take] * 16
    start = 0
    for cut in [*sorted(cuts), len(stream)]:
        server.receive(stream[start:cut], 1.0)
        server.dispatch(handlers, taken)
        start = cut
    return [(p.data if isinstance(p, Reply) else p) for p in taken]


@settings(max_examples=60, deadline=None)
@given(
    st.integers(4, 5),
    st.lists(st.binary(max_size=300), min_size=1, max_size=8),
    st.lists(st.integers(0, 4000), max_size=10),
)
def test_any_split_hands_out_the_same(version: int, payloads: list[bytes], cuts: list[int]) -> None:
    packets = [Connect("c", protocol_version=version)]
    for i, payload in enumerate(payloads):
        packets.append(Publish(f"t/{i}", payload, i % 3, packet_id=i + 1 if i % 3 else 0))
        packets.append(Pingreq())
    stream = b"".join(encode(p, version) for p in packets)
    cuts = [c for c in cuts if c <= len(stream)]
    whole = _handed_out(stream, [])
    assert len(whole) == len(packets)
    assert _handed_out(stream, cuts) == whole
