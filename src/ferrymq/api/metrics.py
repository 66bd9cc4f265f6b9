"""``/metrics`` (the broker's EMQX-named counters) and ``/listeners``: one entry per
running node of the cluster, each answering for itself (``@node_op``)."""

from __future__ import annotations

from aiohttp import web

from ferrymq.api.cluster import cluster
from ferrymq.api.routes import BOOL, INT, STR, Route, arr, obj, ok

INT_MAP = {"type": "object", "additionalProperties": INT}


async def metrics(request: web.Request) -> web.Response:
    answers = await cluster(request).each(lambda node: node.call("metrics"))
    return ok([{"node": node.name, "metrics": counters} for node, counters in answers])


async def listeners(request: web.Request) -> web.Response:
    answers = await cluster(request).each(lambda node: node.call("listeners"))
    return ok([{"node": node.name, "listeners": listed} for node, listed in answers])


LISTENER = obj(
    {
        "protocol": STR,
        "identifier": STR,
        "listen_on": STR,
        "acceptors": INT,
        "max_conns": INT,
        "current_conns": INT,
        "shutdown_count": arr({}),
        "running": BOOL,
    }
)

ROUTES = [
    Route(
        "get_metrics",
        "GET",
        "/metrics",
        metrics,
        "The broker's counters, with the EMQX metric names",
        data=arr(obj({"node": STR, "metrics": INT_MAP})),
        errors=(),
    ),
    Route(
        "post_metrics",
        "POST",
        "/metrics",
        metrics,
        "The same as GET /metrics",
        data=arr(obj({"node": STR, "metrics": INT_MAP})),
        errors=(),
    ),
    Route(
        "list_listeners",
        "GET",
        "/listeners",
        listeners,
        "The MQTT listeners with their current connection counts",
        data=arr(obj({"node": STR, "listeners": arr(LISTENER)})),
        errors=(),
    ),
]
