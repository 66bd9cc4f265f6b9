"""``/brokers``, ``/nodes``, ``/stats`` and ``/routes``: what each node of the cluster is and holds.

Shapes as EMQX 4.4's ``emqx_mgmt_api_brokers|nodes|stats|routes``: lists have
one item per node; the ``/{node}`` forms answer for one node (404 / 102 for a
name that is not in the cluster). ``/brokers`` and ``/nodes`` list every
member of the cluster (``Cluster.members``: remote ones from their heartbeat
records); ``/stats`` and ``/routes`` ask every running node (``Cluster.nodes``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from ferrymq.api.cluster import cluster
from ferrymq.api.routes import INT, STR, Route, arr, obj, ok, reply

if TYPE_CHECKING:
    pass

_BROKER = obj(
    {
        "node": STR,
        "version": STR,
        "sysdescr": STR,
        "uptime": STR,
        "datetime": STR,
        "node_status": STR,
        "otp_release": STR,
    }
)
_SIZE = {"description": "bytes, or EMQX's 1.50K / 2.00M / 3.10G form above 1 KiB"}
_NODE = obj(
    {
        "node": STR,
        "node_status": STR,
        "version": STR,
        "otp_release": STR,
        "uptime": STR,
        "connections": INT,
        "live_connections": INT,
        "load1": STR,
        "load5": STR,
        "load15": STR,
        "memory_total": _SIZE,
        "memory_used": _SIZE,
        "process_memory": _SIZE,
        "max_fds": INT,
        "process_available": INT,
        "process_used": INT,
    }
)
_STATS = {"type": "object", "additionalProperties": INT}
_ROUTE = obj({"topic": STR, "node": STR})


async def list_brokers(request: web.Request) -> web.Response:
    c = cluster(request)
    answers = await c.each(lambda node: node.broker_info(), c.members())
    return ok([info for _node, info in answers])


async def get_broker(request: web.Request) -> web.Response:
    return ok(await cluster(request).member(request.match_info["node"]).broker_info())


async def list_nodes(request: web.Request) -> web.Response:
    c = cluster(request)
    answers = await c.each(lambda node: node.node_info(), c.members())
    return ok([info for _node, info in answers])


async def get_node(request: web.Request) -> web.Response:
    return ok(await cluster(request).member(request.match_info["node"]).node_info())


async def list_stats(request: web.Request) -> web.Response:
    answers = await cluster(request).each(lambda node: node.stats())
    return ok([{"node": node.name, "stats": stats} for node, stats in answers])


async def node_stats(request: web.Request) -> web.Response:
    return ok(await cluster(request).node(request.match_info["node"]).stats())


async def list_routes(request: web.Request) -> web.Response:
    return reply(await cluster(request).paged(request, "routes"))


async def lookup_routes(request: web.Request) -> web.Response:
    topic = request.match_info["topic"]
    answers = await cluster(request).each(lambda node: node.has_route(topic))
    return ok([{"topic": topic, "node": node.name} for node, found in answers if found])


ROUTES = [
    Route(
        "list_brokers",
        "GET",
        "/brokers",
        list_brokers,
        "Every node's broker info",
        data=arr(_BROKER),
        errors=(),
    ),
    Route(
        "get_broker",
        "GET",
        "/brokers/{node}",
        get_broker,
        "One node's broker info",
        data=_BROKER,
        errors=(404,),
    ),
    Route(
        "list_nodes",
        "GET",
        "/nodes",
        list_nodes,
        "Every node with its load, memory, descriptors and connections",
        data=arr(_NODE),
        errors=(),
    ),
    Route(
        "get_node",
        "GET",
        "/nodes/{node}",
        get_node,
        "One node's load, memory and connections",
        data=_NODE,
        errors=(404,),
    ),
    Route(
        "list_stats",
        "GET",
        "/stats",
        list_stats,
        "Every node's counts (connections, sessions, topics ...) with high-water marks",
        data=arr(obj({"node": STR, "stats": _STATS})),
        errors=(),
    ),
    Route(
        "lookup_node_stats",
        "GET",
        "/nodes/{node}/stats",
        node_stats,
        "One node's counts with high-water marks",
        data=_STATS,
        errors=(404,),
    ),
    Route(
        "list_topic_routes",
        "GET",
        "/routes",
        list_routes,
        "The topic filters subscribed to, with the node holding them",
        data=arr(_ROUTE),
        paged=True,
    ),
    Route(
        "lookup_routes",
        "GET",
        "/routes/{topic:.+}",
        lookup_routes,
        "The routes of one topic filter (URL-encoded), exactly as subscribed",
        data=arr(_ROUTE),
        errors=(),
    ),
]
