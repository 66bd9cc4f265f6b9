"""``/nodes/{node}/...``: the per-node forms of clients, subscriptions, metrics and
listeners (EMQX 4.4's shapes), for the node named, asked by RPC when it is another
one. (``/nodes/{node}/stats`` belongs to the operations endpoints.)

The list forms answer exactly as their cluster-wide routes do; ``metrics`` is
the node's map itself and ``listeners`` its list, as in EMQX. A name that is
not in the cluster is 404 / 102, a stopped node 500 / 101.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from ferrymq.api import clients, subscriptions
from ferrymq.api.cluster import cluster
from ferrymq.api.metrics import INT_MAP, LISTENER
from ferrymq.api.routes import Route, arr, ok


async def node_metrics(request: web.Request) -> web.Response:
    return ok(await cluster(request).node(request.match_info["node"]).call("metrics"))


async def node_listeners(request: web.Request) -> web.Response:
    return ok(await cluster(request).node(request.match_info["node"]).call("listeners"))


def _node_form(route: Route, name: str | None = None, **changes: Any) -> Route:
    fields: dict[str, Any] = {
        "name": name or f"node_{route.name}",
        "method": route.method,
        "path": "/nodes/{node}" + route.path,
        "handler": route.handler,  # it asks the node of the path (``Cluster.targets``)
        "descr": f"{route.descr}, on one node",
        "query": route.query,
        "body": route.body,
        "data": route.data,
        "paged": route.paged,
        "errors": tuple(sorted({*route.errors, 404})),
    }
    fields.update(changes)
    return Route(**fields)


_BY_NAME = {r.name: r for r in clients.ROUTES + subscriptions.ROUTES}

ROUTES = [
    *(
        _node_form(_BY_NAME[name])
        for name in (
            "list_clients",
            "lookup_client",
            "lookup_client_via_username",
            "list_subscriptions",
            "lookup_client_subscriptions",
        )
    ),
    Route(
        "node_metrics",
        "GET",
        "/nodes/{node}/metrics",
        node_metrics,
        "The node's counters, with the EMQX metric names",
        data=INT_MAP,
        errors=(404,),
    ),
    Route(
        "node_listeners",
        "GET",
        "/nodes/{node}/listeners",
        node_listeners,
        "The node's MQTT listeners",
        data=arr(LISTENER),
        errors=(404,),
    ),
]
