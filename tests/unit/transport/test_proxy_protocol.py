"""PROXY protocol v1/v2 header parsing."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ferrymq.transport.proxy_protocol import (
    V2_SIGNATURE,
    ProxyProtocolError,
    encode_v1,
    encode_v2,
    header_length,
    parse,
)

ipv4 = st.ip_addresses(v=4).map(str)
ipv6 = st.ip_addresses(v=6).map(str)
ports = st.integers(0, 65535)


def consume(stream: bytes) -> tuple[int, object]:
    """Feed ``stream`` byte by byte, as the listener would see it arrive."""
    for end in range(1, len(stream) + 1):
        size = header_length(stream[:end])
        if size is not None:
            return size, parse(stream[:size])
    raise AssertionError("header never completed")


@given(st.one_of(st.tuples(ipv4, ipv4), st.tuples(ipv6, ipv6)), ports, ports, st.binary())
def test_v1_and_v2_round_trip_and_leave_the_stream_alone(
    hosts: tuple[str, str], sport: int, dport: int, rest: bytes
) -> None:
    src, dst = (hosts[0], sport), (hosts[1], dport)
    for header in (encode_v1(src, dst), encode_v2(src, dst, b"\x05\x00\x02ab")):
        size, address = consume(header + rest)
        assert size == len(header)
        assert address == (str(ipaddress.ip_address(hosts[0])), sport)


@pytest.mark.parametrize(
    "header",
    [b"PROXY UNKNOWN\r\n", b"PROXY UNKNOWN ff::1 ff::2 1 2\r\n"],
)
def test_v1_unknown_means_use_the_socket_address(header: bytes) -> None:
    assert header_length(header + b"\x10") == len(header)
    assert parse(header) is None


def test_v2_local_command_and_unspec_family_carry_no_address() -> None:
    local = V2_SIGNATURE + b"\x20\x00\x00\x00"
    assert header_length(local) == 16 and parse(local) is None
    unspec = V2_SIGNATURE + b"\x21\x00\x00\x03abc"
    assert header_length(unspec) == 19 and parse(unspec) is None


def test_v2_waits_for_its_whole_address_block() -> None:
    header = encode_v2(("10.1.2.3", 5), ("10.0.0.1", 6))
    assert header_length(header[:15]) is None
    assert header_length(header[:16]) == len(header) == 28


@pytest.mark.parametrize(
    "data",
    [
        b"\x10\x0c\x00\x04MQTT",  # an MQTT CONNECT: the client skipped the header
        b"GET / HTTP/1.1\r\n",
        b"PROXY " + b"x" * 120,  # no CRLF within 107 bytes
        b"\r\n\r\n\x00\r\nQUIT\x00",  # broken v2 signature
    ],
)
def test_garbage_is_refused_as_early_as_possible(data: bytes) -> None:
    with pytest.raises(ProxyProtocolError):
        for end in range(1, len(data) + 1):
            header_length(data[:end])


@pytest.mark.parametrize(
    "line",
    [
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n",
        b"PROXY TCP4 ::1 ::1 1 2\r\n",  # family mismatch
        b"PROXY TCP4 1.2.3.4 5.6.7.8 99999 2\r\n",
        b"PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n",
        b"PROXY TCP4 1.2.3.\xff 5.6.7.8 1 2\r\n",
    ],
)
def test_bad_v1_lines(line: bytes) -> None:
    with pytest.raises(ProxyProtocolError):
        parse(line)


def test_bad_v2_version_and_short_address_block() -> None:
    with pytest.raises(ProxyProtocolError):
        parse(V2_SIGNATURE + b"\x31\x11\x00\x0c" + bytes(12))
    with pytest.raises(ProxyProtocolError):
        parse(V2_SIGNATURE + b"\x21\x11\x00\x04" + bytes(4))
