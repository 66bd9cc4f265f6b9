"""Wire the parts together and run until SIGINT/SIGTERM: store, broker, API, dashboard,
listeners."""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import sys

from ferrymq.api.app import ApiServer, start_api
from ferrymq.config import Settings
from ferrymq.core.broker import Broker
from ferrymq.dashboard.server import DashboardServer, start_dashboard
from ferrymq.storage.sqlite import SqliteStore
from ferrymq.transport.listeners import ListenerManager

log = logging.getLogger("ferrymq")


async def serve(settings: Settings) -> None:
    """Run the broker until a stop signal; then shut down cleanly."""
    loop = asyncio.get_running_loop()
    store = SqliteStore(settings.db_path, settings.flush_interval)
    store.open()
    broker = Broker(settings, store, loop)
    listeners: ListenerManager | None = None
    api: ApiServer | None = None
    dashboard: DashboardServer | None = None
    try:
        broker.load_state()
        broker.start()
        api = await start_api(broker)
        dashboard = await start_dashboard(broker, api)
        listeners = ListenerManager(broker, settings.effective_listeners())
        await listeners.start()
        broker.listeners = listeners  # type: ignore[attr-defined]  # GET /api/v4/listeners
        if api is not None:
            api.lifecycle.state = "running"
        _tune_gc()
        if not settings.anonymous_allowed():
            log.info("anonymous clients are refused (allow_anonymous is off)")
        stop = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        log.info("shutting down")
    finally:
        if dashboard is not None:
            await dashboard.stop()
        if api is not None:
            api.lifecycle.state = "stopping"
            await api.stop()
        if listeners is not None:
            listeners.close()
        broker.shutdown()
        await asyncio.sleep(0.05)  # let transports write their last bytes
        if listeners is not None:
            await listeners.wait_closed()
        store.close()
        log.info("stopped")


def _tune_gc() -> None:
    """Collect garbage rarely: the message path allocates many short-lived objects but
    makes no reference cycles, so frequent young-generation passes only cost CPU and
    add pauses to delivery latency. Objects alive after start-up are frozen out of it."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(100_000, 50, 100)


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
