"""The cluster view of the API: a list of nodes, each answering for itself.

Handlers never read one broker directly for what a node holds: they ask
:class:`Cluster` for its nodes (``nodes()``: every running node, in name
order, as EMQX 4.4's ``cluster_query`` walks them) and merge what each
answers. A node answers through an *operation* (``api/ops``: registered with
``@node_op(name)``, free of HTTP so that every node answers, whatever it
serves), run on this node for :class:`LocalNode` and by RPC
(``cluster/rpc.py``) on the node holding the data for :class:`RemoteNode`,
with JSON in and out. A node that does not
answer in time fails the request with 500 / 101 (API.md "Cluster"), never
partial data; an :class:`ApiError` raised by an operation on another node
reaches the asker's client as if it had been raised here.

``members()`` is every node of the cluster for ``/nodes`` and ``/brokers``,
including those whose heartbeat expired (``node_status`` ``Stopped``): the
other nodes are described from the heartbeat record each one keeps in Redis
(``Peers``, which ``cluster.ClusterNode`` is). A stopped node is not asked:
it is out of the cluster (its routes dropped, its clients gone elsewhere),
as EMQX asks only its running nodes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from aiohttp import web

from ferrymq import __version__
from ferrymq.api.errors import (
    CLIENT_OFFLINE,
    RPC_ERROR,
    UNKNOWN_ERROR,
    ApiError,
    not_found,
)
from ferrymq.api.ops import load
from ferrymq.api.paging import page_body, slices
from ferrymq.api.params import page_params
from ferrymq.core import system

if TYPE_CHECKING:
    from ferrymq.api.context import ApiContext
    from ferrymq.core.broker import Broker


class RpcLink(Protocol):
    """Requests to the other nodes (``cluster.rpc.Rpc``): ``call`` raises a
    ``TimeoutError`` when the node does not answer in time, a ``RuntimeError`` when it
    answers that the request failed."""

    handler: Callable[[str, Any], Awaitable[Any]] | None

    async def call(self, node: str, op: str, args: Any, timeout: float) -> Any: ...


class Peers(Protocol):
    """The other nodes of the cluster as their heartbeats describe them."""

    #: node name -> (alive, its last heartbeat record)
    peers: dict[str, tuple[bool, dict[str, Any]]]
    rpc: RpcLink


T = TypeVar("T")
SYSDESCR = "ferrymq MQTT broker"

#: Every operation a node answers, by name (``api/ops``).
OPS = load()


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


class _Asked:
    """What every node answers, as operations (``call``)."""

    name: str

    async def call(self, op: str, **args: Any) -> Any:
        raise NotImplementedError

    async def stats(self) -> dict[str, int]:
        return await self.call("stats")  # type: ignore[no-any-return]

    async def has_route(self, topic: str) -> bool:
        return bool(await self.call("has_route", topic=topic))

    async def alarms(self, which: str) -> list[dict[str, Any]]:
        return await self.call("alarms", which=which)  # type: ignore[no-any-return]

    async def deactivate_alarm(self, name: str) -> bool:
        return bool(await self.call("deactivate_alarm", name=name))

    async def clear_alarm_history(self) -> None:
        await self.call("clear_alarm_history")

    async def topic_metrics(self) -> dict[str, dict[str, Any]]:
        return await self.call("topic_metrics")  # type: ignore[no-any-return]

    async def register_topic_metrics(self, topic: str) -> None:
        await self.call("register_topic_metrics", topic=topic)

    async def unregister_topic_metrics(self, topic: str) -> bool:
        return bool(await self.call("unregister_topic_metrics", topic=topic))

    async def unregister_all_topic_metrics(self) -> None:
        await self.call("unregister_all_topic_metrics")


class LocalNode(_Asked):
    """This process as a node of the cluster view."""

    status = "Running"  # whoever answers is running

    def __init__(self, ctx: ApiContext) -> None:
        self.ctx = ctx
        self.broker: Broker = ctx.broker
        self.name = ctx.node

    async def call(self, op: str, **args: Any) -> Any:
        return await OPS[op](self.ctx, **args)

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


class RemoteNode(_Asked):
    """Another node of the cluster: described by its last heartbeat record, asked by RPC."""

    def __init__(
        self,
        name: str,
        alive: bool,
        record: dict[str, Any],
        rpc: RpcLink | None = None,
        timeout: float = 5.0,
    ) -> None:
        self.name = name
        self.status = "Running" if alive else "Stopped"
        self.record = record
        self.rpc = rpc
        self.timeout = timeout  # cluster_rpc_timeout

    async def call(self, op: str, **args: Any) -> Any:
        if self.rpc is None or self.status != "Running":
            raise ApiError(500, RPC_ERROR, f"node {self.name} is not running")
        try:
            answer = await self.rpc.call(self.name, op, args, self.timeout)
        except TimeoutError as exc:
            raise ApiError(500, RPC_ERROR, str(exc)) from None
        except RuntimeError as exc:
            raise ApiError(500, UNKNOWN_ERROR, f"node {self.name} failed: {exc}") from None
        if "e" in answer:
            status, code, message, data = answer["e"]
            raise ApiError(status, code, message, data)
        return answer["r"]

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
    """The nodes the API answers for: this one, and in cluster mode the others."""

    def __init__(self, ctx: ApiContext, peers: Peers | None = None) -> None:
        self.local = LocalNode(ctx)
        self.peers = peers
        #: How long another node has to answer (``cluster_rpc_timeout``).
        self.timeout: float = ctx.broker.settings.cluster_rpc_timeout

    def members(self) -> list[Member]:
        """Every node of the cluster (this one first, then by name), for /nodes and /brokers."""
        out: list[Member] = [self.local]
        if self.peers is not None:
            rpc = self.peers.rpc
            for name, (alive, record) in sorted(self.peers.peers.items()):
                out.append(RemoteNode(name, alive, record, rpc, self.timeout))
        return out

    def member(self, name: str) -> Member:
        for node in self.members():
            if node.name == name:
                return node
        raise not_found(UNKNOWN_ERROR, f"no node named {name!r} in the cluster")

    def nodes(self) -> list[Member]:
        """The running nodes, in name order (so every node pages a list the same way)."""
        running = [m for m in self.members() if m.status == "Running"]
        return sorted(running, key=lambda m: m.name)

    def node(self, name: str) -> Member:
        """A running node; 404 / 102 for a name not in the cluster, 500 / 101 for a
        stopped one (it cannot answer)."""
        node = self.member(name)
        if node.status != "Running":
            raise ApiError(500, RPC_ERROR, f"node {name} is stopped")
        return node

    def targets(self, request: web.Request) -> list[Member]:
        """The node of a ``/nodes/{node}/...`` form, else every running node."""
        name = request.match_info.get("node")
        return self.nodes() if name is None else [self.node(name)]

    async def each(
        self, call: Callable[[Member], Awaitable[T]], nodes: list[Member] | None = None
    ) -> list[tuple[Member, T]]:
        """``call`` on every node (of ``nodes()`` unless ``nodes`` are given) concurrently,
        in node order; 500 / 101 if one does not answer in time."""
        if nodes is None:
            nodes = self.nodes()
        try:
            results = await asyncio.wait_for(
                asyncio.gather(*(call(node) for node in nodes)), self.timeout + 1.0
            )
        except TimeoutError:
            raise ApiError(500, RPC_ERROR, "a node of the cluster did not answer in time") from None
        return list(zip(nodes, results, strict=True))

    async def on_holder(
        self,
        op: str,
        clientid: str,
        absent: str = "is not connected and has no session",
        /,
        **args: Any,
    ) -> Any:
        """``op`` on the node holding ``clientid``: every running node is asked, and one
        that does not hold the client answers None; 404 / 112 when none holds it. (A
        client on two nodes at once, before a takeover reached one, is acted on twice.)"""
        answers = await self.each(lambda node: node.call(op, **args))
        held = [answer for _node, answer in answers if answer is not None]
        if not held:
            raise not_found(CLIENT_OFFLINE, f"client {clientid!r} {absent}")
        return held[0]

    async def paged(self, request: web.Request, op: str, **args: Any) -> dict[str, Any]:
        """One page of a list that the target nodes hold between them (``targets``), as
        EMQX 4.4's ``cluster_query`` pages it: the nodes' items one node after another.

        ``op(**args, start, limit)`` answers ``{"count": matches, "items": [...]}``, the
        items from ``start``. A first page takes one round (every node's first items);
        a later one asks for the counts first, then each node for its part of the page.
        """
        page, limit = page_params(request)
        start = (page - 1) * limit
        nodes = self.targets(request)
        if len(nodes) == 1:
            answer = await nodes[0].call(op, **args, start=start, limit=limit)
            return page_body(page, limit, answer["count"], answer["items"])
        first = dict(
            (node.name, answer)
            for node, answer in await self.each(
                lambda node: node.call(op, **args, start=0, limit=limit if start == 0 else 0),
                nodes,
            )
        )
        counts = [first[node.name]["count"] for node in nodes]
        parts = slices(counts, start, limit)
        wanted = {node.name: part for node, part in zip(nodes, parts, strict=True) if part[1]}
        if start == 0:
            items = [i for name, (_, n) in wanted.items() for i in first[name]["items"][:n]]
        else:
            answers = await self.each(
                lambda node: node.call(
                    op, **args, start=wanted[node.name][0], limit=wanted[node.name][1]
                ),
                [node for node in nodes if node.name in wanted],
            )
            items = [i for _node, answer in answers for i in answer["items"]]
        return page_body(page, limit, sum(counts), items)


CLUSTER = web.AppKey("ferrymq_cluster", Cluster)


def cluster(request: web.Request) -> Cluster:
    return request.app[CLUSTER]


# --- the operations of the node itself -----------------------------------------------
