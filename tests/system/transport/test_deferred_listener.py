"""``DeferredListener``: bound at once, its server built on the first connection, on its sockets."""

from __future__ import annotations

import asyncio
import socket

import pytest

from brokers import free_port
from ferrymq.transport.deferred import DeferredListener


async def _echo_on(socks: list[socket.socket], servers: list[asyncio.Server]) -> None:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(await reader.readline())
        await writer.drain()
        writer.close()

    await asyncio.sleep(0.2)  # a slow build: the connection waits in the backlog meanwhile
    for sock in socks:
        servers.append(await asyncio.start_server(echo, sock=sock))


async def test_the_first_connection_builds_the_server_on_the_bound_sockets() -> None:
    port = free_port()
    servers: list[asyncio.Server] = []
    builds = 0

    async def build(socks: list[socket.socket]) -> None:
        nonlocal builds
        builds += 1
        await _echo_on(socks, servers)

    gate = DeferredListener("127.0.0.1", port, build)
    try:
        assert gate.addresses == [("127.0.0.1", port)]
        await asyncio.sleep(0.05)
        assert builds == 0  # nothing built while nobody connects
        replies = await asyncio.gather(*(_ask(port, f"hello {i}") for i in range(3)))
        assert replies == [f"hello {i}\n" for i in range(3)]
        assert builds == 1
        assert gate.ready().done()
    finally:
        await gate.close()
        for server in servers:
            server.close()
            await server.wait_closed()


async def _ask(port: int, text: str) -> str:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(text.encode() + b"\n")
    line = await asyncio.wait_for(reader.readline(), 5)
    writer.close()
    return line.decode()


async def test_a_port_in_use_fails_at_once_and_close_frees_an_unused_port() -> None:
    async def never(socks: list[socket.socket]) -> None:
        raise AssertionError("built")

    gate = DeferredListener("127.0.0.1", 0, never)
    port = gate.addresses[0][1]
    with pytest.raises(OSError, match=f"cannot bind 127.0.0.1:{port}"):
        DeferredListener("127.0.0.1", port, never)
    await gate.close()
    again = DeferredListener("127.0.0.1", port, never)  # the port was released
    await again.close()


async def test_a_failed_build_is_logged_and_refuses_clients_instead_of_holding_them(caplog):
    async def broken(socks: list[socket.socket]) -> None:
        raise RuntimeError("no server today")

    gate = DeferredListener("127.0.0.1", 0, broken)
    port = gate.addresses[0][1]
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            pass  # accepted by the kernel's backlog; this starts the build
        with pytest.raises(OSError):  # refused once the build has failed
            for _ in range(100):
                await asyncio.sleep(0.05)
                socket.create_connection(("127.0.0.1", port), timeout=5).close()
        assert "starting the server on" in caplog.text
        assert "no server today" in caplog.text
    finally:
        await gate.close()
