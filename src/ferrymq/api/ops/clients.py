"""The ``clients``, ``client``, ``by_username`` and ``kick`` operations: each node answers
for its own sessions, and formats them in the EMQX 4 shape (``/clients``)."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ferrymq.api.errors import BAD_PARAMETER, bad_request
from ferrymq.api.ops import NodeContext, node_op, strftime
from ferrymq.api.paging import window
from ferrymq.api.params import (
    Queried,
    QueryOf,
    query_bool,
    query_choice,
    query_int,
    query_time,
)

if TYPE_CHECKING:
    from ferrymq.core.session import Session


STATS = (
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


def format_client(c: NodeContext, session: Session) -> dict[str, Any]:
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
        for name in STATS:
            item[name] = getattr(client, name)
    else:
        for name in STATS:
            item[name] = 0
        item["disconnected_at"] = strftime(session.disconnected_at)
    return item


Test = Callable[["Session"], bool]


def client_filters(request: Queried) -> list[Test]:
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


@node_op("clients")
async def _clients(c: NodeContext, query: list[list[str]], start: int, limit: int) -> Any:
    q = QueryOf(query)
    tests = client_filters(q)
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


@node_op("client")
async def _client(c: NodeContext, clientid: str) -> list[dict[str, Any]]:
    session = c.broker.sessions.get(clientid)
    return [format_client(c, session)] if session is not None else []


@node_op("by_username")
async def _by_username(c: NodeContext, username: str) -> list[dict[str, Any]]:
    return [format_client(c, s) for s in c.broker.sessions.values() if _username(s) == username]


@node_op("kick")
async def _kick(c: NodeContext, clientid: str) -> bool:
    return c.broker.kick(clientid)
