"""``GET|DELETE /clients/{clientid}/acl_cache``: the ACL decisions cached for a connected client.

Items ``{access, topic, result}`` as EMQX 4.4's ``format_acl_cache``
(``access``: publish or subscribe, ``result``: allow or deny). A client that
is not connected: 404 / 112. In cluster mode the node holding the client
answers; the cache is that node's.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from ferrymq.api.cluster import cluster
from ferrymq.api.routes import STR, Route, arr, obj, ok

_ENTRY = obj(
    {
        "access": {"type": "string", "enum": ["publish", "subscribe"]},
        "topic": STR,
        "result": {"type": "string", "enum": ["allow", "deny"]},
    }
)


async def _on_holder(request: web.Request, op: str) -> Any:
    clientid = request.match_info["clientid"]
    return await cluster(request).on_holder(op, clientid, "is not connected", clientid=clientid)


async def list_acl_cache(request: web.Request) -> web.Response:
    return ok(await _on_holder(request, "acl_cache"))


async def clean_acl_cache(request: web.Request) -> web.Response:
    await _on_holder(request, "clean_acl_cache")
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
