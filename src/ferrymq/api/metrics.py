"""``/metrics`` (the broker's EMQX-named counters) and ``/listeners``."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from ferrymq.api.context import ctx
from ferrymq.api.routes import BOOL, INT, STR, Route, arr, obj, ok

INT_MAP = {"type": "object", "additionalProperties": INT}


async def metrics(request: web.Request) -> web.Response:
    c = ctx(request)
    return ok([{"node": c.node, "metrics": dict(c.broker.metrics)}])


async def listeners(request: web.Request) -> web.Response:
    return ok([{"node": ctx(request).node, "listeners": describe_listeners(request)}])


def describe_listeners(request: web.Request) -> list[dict[str, Any]]:
    """This node's MQTT listeners in EMQX's shape."""
    c = ctx(request)
    if c.listeners is not None:
        described = c.listeners.describe()
    else:
        s = c.settings
        described = [
            {
                "protocol": "mqtt:tcp",
                "identifier": "tcp:default",
                "listen_on": addr,
                "acceptors": 1,
                "max_conns": s.max_connections,
                "current_conns": len(c.broker.connections),
                "shutdown_count": [],
                "running": True,
            }
            for addr in c.mqtt_listen
        ]
    return described


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
