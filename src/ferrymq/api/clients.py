"""``/clients``: connected clients and offline persistent sessions, and kicking them.

Filtering runs on the live session objects and only the requested page is
formatted, so listing stays cheap with many clients. Each node answers for its
own sessions (``@node_op``); in cluster mode the lists merge every running
node's, a lookup asks them all and a kick reaches whichever node holds the
client. An offline session shows
the values of its last connection (address, protocol, keep alive, connected
at), as EMQX does, and 0 traffic.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web

from ferrymq.api.cluster import cluster
from ferrymq.api.errors import CLIENT_OFFLINE, not_found
from ferrymq.api.ops.clients import STATS, client_filters
from ferrymq.api.params import (
    query_pairs,
)
from ferrymq.api.routes import BOOL, INT, STR, TIME, Param, Route, arr, nullable, obj, ok, reply

if TYPE_CHECKING:
    pass


async def list_clients(request: web.Request) -> web.Response:
    client_filters(request)  # a bad filter is 400 here, before any node is asked
    c = cluster(request)
    return reply(await c.paged(request, "clients", query=query_pairs(request)))


async def lookup_client(request: web.Request) -> web.Response:
    clientid = request.match_info["clientid"]
    return ok(await _gathered(request, lambda node: node.call("client", clientid=clientid)))


async def lookup_by_username(request: web.Request) -> web.Response:
    username = request.match_info["username"]
    return ok(await _gathered(request, lambda node: node.call("by_username", username=username)))


async def _gathered(request: web.Request, call: Callable[[Any], Any]) -> list[Any]:
    """The lists the target nodes answer, one after another."""
    c = cluster(request)
    return [item for _node, items in await c.each(call, c.targets(request)) for item in items]


async def kick_client(request: web.Request) -> web.Response:
    clientid = request.match_info["clientid"]
    answers = await cluster(request).each(lambda node: node.call("kick", clientid=clientid))
    if not any(kicked for _node, kicked in answers):
        raise not_found(CLIENT_OFFLINE, f"client {clientid!r} is not connected and has no session")
    return ok()


CLIENT_SCHEMA = obj(
    {
        "node": STR,
        "clientid": STR,
        "username": nullable(STR),
        "proto_name": nullable(STR),
        "proto_ver": nullable(INT),
        "ip_address": nullable(STR),
        "port": nullable(INT),
        "is_bridge": BOOL,
        "connected": BOOL,
        "connected_at": nullable(TIME),
        "disconnected_at": TIME,
        "created_at": TIME,
        "zone": STR,
        "keepalive": nullable(INT),
        "clean_start": BOOL,
        "expiry_interval": INT,
        **{
            name: INT
            for name in (
                "subscriptions_cnt",
                "max_subscriptions",
                "inflight",
                "max_inflight",
                "mqueue_len",
                "max_mqueue",
                "mqueue_dropped",
                "awaiting_rel",
                "max_awaiting_rel",
                *STATS,
                "mailbox_len",
                "heap_size",
                "reductions",
            )
        },
    }
)

_QUERY = (
    Param("clientid", "string", "exact client id (repeat it to match any of several)"),
    Param("username", "string", "exact username (repeat it to match any of several)"),
    Param("ip_address", "string", "peer address (of the last connection when offline)"),
    Param("zone", "string", "the zone of the client's listener"),
    Param("conn_state", "string", "connection state", ("connected", "disconnected")),
    Param("clean_start", "boolean", "clean start / clean session flag"),
    Param("proto_name", "string", "protocol name (MQTT, MQIsdp)"),
    Param("proto_ver", "integer", "protocol level (3, 4, 5)"),
    Param("_like_clientid", "string", "client id contains"),
    Param("_like_username", "string", "username contains"),
    Param("_gte_created_at", "number", "session created at or after (epoch seconds)"),
    Param("_lte_created_at", "number", "session created at or before (epoch seconds)"),
    Param("_gte_connected_at", "number", "connected at or after (epoch seconds)"),
    Param("_lte_connected_at", "number", "connected at or before (epoch seconds)"),
    Param("_gte_mqueue_len", "integer", "at least this many queued messages"),
    Param("_lte_mqueue_len", "integer", "at most this many queued messages"),
    Param("_gte_mqueue_dropped", "integer", "at least this many messages dropped from the queue"),
    Param("_lte_mqueue_dropped", "integer", "at most this many messages dropped from the queue"),
)

ROUTES = [
    Route(
        "list_clients",
        "GET",
        "/clients",
        list_clients,
        "Connected clients and offline persistent sessions",
        query=_QUERY,
        data=arr(CLIENT_SCHEMA),
        paged=True,
    ),
    Route(
        "lookup_client",
        "GET",
        "/clients/{clientid}",
        lookup_client,
        "One client (an empty list when unknown)",
        data=arr(CLIENT_SCHEMA),
        errors=(),
    ),
    Route(
        "lookup_client_via_username",
        "GET",
        "/clients/username/{username}",
        lookup_by_username,
        "The clients (and offline sessions) with this username",
        data=arr(CLIENT_SCHEMA),
        errors=(),
    ),
    Route(
        "kickout_client",
        "DELETE",
        "/clients/{clientid}",
        kick_client,
        "Disconnect the client and discard its session; its will is published",
        errors=(404,),
    ),
]
