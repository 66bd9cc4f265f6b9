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

import ipaddress
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web

from ferrymq.api.cluster import cluster, node_op
from ferrymq.api.context import ApiContext, strftime
from ferrymq.api.errors import BAD_PARAMETER, CLIENT_OFFLINE, bad_request, not_found
from ferrymq.api.paging import window
from ferrymq.api.params import (
    Queried,
    QueryOf,
    query_bool,
    query_choice,
    query_int,
    query_pairs,
    query_time,
)
from ferrymq.api.routes import BOOL, INT, STR, TIME, Param, Route, arr, nullable, obj, ok, reply

if TYPE_CHECKING:
    from ferrymq.core.session import Session

_STATS = (
    "recv_oct",
    "recv_cnt",
    "recv_pkt",
    "recv_msg",
    "send_oct",
    "send_cnt",
    "send_pkt",
    "send_msg",
)


def _conn(session: Session) -> dict[str, Any]:
    """The values of the session's connection, or of its last one when offline."""
    client = session.client
    if client is not None:
        return client.connection_info()
    return session.last_conn or _NO_CONN


_NO_CONN: dict[str, Any] = {
    "ip_address": None,
    "port": None,
    "proto_name": None,
    "proto_ver": None,
    "keepalive": None,
    "connected_at": None,
    "clean_start": None,
    "zone": "default",
}


def format_client(c: ApiContext, session: Session) -> dict[str, Any]:
    """One client in the EMQX 4 shape."""
    settings = c.settings
    client = session.client
    online = client is not None and client.connected
    conn = _conn(session)
    item: dict[str, Any] = {
        "node": c.node,
        "clientid": session.client_id,
        "username": client.username if client is not None else session.username,
        "proto_name": conn["proto_name"],
        "proto_ver": conn["proto_ver"],
        "ip_address": conn["ip_address"],
        "port": conn["port"],
        "is_bridge": False,
        "connected": online,
        "connected_at": strftime(conn["connected_at"]),
        "created_at": strftime(session.created_at),
        "zone": conn["zone"],
        "keepalive": conn["keepalive"],
        "clean_start": _clean_start(session),
        "expiry_interval": session.expiry_interval,
        "subscriptions_cnt": len(session.subscriptions),
        "max_subscriptions": settings.max_subscriptions,
        "inflight": len(session.inflight),
        "max_inflight": settings.max_inflight,
        "mqueue_len": len(session.queue),
        "max_mqueue": settings.max_mqueue_len,
        "mqueue_dropped": session.dropped,
        "awaiting_rel": len(session.awaiting_rel),
        "max_awaiting_rel": settings.max_awaiting_rel,
        "mailbox_len": 0,
        "heap_size": 0,
        "reductions": 0,
    }
    if client is not None:
        item["max_inflight"] = client.send_window
        # Packets written but not yet flushed: the closest to a mailbox.
        item["mailbox_len"] = len(client.out)
        for name in _STATS:
            item[name] = getattr(client, name)
    else:
        for name in _STATS:
            item[name] = 0
        item["disconnected_at"] = strftime(session.disconnected_at)
    return item


Test = Callable[["Session"], bool]


def _filters(request: Queried) -> list[Test]:
    """The filters of API.md as predicates on sessions (validated up front)."""
    q = request.query
    tests: list[Test] = []
    usernames = q.getall("username", [])
    if usernames:
        tests.append(lambda s: _username(s) in usernames)
    ip = q.get("ip_address")
    if ip is not None:
        try:
            ip = str(ipaddress.ip_address(ip))
        except ValueError:
            raise bad_request(BAD_PARAMETER, "ip_address must be an IP address") from None
        tests.append(lambda s: _conn(s)["ip_address"] == ip)
    zone = q.get("zone")
    if zone is not None:
        tests.append(lambda s: _conn(s)["zone"] == zone)
    state = query_choice(request, "conn_state", ("connected", "disconnected"))
    if state is not None:
        want = state == "connected"
        tests.append(lambda s: (s.client is not None and s.client.connected) == want)
    clean = query_bool(request, "clean_start")
    if clean is not None:
        tests.append(lambda s: _clean_start(s) == clean)
    proto_name = q.get("proto_name")
    if proto_name is not None:
        tests.append(lambda s: _conn(s)["proto_name"] == proto_name)
    proto_ver = query_int(request, "proto_ver")
    if proto_ver is not None:
        tests.append(lambda s: _conn(s)["proto_ver"] == proto_ver)
    like_id = q.get("_like_clientid")
    if like_id is not None:
        tests.append(lambda s: like_id in s.client_id)
    like_user = q.get("_like_username")
    if like_user is not None:
        tests.append(lambda s: like_user in (_username(s) or ""))
    for name, getter, parse in _RANGES:
        for prefix, ge in (("_gte_", True), ("_lte_", False)):
            bound = parse(request, prefix + name)
            if bound is not None:
                tests.append(_bound_test(getter, bound, ge))
    return tests


def _bound_test(getter: Callable[[Session], float | None], bound: float, ge: bool) -> Test:
    if ge:
        return lambda s: (v := getter(s)) is not None and v >= bound
    return lambda s: (v := getter(s)) is not None and v <= bound


def _username(s: Session) -> str | None:
    return s.client.username if s.client is not None else s.username


def _clean_start(s: Session) -> bool:
    clean = _conn(s)["clean_start"]
    return s.expiry_interval == 0 if clean is None else clean


def _created_at(s: Session) -> int:
    # Times are shown with second precision; compared on whole seconds too.
    return int(s.created_at)


def _connected_at(s: Session) -> int | None:
    t = _conn(s)["connected_at"]
    return int(t) if t else None


# The _gte_/_lte_ filters: field, value of a session, parser of the bound.
_RANGES: tuple[tuple[str, Callable[[Session], float | None], Callable[..., Any]], ...] = (
    ("created_at", _created_at, query_time),
    ("connected_at", _connected_at, query_time),
    ("mqueue_len", lambda s: len(s.queue), query_int),
    ("mqueue_dropped", lambda s: s.dropped, query_int),
)


async def list_clients(request: web.Request) -> web.Response:
    _filters(request)  # a bad filter is 400 here, before any node is asked
    c = cluster(request)
    return reply(await c.paged(request, "clients", query=query_pairs(request)))


@node_op("clients")
async def _clients(c: ApiContext, query: list[list[str]], start: int, limit: int) -> Any:
    q = QueryOf(query)
    tests = _filters(q)
    sessions = c.broker.sessions
    clientids = q.query.getall("clientid", [])
    candidates: list[Session]
    if clientids:
        found = (sessions.get(cid) for cid in dict.fromkeys(clientids))
        candidates = [s for s in found if s is not None]
    else:
        candidates = list(sessions.values())
    if tests:
        candidates = [s for s in candidates if all(t(s) for t in tests)]
    return window(candidates, start, limit, lambda s: format_client(c, s))


async def lookup_client(request: web.Request) -> web.Response:
    clientid = request.match_info["clientid"]
    return ok(await _gathered(request, lambda node: node.call("client", clientid=clientid)))


@node_op("client")
async def _client(c: ApiContext, clientid: str) -> list[dict[str, Any]]:
    session = c.broker.sessions.get(clientid)
    return [format_client(c, session)] if session is not None else []


async def lookup_by_username(request: web.Request) -> web.Response:
    username = request.match_info["username"]
    return ok(await _gathered(request, lambda node: node.call("by_username", username=username)))


@node_op("by_username")
async def _by_username(c: ApiContext, username: str) -> list[dict[str, Any]]:
    return [format_client(c, s) for s in c.broker.sessions.values() if _username(s) == username]


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


@node_op("kick")
async def _kick(c: ApiContext, clientid: str) -> bool:
    return c.broker.kick(clientid)


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
                *_STATS,
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
