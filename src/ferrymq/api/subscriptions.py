"""``/subscriptions``: every installed subscription, by client, topic, QoS and group.

Each node lists its own sessions' subscriptions (``@node_op``); in cluster mode
the lists of every running node are merged and paged as one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from ferrymq.api.cluster import cluster
from ferrymq.api.ops.subscriptions import checked_query
from ferrymq.api.params import query_pairs
from ferrymq.api.routes import INT, STR, Param, Route, arr, obj, reply

if TYPE_CHECKING:
    pass

SUBSCRIPTION_SCHEMA = obj({"node": STR, "clientid": STR, "topic": STR, "qos": INT})


async def list_subscriptions(request: web.Request) -> web.Response:
    checked_query(request)  # a bad filter is 400 here, before any node is asked
    c = cluster(request)
    return reply(await c.paged(request, "subscriptions", query=query_pairs(request)))


async def client_subscriptions(request: web.Request) -> web.Response:
    query = [("clientid", request.match_info["clientid"])]
    return reply(await cluster(request).paged(request, "subscriptions", query=query))


ROUTES = [
    Route(
        "list_subscriptions",
        "GET",
        "/subscriptions",
        list_subscriptions,
        "Subscriptions of every session",
        query=(
            Param("clientid", "string", "exact client id"),
            Param("topic", "string", "exact topic filter, as subscribed ($share/g/t for shared)"),
            Param("qos", "integer", "granted QoS"),
            Param("share", "string", "shared subscription group ($queue for $queue/...)"),
            Param("_match_topic", "string", "subscriptions whose filter matches this topic name"),
        ),
        data=arr(SUBSCRIPTION_SCHEMA),
        paged=True,
    ),
    Route(
        "lookup_client_subscriptions",
        "GET",
        "/subscriptions/{clientid}",
        client_subscriptions,
        "Subscriptions of one client (empty when unknown)",
        data=arr(SUBSCRIPTION_SCHEMA),
        paged=True,
    ),
]
