"""The cluster view of the operations endpoints: a list of nodes, each answering for itself.

Handlers never read one broker directly for node-level figures: they ask
:class:`Cluster` for its nodes and merge what each answers. ``nodes()`` holds
only :class:`LocalNode` so far; remote nodes answering the same async
methods (by RPC) are a later step of cluster mode, and a node that does not
answer in time fails the request with 500 / 101 (API.md "Cluster") instead
of returning partial data.

``members()`` is every node of the cluster for ``/nodes`` and ``/brokers``:
in cluster mode the other nodes are :class:`RemoteNode`, described from the
heartbeat record each one keeps in Redis (``Peers``, which
``cluster.ClusterNode`` is), with ``node_status`` ``Stopped`` for a node
whose heartbeat expired.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from aiohttp import web

from ferrymq import __version__
from ferrymq.api.errors import RPC_ERROR, UNKNOWN_ERROR, ApiError, not_found
from ferrymq.core import system

if TYPE_CHECKING:
    from ferrymq.core.broker import Broker


class Peers(Protocol):
    """The other nodes of the cluster as their heartbeats describe them."""

    #: node name -> (alive, its last heartbeat record)
    peers: dict[str, tuple[bool, dict[str, Any]]]


T = TypeVar("T")
N = TypeVar("N", bound="LocalNode | RemoteNode")

SYSDESCR = "ferrymq MQTT broker"
RPC_TIMEOUT = 5.0


def uptime_text(seconds: float) -> str:
    """EMQX's uptime form: ``2 days, 3 hours, 0 minutes, 5 seconds`` without leading zeros."""
    s = int(seconds)
    parts = [(s // 86400, "days"), (s // 3600 % 24, "hours"), (s // 60 % 60, "minutes")]
    while parts and parts[0][0] == 0:
        parts.pop(0)
    parts.append((s % 60, "seconds"))
    return ", ".join(f"{n} {unit}" for n, unit in parts)


def kmg(n: int) -> str | int:
    """EMQX's memory figures: ``7.65G``, ``512.00M``, ``3.10K``, or bytes below 1 KiB."""
    for size, suffix in ((1 << 30, "G"), (1 << 20, "M"), (1 << 10, "K")):
        if n > size:
            return f"{n / size:.2f}{suffix}"
    return n


def _fds_and_memory() -> tuple[int, system.Memory]:
    return system.open_fds(), system.memory()


class LocalNode:
    """This process as a node of the cluster view."""

    status = "Running"  # whoever answers is running

    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self.name = broker.settings.node_name

    def uptime(self) -> str:
        return uptime_text(time.time() - self.broker.started_at)

    async def broker_info(self) -> dict[str, Any]:
        return {
            "node": self.name,
            "version": __version__,
            "sysdescr": SYSDESCR,
            "uptime": self.uptime(),
            "datetime": time.strftime("%Y-%m-%d %H:%M:%S"),
            "node_status": "Running",
            "otp_release": system.python_release(),
        }

    async def node_info(self) -> dict[str, Any]:
        broker = self.broker
        load1, load5, load15 = system.load_averages()
        # Listing the descriptors of many connections is slow: not on the event loop.
        open_fds, mem = await asyncio.get_running_loop().run_in_executor(None, _fds_and_memory)
        fds = system.max_fds()
        stats = broker.stats()
        return {
            "node": self.name,
            "node_status": "Running",
            "version": __version__,
            "otp_release": system.python_release(),
            "uptime": self.uptime(),
            "connections": stats["connections.count"],
            "live_connections": stats["live_connections.count"],
            "load1": f"{load1:.2f}",
            "load5": f"{load5:.2f}",
            "load15": f"{load15:.2f}",
            "memory_total": kmg(mem.total),
            "memory_used": kmg(mem.used),
            "process_memory": kmg(mem.rss),
            "max_fds": fds,
            # Python has no Erlang processes; a connection's cost here is its file
            # descriptor, so the descriptor limit and use stand in for them.
            "process_available": fds,
            "process_used": open_fds,
        }

    async def stats(self) -> dict[str, int]:
        return self.broker.stats()

    async def routes(self) -> list[str]:
        return self.broker.router.route_filters()

    async def has_route(self, topic: str) -> bool:
        return self.broker.router.has_route(topic)

    async def alarms(self, which: str) -> list[dict[str, Any]]:
        return self.broker.alarm_checks.alarms.listed(which)

    async def deactivate_alarm(self, name: str) -> bool:
        return self.broker.alarm_checks.alarms.deactivate(name)

    async def clear_alarm_history(self) -> None:
        self.broker.alarm_checks.alarms.clear_history()

    async def topic_metrics(self) -> dict[str, dict[str, Any]]:
        return {t: c.as_dict() for t, c in self.broker.topic_metrics.watched.items()}

    async def register_topic_metrics(self, topic: str) -> None:
        self.broker.topic_metrics.register(topic)

    async def unregister_topic_metrics(self, topic: str) -> bool:
        return self.broker.topic_metrics.unregister(topic)

    async def unregister_all_topic_metrics(self) -> None:
        self.broker.topic_metrics.unregister_all()


class RemoteNode:
    """Another node of the cluster, as its last heartbeat record describes it."""

    def __init__(self, name: str, alive: bool, record: dict[str, Any]) -> None:
        self.name = name
        self.status = "Running" if alive else "Stopped"
        self.record = record

    def uptime(self) -> str:
        r = self.record
        since = r.get("started_at")
        if since is None or self.status != "Running":
            return uptime_text(0)
        return uptime_text(r.get("heartbeat_at", time.time()) - since)

    async def broker_info(self) -> dict[str, Any]:
        r = self.record
        return {
            "node": self.name,
            "version": r.get("version", ""),
            "sysdescr": SYSDESCR,
            "uptime": self.uptime(),
            "datetime": time.strftime("%Y-%m-%d %H:%M:%S"),
            "node_status": self.status,
            "otp_release": r.get("otp_release", ""),
        }

    async def node_info(self) -> dict[str, Any]:
        r = self.record
        load = list(r.get("load") or (0.0, 0.0, 0.0))
        fds = int(r.get("max_fds", 0))
        return {
            "node": self.name,
            "node_status": self.status,
            "version": r.get("version", ""),
            "otp_release": r.get("otp_release", ""),
            "uptime": self.uptime(),
            "connections": int(r.get("connections", 0)),
            "live_connections": int(r.get("live_connections", 0)),
            "load1": f"{load[0]:.2f}",
            "load5": f"{load[1]:.2f}",
            "load15": f"{load[2]:.2f}",
            "memory_total": kmg(int(r.get("memory_total", 0))),
            "memory_used": kmg(int(r.get("memory_used", 0))),
            "process_memory": kmg(int(r.get("process_memory", 0))),
            "max_fds": fds,
            "process_available": fds,
            "process_used": int(r.get("process_used", 0)),
        }


Member = LocalNode | RemoteNode


class Cluster:
    """The nodes the API answers for: this one, and in cluster mode the others' records."""

    def __init__(self, broker: Broker, peers: Peers | None = None) -> None:
        self.local = LocalNode(broker)
        self._nodes = [self.local]
        self.peers = peers

    def members(self) -> list[Member]:
        """Every node of the cluster (this one first, then by name), for /nodes and /brokers."""
        out: list[Member] = [self.local]
        if self.peers is not None:
            for name, (alive, record) in sorted(self.peers.peers.items()):
                out.append(RemoteNode(name, alive, record))
        return out

    def member(self, name: str) -> Member:
        for node in self.members():
            if node.name == name:
                return node
        raise not_found(UNKNOWN_ERROR, f"no node named {name!r} in the cluster")

    def nodes(self) -> list[LocalNode]:
        return list(self._nodes)

    def node(self, name: str) -> LocalNode:
        for node in self._nodes:
            if node.name == name:
                return node
        raise not_found(UNKNOWN_ERROR, f"no node named {name!r} in the cluster")

    async def each(
        self, call: Callable[[N], Awaitable[T]], nodes: list[N] | None = None
    ) -> list[tuple[N, T]]:
        """``call`` on every node (of ``nodes()`` unless ``nodes`` are given) concurrently,
        in node order; 500 / 101 if one does not answer in time."""
        if nodes is None:
            nodes = self.nodes()  # type: ignore[assignment]
        assert nodes is not None
        try:
            results = await asyncio.wait_for(
                asyncio.gather(*(call(node) for node in nodes)), RPC_TIMEOUT
            )
        except TimeoutError:
            raise ApiError(500, RPC_ERROR, "a node of the cluster did not answer in time") from None
        return list(zip(nodes, results, strict=True))


CLUSTER = web.AppKey("ferrymq_cluster", Cluster)


def cluster(request: web.Request) -> Cluster:
    return request.app[CLUSTER]
