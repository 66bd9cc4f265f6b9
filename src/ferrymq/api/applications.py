"""``/apps``: the API apps themselves (EMQX 4.4's ``emqx_mgmt_api_apps``).

The same operations as ``ferrymq apps``, so the dashboard (a client of this
API) can manage them. Secrets are stored hashed: ``POST /apps`` shows the new
secret once and ``GET /apps/{appid}`` never returns it (EMQX 4.4 does). Every
change drops the cache of verified credentials, so a disabled or deleted app
is refused from its next request on.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from ferrymq.admin.apps import create_app
from ferrymq.api.context import ApiContext, ctx
from ferrymq.api.errors import BAD_PARAMETER, NO_SUCH_USER, USER_EXISTS, bad_request, not_found
from ferrymq.api.ops import strftime
from ferrymq.api.params import as_object, get_bool, get_str, paged, read_json
from ferrymq.api.routes import BOOL, STR, TIME, Route, arr, obj, ok, reply
from ferrymq.storage.store import DuplicateError

_APP = obj({"app_id": STR, "name": STR, "desc": STR, "status": BOOL, "created_at": TIME})


def _fmt(app: dict[str, Any]) -> dict[str, Any]:
    return {
        "app_id": app["app_id"],
        "name": app["name"],
        "desc": app["desc"],
        "status": app["enabled"],
        "created_at": strftime(app["created_at"]),
    }


async def _existing(c: ApiContext, app_id: str) -> dict[str, Any]:
    app = await c.store.call(c.store.get_app, app_id)
    if app is None:
        raise not_found(NO_SUCH_USER, f"app {app_id!r} does not exist")
    return app


async def list_apps(request: web.Request) -> web.Response:
    c = ctx(request)
    return reply(paged(request, await c.store.call(c.store.list_apps), _fmt))


async def add_app(request: web.Request) -> web.Response:
    c = ctx(request)
    body = as_object(await read_json(request))
    name = get_str(body, "name", empty_code=BAD_PARAMETER)
    app_id = get_str(body, "app_id", required=False)
    secret = get_str(body, "secret", required=False)
    desc = get_str(body, "desc", required=False, default="")
    enabled = get_bool(body, "status", True)
    assert name is not None and desc is not None
    try:
        app_id, secret = await c.store.call(create_app, c.store, name, app_id, secret, desc)
    except DuplicateError:
        raise bad_request(USER_EXISTS, f"app {app_id!r} already exists") from None
    except ValueError as exc:
        raise bad_request(BAD_PARAMETER, str(exc)) from None
    if not enabled:
        await c.store.call(c.store.set_app_enabled, app_id, False)
    c.auth.clear()
    return ok({"app_id": app_id, "secret": secret})


async def lookup_app(request: web.Request) -> web.Response:
    c = ctx(request)
    return ok(_fmt(await _existing(c, request.match_info["appid"])))


async def update_app(request: web.Request) -> web.Response:
    c = ctx(request)
    app_id = request.match_info["appid"]
    body = as_object(await read_json(request))
    await _existing(c, app_id)
    for key in ("name", "desc", "expired"):
        if key in body:
            raise bad_request(BAD_PARAMETER, f"{key!r} cannot be changed; only 'status' can")
    if "status" not in body:
        raise bad_request(BAD_PARAMETER, "nothing to change: give 'status'")
    if not await c.store.call(c.store.set_app_enabled, app_id, get_bool(body, "status", True)):
        raise not_found(NO_SUCH_USER, f"app {app_id!r} does not exist")
    c.auth.clear()
    return ok()


async def delete_app(request: web.Request) -> web.Response:
    c = ctx(request)
    app_id = request.match_info["appid"]
    if not await c.store.call(c.store.delete_app, app_id):
        raise not_found(NO_SUCH_USER, f"app {app_id!r} does not exist")
    c.auth.clear()
    return ok()


ROUTES = [
    Route("list_apps", "GET", "/apps", list_apps, "List API apps", data=arr(_APP), paged=True),
    Route(
        "add_app",
        "POST",
        "/apps",
        add_app,
        "Create an API app; the answer carries its secret, shown only this once",
        body=obj(
            {"name": STR, "app_id": STR, "secret": STR, "desc": STR, "status": BOOL}, ("name",)
        ),
        data=obj({"app_id": STR, "secret": STR}),
    ),
    Route(
        "lookup_app",
        "GET",
        "/apps/{appid}",
        lookup_app,
        "One API app (never its secret)",
        data=_APP,
        errors=(404,),
    ),
    Route(
        "update_app",
        "PUT",
        "/apps/{appid}",
        update_app,
        "Enable or disable an API app (status)",
        body=obj({"status": BOOL}, ("status",)),
        errors=(400, 404),
    ),
    Route("delete_app", "DELETE", "/apps/{appid}", delete_app, "Delete an API app", errors=(404,)),
]
