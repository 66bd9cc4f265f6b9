"""What an idle MQTT connection over plain TCP costs the broker, transport included.

A plain TCP listener serves its connections on their raw sockets (transport/poller.py),
so every byte a connection costs the broker process, bar the kernel's socket, is a
Python allocation that tracemalloc sees. The clients are in a child process, so only
the broker's side is counted. ``tests/unit/core/test_connection_memory.py`` bounds the
broker's share alone; ``bench/conn_memory.py`` measures the same as RSS.
"""

from __future__ import annotations

import asyncio
import gc
import subprocess
import sys
import tracemalloc
from pathlib import Path

import pytest

from ferrymq.transport import poller
from ferrymq.transport.listeners import ListenerManager
from ferrymq.transport.options import ListenerOptions
from memory import serving, until

# Bytes per idle connection (MQTT 3.1.1, keep alive 300 s, a 13-character client id):
# about 1,500 today (500 of them); about 2,650 with uvloop's transport (1,200 of it).
BOUND = 1750
CLIENTS = 500

CHILD = """
import socket, sys
from ferrymq.mqtt.client import ClientConnection
port, first, n = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
socks = []
for i in range(first, first + n):
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(ClientConnection(4).connect(f"idle-{i:08d}", keepalive=300))
    socks.append(s)
for s in socks:
    got = b""
    while len(got) < 4:
        chunk = s.recv(4 - len(got))
        if not chunk:
            sys.exit("closed before CONNACK")
        got += chunk
print("connected", flush=True)
sys.stdin.read()
"""


async def hold_clients(port: int, first: int, n: int) -> subprocess.Popen[str]:
    """A child process holding ``n`` connected, idle clients."""
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(port), str(first), str(n)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    line = await asyncio.get_running_loop().run_in_executor(None, child.stdout.readline)
    assert line.strip() == "connected"
    return child


@pytest.mark.skipif(not poller.AVAILABLE, reason="needs select.epoll (Linux)")
async def test_an_idle_tcp_connection_costs_the_broker_little(tmp_path: Path) -> None:
    async with serving(tmp_path) as broker:
        listeners = ListenerManager(broker, [ListenerOptions("tcp", "default", "127.0.0.1", 0)])
        await listeners.start()
        port = listeners.listeners[0].port
        children = []
        try:
            children.append(await hold_clients(port, 0, 20))  # lazily made shared state
            gc.collect()
            tracemalloc.start()
            try:
                before = tracemalloc.get_traced_memory()[0]
                children.append(await hold_clients(port, 20, CLIENTS))
                await until(lambda: len(broker.clients) == CLIENTS + 20, timeout=30)
                gc.collect()
                after = tracemalloc.get_traced_memory()[0]
            finally:
                tracemalloc.stop()
            per_connection = (after - before) / CLIENTS
            assert listeners.listeners[0].current == CLIENTS + 20
            assert 500 < per_connection <= BOUND, f"{per_connection:.0f} bytes per connection"
        finally:
            for child in children:
                assert child.stdin is not None
                child.stdin.close()
                child.wait(timeout=30)
            await until(lambda: not broker.clients, timeout=30)  # each child's EOF closes its own
            listeners.close()
            await listeners.wait_closed()
