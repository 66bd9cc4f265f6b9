"""The client side the project's own clients share (``ferrymq.mqtt.client``), in memory.

What it encodes is read back by the broker's own decoder (``Decoder(server=True)``),
and what it splits or counts is checked against the codec's own encoding.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ferrymq.mqtt.client import ClientConnection, count_packets, split_at_packet_id
from ferrymq.mqtt.codec import Decoder, encode, encode_publish
from ferrymq.mqtt.packets import (
    PUBLISH,
    Connect,
    Puback,
    Pubcomp,
    Publish,
    Pubrec,
    Pubrel,
    Subscribe,
    SubscriptionOptions,
)

VERSIONS = (3, 4, 5)


@pytest.mark.parametrize("version", VERSIONS)
def test_the_broker_reads_what_the_client_side_encodes(version: int) -> None:
    client = ClientConnection(version)
    server = Decoder(server=True)
    data = client.connect("c1", clean=False, keepalive=30, username="u", password=b"p")
    data += client.subscribe([SubscriptionOptions("a/+", 1)])
    data += client.publish("a/b", b"x", qos=1, pid=client.pid())
    connect, subscribe, publish = server.feed(data)
    assert isinstance(connect, Connect)
    assert (connect.protocol_version, connect.client_id, connect.clean_start) == (
        version,
        "c1",
        False,
    )
    assert (connect.keepalive, connect.username, connect.password) == (30, "u", b"p")
    assert isinstance(subscribe, Subscribe) and subscribe.packet_id == 1
    assert isinstance(publish, Publish) and (publish.packet_id, publish.payload) == (2, b"x")


def test_packet_ids_run_from_1_to_65535_and_wrap() -> None:
    client = ClientConnection()
    ids = [client.pid() for _ in range(65536)]
    assert ids[0] == 1 and ids[65534] == 65535 and ids[65535] == 1


@given(
    version=st.sampled_from(VERSIONS),
    qos=st.integers(0, 2),
    retain=st.booleans(),
    topic=st.text(
        st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters="+#"),
        min_size=1,
        max_size=300,
    ),
    size=st.integers(0, 20_000),
    pid=st.integers(1, 65535),
)
def test_a_publish_template_plus_its_packet_id_is_the_codecs_publish(
    version: int, qos: int, retain: bool, topic: str, size: int, pid: int
) -> None:
    before, after = ClientConnection(version).publish_template(topic, size, qos, retain)
    payload = bytes(size)
    if qos:
        built = before + pid.to_bytes(2, "big") + after + payload
    else:
        assert after == b""
        built = before + payload
        pid = 0
    assert built == encode_publish(topic, payload, qos, retain, False, pid, None, version)


@pytest.mark.parametrize("version", VERSIONS)
def test_replies_are_the_acknowledgements_a_client_owes(version: int) -> None:
    client = ClientConnection(version)
    cases = [
        (Publish("t", b"", 0), None),
        (Publish("t", b"", 1, packet_id=7), Puback(7)),
        (Publish("t", b"", 2, packet_id=8), Pubrec(8)),
        (Pubrec(9), Pubrel(9)),
        (Pubrel(10), Pubcomp(10)),
        (Puback(11), None),
    ]
    for received, owed in cases:
        expected = None if owed is None else encode(owed, version)
        assert client.reply(received) == expected, received


def test_split_at_packet_id_finds_the_id_by_encoding() -> None:
    assert split_at_packet_id(lambda pid: encode(Pubrel(pid), 5)) == (b"\x62\x02", b"")
    before, after = split_at_packet_id(
        lambda pid: encode(Subscribe(pid, [SubscriptionOptions("x")]), 4)
    )
    assert before == b"\x82\x06" and after == b"\x00\x01x\x00"


def test_count_packets_counts_whole_packets_of_one_type() -> None:
    pubs = [encode_publish(f"t/{i}", bytes(i * 40), 0, False, False, 0, None, 4) for i in range(8)]
    packets = [encode(Puback(1), 4), *pubs]
    stream = b"".join(packets)
    ends = [sum(map(len, packets[: k + 1])) for k in range(len(packets))]
    for cut in range(len(stream) + 1):
        whole = [end for end in ends if end <= cut]
        expected = (max(len(whole) - 1, 0), whole[-1] if whole else 0)
        assert count_packets(stream[:cut], 0, PUBLISH) == expected, cut
