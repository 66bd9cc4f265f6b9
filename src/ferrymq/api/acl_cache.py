"""``GET|DELETE /clients/{clientid}/acl_cache``: the ACL decisions cached for a connected client.

Items ``{access, topic, result}`` as EMQX 4.4's ``format_acl_cache``
(``access``: publish or subscribe, ``result``: allow or deny). A client that
is not connected: 404 / 112. In cluster mode the node holding the client
answers; the cache is that node's.
"""

from __future__ import annotations

from aiohttp import web

from ferrymq.api.context import ApiContext, ctx
from ferrymq.api.errors import CLIENT_OFFLINE, not_found
from ferrymq.api.routes import STR, Route, arr, obj, ok

_ENTRY = obj(
    {
        "access": {"type": "string", "enum": ["publish", "subscribe"]},
        "topic": STR,
        "result": {"type": "string", "enum": ["allow", "deny"]},
    }
)


def _online(c: ApiContext, request: web.Request) -> str:
    clientid = request.match_info["clientid"]
    if clientid not in c.broker.clients:
        raise not_found(CLIENT_OFFLINE, f"client {clientid!r} is not connected")
    return clientid


async def list_acl_cache(request: web.Request) -> web.Response:
    c = ctx(request)
    entries = c.broker.acl.cached(_online(c, request))
    return ok(
        [
            {"access": access, "topic": topic, "result": "allow" if allowed else "deny"}
            for access, topic, allowed in entries
        ]
    )


async def clean_acl_cache(request: web.Request) -> web.Response:
    c = ctx(request)
    c.broker.acl.forget_client(_online(c, request))
    return ok()


ROUTES = [
    Route(
        "list_acl_cache",
        "GET",
        "/clients/{clientid}/acl_cache",
        list_acl_cache,
        "The ACL decisions cached for a connected client",
        data=arr(_ENTRY),
        errors=(404,),
    ),
    Route(
        "clean_acl_cache",
        "DELETE",
        "/clients/{clientid}/acl_cache",
        clean_acl_cache,
        "Forget the ACL decisions cached for a connected client",
        errors=(404,),
    ),
]
