"""The API server: the aiohttp application, its two middlewares and its lifecycle.

It runs on the broker's own event loop and reads the broker's live objects
directly; nothing in here runs on the message path. Middlewares (outermost
first): the error envelope, then app authentication.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from typing import TYPE_CHECKING

from aiohttp import web
from aiohttp.typedefs import Middleware

from ferrymq.api import (
    acl,
    acl_cache,
    alarms,
    applications,
    authdata,
    banned,
    clients,
    data,
    metrics,
    mqtt,
    nodes,
    prometheus,
    retained,
    status,
    subscriptions,
    topic_metrics,
)
from ferrymq.api.apps import bootstrap_apps
from ferrymq.api.auth import AppAuth
from ferrymq.api.cluster import CLUSTER, Cluster
from ferrymq.api.context import CTX, ApiContext, ctx
from ferrymq.api.errors import BAD_CREDENTIALS, BAD_PARAMETER, UNKNOWN_ERROR, ApiError
from ferrymq.api.openapi import build_openapi
from ferrymq.api.routes import BASE, STR, Handler, Route, arr, obj, ok, reply
from ferrymq.api.sync import AccessSync

if TYPE_CHECKING:
    from ferrymq.core.broker import Broker

log = logging.getLogger("ferrymq.api")

OPENAPI_KEY = web.AppKey("openapi", dict)


async def index(request: web.Request) -> web.Response:
    routes = ctx(request).routes
    return ok(
        [{"name": r.name, "method": r.method, "path": r.doc_path, "descr": r.descr} for r in routes]
    )


async def openapi(request: web.Request) -> web.Response:
    return reply(request.app[OPENAPI_KEY])


_ROOT = [
    Route(
        "list_routes",
        "GET",
        "/",
        index,
        "Every route of the API",
        data=arr(obj({"name": STR, "method": STR, "path": STR, "descr": STR})),
        errors=(),
    ),
    Route(
        "openapi",
        "GET",
        "/openapi.json",
        openapi,
        "This API's OpenAPI 3 document (no credentials needed)",
        data={"type": "object", "description": "an OpenAPI 3 document"},
        public=True,
        envelope=False,
        errors=(),
    ),
]


def all_routes() -> list[Route]:
    return [
        *_ROOT,
        *clients.ROUTES,
        *subscriptions.ROUTES,
        *mqtt.ROUTES,
        *authdata.ROUTES,
        *acl.ROUTES,
        *metrics.ROUTES,
        *nodes.ROUTES,
        *retained.ROUTES,
        *banned.ROUTES,
        *alarms.ROUTES,
        *acl_cache.ROUTES,
        *topic_metrics.ROUTES,
        *prometheus.ROUTES,
        *data.ROUTES,
        *applications.ROUTES,
    ]


_HTTP_MESSAGES = {
    404: "no such path",
    405: "method not allowed",
    413: "request body too large",
}


def _envelope_middleware(max_body: int) -> Middleware:
    @web.middleware
    async def envelope(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except ApiError as exc:
            return reply(exc.body(), exc.status)
        except web.HTTPException as exc:
            if exc.status == 413:
                message = f"request body larger than api_max_body ({max_body} bytes)"
                return reply({"code": BAD_PARAMETER, "message": message}, 413)
            text = _HTTP_MESSAGES.get(exc.status, exc.reason)
            response = reply(
                {"code": UNKNOWN_ERROR, "message": f"{text}: {request.method} {request.path}"},
                exc.status,
            )
            if "Allow" in exc.headers:
                response.headers["Allow"] = exc.headers["Allow"]
            return response
        except UnicodeError:
            return reply({"code": BAD_PARAMETER, "message": "text that is not valid UTF-8"}, 400)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("API request %s %s failed", request.method, request.path)
            return reply({"code": UNKNOWN_ERROR, "message": "internal error"}, 500)

    return envelope


def _auth_middleware(auth: AppAuth, public: set[Handler]) -> Middleware:
    @web.middleware
    async def authenticate(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.match_info.handler not in public and not await auth.check(
            request.headers.get("Authorization")
        ):
            response = reply(
                {"code": BAD_CREDENTIALS, "message": "wrong or missing AppID / AppSecret"}, 401
            )
            response.headers["WWW-Authenticate"] = 'Basic realm="ferrymq"'
            return response
        return await handler(request)

    return authenticate


def build_app(
    broker: Broker,
    mqtt_listen: list[str] | None = None,
    *,
    authenticate: Middleware | None = None,
    share: ApiContext | None = None,
) -> web.Application:
    """The aiohttp application serving ``BASE`` for ``broker`` (which must have a store).

    The dashboard mounts the same routes with its own ``authenticate``
    middleware (sessions instead of app credentials) and ``share``s the API
    server's context, so both count writes and drop cached credentials together.
    """
    if broker.store is None:
        raise ValueError("the API needs a broker with a store")
    if share is not None:
        auth, sync = share.auth, share.sync
    else:
        auth = AppAuth(broker.store)
        sync = AccessSync(broker, on_change=auth.clear)
    routes = all_routes()
    if broker.settings.prometheus_auth:
        routes = [prometheus.with_auth(r) for r in routes]
    public = {r.handler for r in routes if r.public}
    public.add(status.status)
    app = web.Application(
        client_max_size=broker.settings.api_max_body,
        middlewares=[
            _envelope_middleware(broker.settings.api_max_body),
            authenticate or _auth_middleware(auth, public),
        ],
    )
    app[CTX] = ApiContext(broker, sync, auth, routes, mqtt_listen)
    app[OPENAPI_KEY] = build_openapi(routes)
    app[CLUSTER] = Cluster(broker)
    app[prometheus.EXPORTER] = prometheus.Exporter(app[CLUSTER].local)
    app[status.LIFECYCLE] = status.Lifecycle()
    app.router.add_get(status.PATH, status.status, name="status")
    for route in routes:
        path = BASE + route.path
        app.router.add_route(route.method, path, route.handler, name=route.name)
        if route.path == "/":
            app.router.add_route(route.method, BASE, route.handler)
    return app


def ssl_context(certfile: str, keyfile: str) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certfile, keyfile or None)
    return context


class ApiServer:
    """Serves the API of ``broker`` on ``api_bind:api_port`` until ``stop``."""

    def __init__(self, broker: Broker, mqtt_listen: list[str] | None = None) -> None:
        self.broker = broker
        self.app = build_app(broker, mqtt_listen)
        self._runner: web.AppRunner | None = None
        self.addresses: list[str] = []

    @property
    def context(self) -> ApiContext:
        return self.app[CTX]

    @property
    def lifecycle(self) -> status.Lifecycle:
        """``state`` is what ``GET /status`` reports: starting, running, stopping."""
        return self.app[status.LIFECYCLE]

    async def start(self) -> None:
        s = self.broker.settings
        context = ssl_context(s.api_certfile, s.api_keyfile) if s.api_certfile else None
        runner = web.AppRunner(self.app, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(
            runner,
            s.api_bind,
            s.api_port,
            ssl_context=context,
            shutdown_timeout=1.0,
            reuse_address=True,
        )
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        scheme = "https" if context else "http"
        for address in runner.addresses:
            host, port = address[:2]
            self.addresses.append(f"{scheme}://{host}:{port}{BASE}")
        self.context.sync.start()

    async def stop(self) -> None:
        await self.context.sync.stop()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


async def start_api(broker: Broker) -> ApiServer | None:
    """Create the first API app if needed and serve the API; None when api_port is 0."""
    settings = broker.settings
    if not settings.api_port:
        log.info("management API disabled (api_port = 0)")
        return None
    assert broker.store is not None
    bootstrap_apps(broker.store, settings)
    server = ApiServer(broker)
    await server.start()
    for address in server.addresses:
        log.info("management API on %s", address)
    return server
