"""``/banned``: refuse client ids, usernames or peer addresses at CONNECT, for a while.

EMQX 4.4's shapes (``emqx_mgmt_api_banned``): items ``{who, as, by, reason,
at, until}`` in epoch seconds, ``until`` five minutes after ``at`` unless
given. A new ban is written to the store before it applies, then kicks the
online clients it matches (EMQX kicks only client id matches; a ban should
keep a banned user or address off, so ferrymq kicks every match).
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

from aiohttp import web

from ferrymq.api.context import ctx
from ferrymq.api.errors import (
    BAD_PARAMETER,
    MISSING_PARAMETER,
    UNKNOWN_ERROR,
    bad_request,
    not_found,
)
from ferrymq.api.params import as_object, get_int, get_str, paged, read_json
from ferrymq.api.routes import INT, STR, Route, arr, obj, ok, reply
from ferrymq.core.banned import DEFAULT_SECONDS, KINDS, Ban, kick_banned, normalize_peerhost

_MAX_TIME = 2**53  # epoch seconds; JSON-safe and far beyond any real deadline

BAN_SCHEMA = obj(
    {
        "who": STR,
        "as": {"type": "string", "enum": list(KINDS)},
        "by": STR,
        "reason": STR,
        "at": INT,
        "until": INT,
    }
)


def _kind(value: str | None) -> str:
    if value not in KINDS:
        raise bad_request(BAD_PARAMETER, "value of 'as' must be one of: " + ", ".join(KINDS))
    return value


def _who(kind: str, who: str) -> str:
    if kind != "peerhost":
        return who
    try:
        return normalize_peerhost(who)
    except ValueError:
        raise bad_request(BAD_PARAMETER, f"'who' {who!r} is not an IP address") from None


def parse_ban(body: dict[str, Any], now: int) -> Ban:
    """A ban from a request body (or an imported record) with API.md's errors."""
    if "who" not in body or "as" not in body:
        raise bad_request(MISSING_PARAMETER, "missing mandatory params: ['who', 'as']")
    kind = _kind(get_str(body, "as"))
    who = get_str(body, "who", empty_code=BAD_PARAMETER)
    assert who is not None
    at = get_int(body, "at", now, 0, _MAX_TIME)
    return Ban(
        kind,
        _who(kind, who),
        by=get_str(body, "by", required=False, default="user") or "user",
        reason=get_str(body, "reason", required=False, default="") or "",
        at=at,
        until=get_int(body, "until", at + DEFAULT_SECONDS, 0, _MAX_TIME),
    )


async def add_ban(request: web.Request, ban: Ban) -> list[str]:
    """Store ``ban``, apply it, kick the online clients it matches."""
    c = ctx(request)
    await c.store.call(c.store.put_ban, dataclasses.asdict(ban))
    c.broker.banned.put(ban)
    return kick_banned(c.broker, ban)


async def list_banned(request: web.Request) -> web.Response:
    now = time.time()
    bans = [b for b in ctx(request).broker.banned if b.active(now)]
    bans.sort(key=lambda b: (-b.at, b.kind, b.who))
    return reply(paged(request, bans, Ban.as_dict))


async def create_banned(request: web.Request) -> web.Response:
    ban = parse_ban(as_object(await read_json(request)), int(time.time()))
    await add_ban(request, ban)
    return ok(ban.as_dict())


async def delete_banned(request: web.Request) -> web.Response:
    c = ctx(request)
    kind = _kind(request.match_info["as"])
    who = _who(kind, request.match_info["who"])
    removed = c.broker.banned.remove(kind, who)
    stored = await c.store.call(c.store.delete_ban, kind, who)
    if removed is None and not stored:
        raise not_found(UNKNOWN_ERROR, f"no ban of {kind} {who!r}")
    return ok()


ROUTES = [
    Route(
        "list_banned",
        "GET",
        "/banned",
        list_banned,
        "The bans in force, newest first",
        data=arr(BAN_SCHEMA),
        paged=True,
    ),
    Route(
        "create_banned",
        "POST",
        "/banned",
        create_banned,
        "Ban a client id, username or peer address (as) from connecting until 'until'; "
        "online clients it matches are kicked",
        body=obj(BAN_SCHEMA["properties"], ("who", "as")),
        data=BAN_SCHEMA,
    ),
    Route(
        "delete_banned",
        "DELETE",
        "/banned/{as}/{who}",
        delete_banned,
        "Lift a ban; who URL-encoded",
        errors=(400, 404),
    ),
]
