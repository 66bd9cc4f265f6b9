"""Wire the parts together and run until SIGINT/SIGTERM: store, broker, listeners,
API, dashboard.

In cluster mode (``cluster_redis_url``) the broker is ``cluster.ClusterBroker``
and its node joins the cluster once the state is back; without it nothing of
``cluster/`` (nor Redis' client) is even imported.

Start-up is ordered for a short restart: the sessions (without their
messages), then the MQTT listeners, then the rest of the state in the
background (``Broker.finish_restore``: the sessions' messages, which a client
resuming a stored session waits for, then the retained messages). The
management API's and the dashboard's ports are bound once the sessions are
complete, but their aiohttp servers, which cost more memory and import time
than all the rest, are imported (on a thread) and built only when the first
client connects to either (``Management``), also in cluster mode: the other
nodes' API requests are answered by ``api/ops``, without HTTP, even on a node
with neither port. A broker nobody manages stays at the memory of its MQTT
side. The garbage collector is off until the restore
is done, as it would only walk the objects being restored.
"""

from __future__ import annotations

import asyncio
import functools
import gc
import importlib
import logging
import signal
import socket
import sys
from typing import TYPE_CHECKING

from ferrymq import eventloop, native
from ferrymq.admin.apps import bootstrap_apps
from ferrymq.admin.store import admin_store
from ferrymq.api.ops import NodeContext, answer
from ferrymq.api.ops import load as load_ops
from ferrymq.api.parts import BASE, ApiParts, urls
from ferrymq.config import LISTENER_PORTS, ConfigError, ListenerSettings, Settings
from ferrymq.core.broker import Broker
from ferrymq.dashboard.users import bootstrap_admin
from ferrymq.storage.sqlite import SqliteStore
from ferrymq.transport import descriptors
from ferrymq.transport.deferred import DeferredListener
from ferrymq.transport.listeners import ListenerManager
from ferrymq.transport.options import ListenerOptions

if TYPE_CHECKING:
    from ferrymq.api.app import ApiServer
    from ferrymq.cluster.broker import ClusterBroker
    from ferrymq.cluster.node import ClusterNode
    from ferrymq.dashboard.server import DashboardServer

log = logging.getLogger("ferrymq")
api_log = logging.getLogger("ferrymq.api")  # the names these lines have always had
dashboard_log = logging.getLogger("ferrymq.dashboard")


async def serve(settings: Settings) -> None:
    """Run the broker until a stop signal; then shut down cleanly."""
    loop = asyncio.get_running_loop()
    log.info("ferrymq %s", native.SUMMARY)  # compiled or pure Python (FERRYMQ_PURE_PYTHON)
    gc.disable()  # until _tune_gc: loading creates many objects and no garbage
    descriptors.TABLE.reserve(descriptors.START_SLOTS)  # before the store's thread: no RCU wait
    store = SqliteStore(
        settings.db_path, settings.flush_interval, synchronous=settings.db_synchronous
    )
    store.open()
    node: ClusterNode | None = None
    clustered: ClusterBroker | None = None
    if settings.cluster_redis_url:
        from ferrymq.cluster.broker import clustered_broker

        try:
            clustered = clustered_broker(settings, store, loop)
        except ConfigError:  # a malformed cluster_redis_url: nothing started yet
            store.close()
            raise
        broker: Broker = clustered
        node = clustered.node
    else:
        broker = Broker(settings, store, loop)
    listeners: ListenerManager | None = None
    restore: asyncio.Task[None] | None = None
    management: Management | None = None
    try:
        broker.load_state()
        broker.start()
        listeners = ListenerManager(broker, listener_options(settings))
        await listeners.start()
        broker.alarm_checks.listeners = listeners  # each listener's max_connections alarm
        sessions_back: asyncio.Future[None] = loop.create_future()
        restore = asyncio.create_task(broker.finish_restore(sessions_back))
        stop = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await asyncio.wait((sessions_back, restore), return_when=asyncio.FIRST_COMPLETED)
        management = Management(broker, listeners, node)
        management.start()
        if clustered is not None and clustered.admin is not None and management.parts:
            # Admin edits taken in from other nodes: the API's caches must not undo them.
            clustered.admin.on_taken_in.append(management.parts.sync.written_elsewhere)
        if node is not None:
            answer_requests(node, broker, listeners)
        if not settings.anonymous_allowed():
            log.info("anonymous clients are refused (allow_anonymous is off)")
        await restore
        if node is not None:
            node.start()  # joins in the background; clients are served meanwhile
        management.running()  # GET /status: 200 from now on
        _tune_gc(loop)
        await stop.wait()
        log.info("shutting down")
    finally:
        if restore is not None and not restore.done():
            restore.cancel()  # what it had not restored yet is still in the database
        if management is not None:
            await management.stop()
        if listeners is not None:
            listeners.close()
        kicked = bool(broker.connections)
        broker.shutdown()
        if kicked:
            await asyncio.sleep(0.05)  # let the kicked clients' transports write their last bytes
        if node is not None:
            # After the kicks: their wills go out to the other nodes too; then it leaves
            # the cluster and the others stop forwarding here.
            await node.stop()
        if listeners is not None:
            await listeners.wait_closed()
        store.close()
        log.info("stopped")


class Management:
    """The management API and the dashboard: their ports bound, their URLs logged, their
    first credentials created and the data directory watched from the start; their aiohttp
    servers imported and built on the first connection to either (``DeferredListener``)."""

    def __init__(
        self, broker: Broker, listeners: ListenerManager, peers: ClusterNode | None = None
    ) -> None:
        self.broker = broker
        self.listeners = listeners
        self.peers = peers
        self.parts: ApiParts | None = None  # the API's, else the dashboard's alone
        self.api: ApiServer | None = None
        self.dashboard: DashboardServer | None = None
        self._api_port: DeferredListener | None = None
        self._dashboard_port: DeferredListener | None = None

    def start(self) -> None:
        """Bind (a port in use fails the start, as it always has) and log; in the event loop."""
        s = self.broker.settings
        store = admin_store(self.broker)
        if not s.api_port:
            api_log.info("management API disabled (api_port = 0)")
        else:
            bootstrap_apps(store, s)
            self.parts = ApiParts.start(self.broker)
            self._api_port = DeferredListener(s.api_bind, s.api_port, self._serve_api)
            scheme = "https" if self.parts.context else "http"
            for url in urls(scheme, self._api_port.addresses, BASE):
                api_log.info("management API on %s", url)
        if not s.dashboard_port:
            dashboard_log.info("dashboard disabled (dashboard_port = 0)")
            return
        bootstrap_admin(store, s)
        self._dashboard_port = DeferredListener(
            s.dashboard_bind, s.dashboard_port, self._serve_dashboard
        )
        if self.parts is None:  # no API: the dashboard watches and reports /status itself
            self.parts = ApiParts.start(self.broker, api=False)
            self.parts.lifecycle.state = "running"
        for url in urls("http", self._dashboard_port.addresses, "/"):
            dashboard_log.info("dashboard on %s", url)

    def running(self) -> None:
        if self._api_port is not None and self.parts is not None:
            self.parts.lifecycle.state = "running"

    async def _serve_api(self, socks: list[socket.socket]) -> None:
        # Imported on a thread: the loop keeps serving MQTT clients meanwhile.
        loop = asyncio.get_running_loop()
        app = await loop.run_in_executor(None, importlib.import_module, "ferrymq.api.app")
        api = app.ApiServer(
            self.broker, listeners=self.listeners, peers=self.peers, parts=self.parts
        )
        await api.start(socks)
        self.api = api

    async def _serve_dashboard(self, socks: list[socket.socket]) -> None:
        if self._api_port is not None:
            await self._api_port.ready()  # the dashboard shares the API's context
        loop = asyncio.get_running_loop()
        board = await loop.run_in_executor(
            None, importlib.import_module, "ferrymq.dashboard.server"
        )
        parts = None if self.api is not None else self.parts
        dashboard = board.DashboardServer(
            self.broker, self.api, self.listeners, peers=self.peers, parts=parts
        )
        await dashboard.start(socks)
        self.dashboard = dashboard

    async def stop(self) -> None:
        for port in (self._dashboard_port, self._api_port):
            if port is not None:
                await port.close()
        if self.dashboard is not None:
            await self.dashboard.stop()
        if self.parts is not None:
            self.parts.lifecycle.state = "stopping"
        if self.api is not None:
            await self.api.stop()
        if self.parts is not None:
            await self.parts.sync.stop()  # when no server was built (else a no-op now)


def answer_requests(node: ClusterNode, broker: Broker, listeners: ListenerManager) -> None:
    """Answer the other nodes' API requests (``api/ops``), whatever this node serves:
    without the HTTP servers, which are built only when someone connects to them."""
    ctx = NodeContext(broker, listeners=listeners)
    load_ops()
    node.rpc.handler = functools.partial(answer, ctx)


def listener_options(settings: Settings) -> list[ListenerOptions]:
    """The listeners to open, translated from the configuration into the transport's terms."""
    return [listener_option(spec) for spec in settings.effective_listeners()]


def listener_option(spec: ListenerSettings) -> ListenerOptions:
    """One ``[[listeners]]`` table as the transport's ``ListenerOptions`` (port resolved)."""
    return ListenerOptions(
        kind=spec.kind,
        name=spec.name,
        bind=spec.bind,
        port=LISTENER_PORTS[spec.kind] if spec.port is None else spec.port,
        tls=spec.tls,
        websocket=spec.websocket,
        zone=spec.zone,
        max_connections=spec.max_connections,
        max_conn_rate=spec.max_conn_rate,
        proxy_protocol=spec.proxy_protocol,
        certfile=spec.certfile,
        keyfile=spec.keyfile,
        cafile=spec.cafile,
        verify_peer=spec.verify_peer,
        fail_if_no_peer_cert=spec.fail_if_no_peer_cert,
        peer_cert_as_username=spec.peer_cert_as_username,
        peer_cert_as_clientid=spec.peer_cert_as_clientid,
        path=spec.path,
        proxy_header=spec.proxy_header,
    )


# Young-generation threshold: a pass costs about 0.25 µs per young object, so a
# few thousand keep each pause well under a millisecond.
YOUNG_THRESHOLD = 2_000
FULL_COLLECT_INTERVAL = 600.0  # seconds between passes over everything (cycles among old)


def _tune_gc(loop: asyncio.AbstractEventLoop) -> None:
    """Keep collector pauses short however much the broker holds. What survives a
    young pass (connections, sessions, retained and queued messages) is long-lived
    state, which the broker frees by reference counting, not through cycles: it is
    frozen out of the collector at the end of every pass (``gc.freeze`` is O(1)),
    so no pass ever walks the whole connection table again (before, a pass over
    the 100,000 objects of 10,000 new connections paused the loop for 20-50 ms).
    Cycles among young objects (tracebacks, callbacks) are still collected; those
    among old ones are left for a full pass every ``FULL_COLLECT_INTERVAL``."""
    gc.collect()  # the cycles start-up left (the collector was off while loading)
    gc.callbacks.append(_freeze_survivors)
    gc.freeze()  # the state loaded at start
    gc.set_threshold(YOUNG_THRESHOLD, 10, 10)
    gc.enable()
    loop.call_later(FULL_COLLECT_INTERVAL, _collect_everything, loop)


def _freeze_survivors(phase: str, info: dict[str, int]) -> None:
    if phase == "stop":
        gc.freeze()


def _collect_everything(loop: asyncio.AbstractEventLoop) -> None:
    gc.unfreeze()
    found = gc.collect()  # frozen again by _freeze_survivors
    _trim_heap()
    if found:
        log.debug("collector: %d unreachable objects among the old ones", found)
    loop.call_later(FULL_COLLECT_INTERVAL, _collect_everything, loop)


def _trim_heap() -> None:
    """Give the free pages of the C heap back to the system (glibc's ``malloc_trim``), which
    glibc keeps otherwise: after a burst of large allocations, many. Not at start: with the
    modules' bytecode cached, start-up leaves fewer free pages than ctypes, which the call
    needs, costs (0.2 MiB more RSS with the trim). A no-op where there is no glibc."""
    try:
        import ctypes

        ctypes.CDLL(None).malloc_trim(0)
    except (ImportError, OSError, AttributeError):  # pragma: no cover - not glibc
        pass


def run(settings: Settings) -> int:
    try:
        eventloop.runner()(serve(settings))
    except (OSError, ConfigError) as exc:  # ConfigError: a check made at start (Redis URL)
        log.error("cannot start: %s", exc)
        print(f"ferrymq: cannot start: {exc}", file=sys.stderr)
        return 1
    return 0
