"""Wire the parts together and run until SIGINT/SIGTERM: store, broker, listeners."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys

from ferrymq import __version__
from ferrymq.config import Settings
from ferrymq.core.broker import Broker
from ferrymq.storage.sqlite import SqliteStore
from ferrymq.transport.tcp import start_tcp_listener

log = logging.getLogger("ferrymq")


async def serve(settings: Settings) -> None:
    """Run the broker until a stop signal; then shut down cleanly."""
    loop = asyncio.get_running_loop()
    store = SqliteStore(settings.db_path, settings.flush_interval)
    store.open()
    broker = Broker(settings, store, loop)
    servers: list[asyncio.Server] = []
    try:
        broker.load_state()
        broker.start()
        server = await start_tcp_listener(broker, settings.bind, settings.port)
        servers.append(server)
        for sock in server.sockets:
            host, port = sock.getsockname()[:2]
            log.info("ferrymq %s: MQTT listener tcp://%s:%s", __version__, host, port)
        if not settings.anonymous_allowed():
            log.info("anonymous clients are refused (allow_anonymous is off)")
        stop = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        log.info("shutting down")
    finally:
        for server in servers:
            server.close()
        broker.shutdown()
        await asyncio.sleep(0.05)  # let transports write their last bytes
        store.close()
        log.info("stopped")


def run(settings: Settings) -> int:
    try:
        import uvloop  # type: ignore[import-not-found]
    except ImportError:  # pragma: no cover - platforms without uvloop
        runner = asyncio.run
    else:
        runner = uvloop.run
    try:
        runner(serve(settings))
    except OSError as exc:
        log.error("cannot start: %s", exc)
        print(f"ferrymq: cannot start: {exc}", file=sys.stderr)
        return 1
    return 0
