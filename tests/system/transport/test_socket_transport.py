"""The plain TCP transport of our own (transport/poller.py), over real loopback sockets.

It replaces the event loop's transport for plain TCP listeners, so it must behave as
that one did for a Client: back-pressure both ways, the half-close, close after the
buffered bytes, abort, connection_lost once and never inside the call that caused it.
The broker-level behaviour (slow consumers, graceful close, the listener) is covered by
the rest of tests/system; here the transport faces a recording client.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from ferrymq.transport import poller
from ferrymq.transport.tcp import WRITE_HIGH_WATER

pytestmark = pytest.mark.skipif(not poller.AVAILABLE, reason="needs select.epoll (Linux)")


class Recorder:
    """Stands where a Client stands: records what the transport tells it."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.events: list[str] = []
        self.lost: list[Exception | None] = []

    def data_received(self, data: bytes) -> None:
        self.data += data

    def pause_writing(self) -> None:
        self.events.append("pause")

    def resume_writing(self) -> None:
        self.events.append("resume")

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost.append(exc)


class Pair:
    """A SocketTransport on the server end of a loopback TCP connection, a blocking peer."""

    def __init__(self, transport: poller.SocketTransport, client: Recorder, peer: socket.socket):
        self.transport = transport
        self.client = client
        self.peer = peer


async def until(check: Callable[[], Any], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


@pytest.fixture
async def pair() -> AsyncIterator[Pair]:
    loop = asyncio.get_running_loop()
    closed: list[int] = []
    polls = poller.Poller(loop, lambda: closed.append(1), lambda _ready: None)
    listening = socket.create_server(("127.0.0.1", 0))
    peer = socket.create_connection(listening.getsockname())
    fd, addr = listening._accept()
    listening.close()
    poller.prepare(fd, socket.AF_INET)
    client = Recorder()
    transport = polls.attach(fd, poller.peer_address(addr), lambda _t: client)  # type: ignore[arg-type,return-value]
    yield Pair(transport, client, peer)
    peer.close()
    polls.close()


def read_all(sock: socket.socket, size: int, timeout: float = 10.0) -> bytes:
    sock.settimeout(timeout)
    got = bytearray()
    while len(got) < size:
        chunk = sock.recv(1 << 20)
        if not chunk:
            break
        got += chunk
    return bytes(got)


async def test_bytes_both_ways_and_the_peer_address(pair: Pair) -> None:
    pair.peer.sendall(b"hello")
    await until(lambda: pair.client.data == b"hello")
    pair.transport.write(b"world")
    assert read_all(pair.peer, 5) == b"world"
    host, port = pair.peer.getsockname()
    assert pair.transport.get_extra_info("peername") == (host, port)
    assert pair.transport.get_extra_info("sockname") == pair.peer.getpeername()
    assert pair.transport.get_extra_info("nothing", 7) == 7


async def test_a_peer_that_does_not_read_pauses_writing_and_resumes_when_it_reads(
    pair: Pair,
) -> None:
    chunk = bytes(range(256)) * 256  # 64 KiB
    sent = bytearray()
    while "pause" not in pair.client.events:
        assert len(sent) < 256 * 1024 * 1024, "never paused"
        pair.transport.write(chunk)
        sent += chunk
    assert pair.transport.size > WRITE_HIGH_WATER
    loop = asyncio.get_running_loop()
    got = await loop.run_in_executor(None, read_all, pair.peer, len(sent))
    assert got == sent  # every byte, in order
    await until(lambda: pair.client.events == ["pause", "resume"])
    assert pair.transport.buffer is None


async def test_paused_reading_holds_the_input_until_resumed(pair: Pair) -> None:
    pair.transport.pause_reading()
    pair.peer.sendall(b"held")
    await asyncio.sleep(0.2)
    assert pair.client.data == b""
    pair.transport.resume_reading()
    await until(lambda: pair.client.data == b"held")


async def test_write_eof_half_closes_and_keeps_reading_until_the_peer_closes(pair: Pair) -> None:
    pair.transport.write(b"bye")
    pair.transport.write_eof()
    assert not pair.transport.is_closing()
    assert read_all(pair.peer, 4) == b"bye"  # then EOF
    pair.peer.sendall(b"late")
    await until(lambda: pair.client.data == b"late")
    assert pair.client.lost == []
    pair.peer.close()
    await until(lambda: pair.client.lost == [None])
    assert pair.transport.is_closing()


async def test_close_sends_what_is_buffered_first(pair: Pair) -> None:
    big = b"x" * (64 * WRITE_HIGH_WATER)  # 16 MiB: more than the kernel takes at once
    pair.transport.write(big)
    assert pair.transport.buffer is not None  # the kernel did not take it all
    pair.transport.close()
    assert pair.client.lost == []
    loop = asyncio.get_running_loop()
    got = await loop.run_in_executor(None, read_all, pair.peer, len(big) + 1)
    assert got == big  # all of it, then EOF
    await until(lambda: pair.client.lost == [None])


async def test_abort_drops_the_buffer_and_reports_the_loss_later(pair: Pair) -> None:
    pair.transport.write(b"x" * (64 * WRITE_HIGH_WATER))
    pair.transport.abort()
    assert pair.client.lost == []  # never inside the call
    await until(lambda: pair.client.lost == [None])
    pair.transport.write(b"ignored")
    pair.transport.abort()
    await asyncio.sleep(0.05)
    assert pair.client.lost == [None]  # once
    assert pair.transport.get_extra_info("socket") is None


async def test_a_peer_reset_is_a_lost_connection_with_its_error(pair: Pair) -> None:
    pair.peer.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    pair.peer.close()  # linger 0: a reset
    await until(lambda: pair.client.lost)
    assert isinstance(pair.client.lost[0], ConnectionResetError)


async def test_the_socket_options_reach_the_socket(pair: Pair) -> None:
    options = pair.transport.get_extra_info("socket")
    options.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    # Linux doubles what it is given, for its bookkeeping.
    assert options.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) == 128 * 1024
    assert options.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
    pair.transport.write(b"still open")
    assert read_all(pair.peer, 10) == b"still open"


async def test_a_failing_client_closes_its_connection(pair: Pair) -> None:
    def broken(data: bytes) -> None:
        raise RuntimeError("a bug")

    pair.client.data_received = broken  # type: ignore[method-assign]
    pair.peer.sendall(b"boom")
    await until(lambda: pair.client.lost)
    assert isinstance(pair.client.lost[0], RuntimeError)
    assert read_all(pair.peer, 1) == b""  # closed
