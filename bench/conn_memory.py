"""What one idle connection costs the broker: tracemalloc and RSS, over real TCP.

Runs a broker in this process (uvloop when installed, a real listener and
store), opens ``-n`` idle MQTT connections to it from a child process, and
prints the broker's memory per connection: Python allocations by the line
that made them (``tracemalloc``), or with ``--rss`` the growth of the
process's RSS (without tracemalloc, whose own records would count).
``make bench`` S4 measures the same from outside (RSS only); this says where
the bytes are.

    python bench/conn_memory.py -n 5000 [--top 25] [--keepalive 300] [--rss]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import subprocess
import sys
import tempfile
import tracemalloc
from pathlib import Path

from ferrymq.config import Settings
from ferrymq.core.broker import Broker
from ferrymq.server import listener_options
from ferrymq.storage.sqlite import SqliteStore
from ferrymq.transport.listeners import ListenerManager

# The child: open N connections, CONNECT on each, read every CONNACK, report, hold.
CHILD = """
import socket, sys
from ferrymq.mqtt.client import ClientConnection
port, n, keepalive = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
socks = []
for i in range(n):
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(ClientConnection(4).connect(f"idle-{i:06d}", keepalive=keepalive))
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


def rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


async def measure(n: int, top: int, keepalive: int, trace: bool) -> None:
    loop = asyncio.get_running_loop()
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(data_dir=tmp, port=0, api_port=0, dashboard_port=0, sys_interval=0)
        store = SqliteStore(settings.db_path, settings.flush_interval)
        store.open()
        broker = Broker(settings, store, loop)
        broker.load_state()
        broker.start()
        await broker.finish_restore()
        listeners = ListenerManager(broker, listener_options(settings))
        await listeners.start()
        port = listeners.listeners[0].port
        try:
            warm = await connect_idle(broker, port, 200, keepalive)  # lazily made state
            gc.collect()
            if trace:
                tracemalloc.start(1)
                before = tracemalloc.take_snapshot()
            rss0 = rss_kib()
            child = await connect_idle(broker, port, n, keepalive)
            await asyncio.sleep(0.5)
            gc.collect()
            rss1 = rss_kib()
            if trace:
                after = tracemalloc.take_snapshot()
            for proc in (child, warm):
                proc.stdin.close()  # type: ignore[union-attr]
                await loop.run_in_executor(None, proc.wait)
        finally:
            listeners.close()
            broker.shutdown()
            await listeners.wait_closed()
            store.close()
    print(f"{n} idle connections (keep alive {keepalive} s)")
    if not trace:
        print(f"RSS: {(rss1 - rss0) * 1024 / n:,.0f} B per connection ({rss0:,} -> {rss1:,} KiB)")
        return
    ignore = [tracemalloc.Filter(False, tracemalloc.__file__)]
    diff = after.filter_traces(ignore).compare_to(before.filter_traces(ignore), "lineno")
    total = sum(d.size_diff for d in diff)
    print(f"tracemalloc: {total / n:,.0f} B per connection")
    for d in diff[:top]:
        frame = d.traceback[0]
        where = f"{frame.filename.split('/site-packages/')[-1]}:{frame.lineno}"
        print(f"{d.size_diff / n:8.1f} B {d.count_diff / n:5.2f} x  {where}")


async def connect_idle(broker: Broker, port: int, n: int, keepalive: int) -> subprocess.Popen:
    """A child holding ``n`` connected clients (returned once all got their CONNACK)."""
    loop = asyncio.get_running_loop()
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(port), str(n), str(keepalive)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    line = await loop.run_in_executor(None, child.stdout.readline)  # type: ignore[union-attr]
    if line.strip() != "connected":
        raise SystemExit("the child did not connect")
    return child


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("-n", type=int, default=5000)
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--keepalive", type=int, default=300)
    ap.add_argument(
        "--rss", action="store_true", help="RSS only, without tracemalloc (which adds its own)"
    )
    args = ap.parse_args()
    try:
        import uvloop  # type: ignore[import-not-found]
    except ImportError:
        runner = asyncio.run
    else:
        runner = uvloop.run
    runner(measure(args.n, args.top, args.keepalive, not args.rss))


if __name__ == "__main__":
    main()
