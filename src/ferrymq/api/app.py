"""The API server: the aiohttp application, its two middlewares and its lifecycle.

It runs on the broker's own event loop and reads the broker's live objects
directly; nothing in here runs on the message path. Middlewares (outermost
first): the error envelope, then app authentication. Requests that aiohttp's
HTTP parser rejects before any handler runs (over-long lines, unknown
methods, NUL bytes) get the same envelope from ``_EnvelopeHandler``.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from typing import TYPE_CHECKING, Any

from aiohttp import web
from aiohttp.http_exceptions import BadHttpMethod
from aiohttp.typedefs import Middleware
from aiohttp.web_protocol import RequestHandler

from ferrymq.admin.store import admin_store
from ferrymq.admin.sync import AccessSync
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
    pernode,
    prometheus,
    retained,
    status,
    subscriptions,
    topic_metrics,
)
from ferrymq.api.auth import AppAuth
from ferrymq.api.cluster import CLUSTER, Cluster, Peers
from ferrymq.api.context import CTX, ApiContext, ctx
from ferrymq.api.errors import BAD_CREDENTIALS, BAD_PARAMETER, UNKNOWN_ERROR, ApiError
from ferrymq.api.openapi import build_openapi
from ferrymq.api.parts import ApiParts, ssl_context, urls
from ferrymq.api.routes import BASE, STR, Handler, Route, arr, obj, ok, reply

if TYPE_CHECKING:
    from ferrymq.core.broker import Broker
    from ferrymq.core.interfaces import ListenerInfo

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
        *pernode.ROUTES,
        *applications.ROUTES,
    ]


def _http_error(status: int, max_body: int | None = None) -> tuple[int, dict[str, Any]]:
    """API.md's status and envelope for an HTTP-level error; nothing of the request in it."""
    if status == 413:
        limit = f" ({max_body} bytes)" if max_body is not None else ""
        message = f"request body larger than api_max_body{limit}"
        return 400, {"code": BAD_PARAMETER, "message": message}
    if status in (404, 405):
        message = "no such path" if status == 404 else "no such method for this path"
        return 404, {"code": UNKNOWN_ERROR, "message": message}
    if status >= 500:
        return 500, {"code": UNKNOWN_ERROR, "message": "internal error"}
    return 400, {"code": BAD_PARAMETER, "message": "bad request"}


def _envelope_middleware(max_body: int) -> Middleware:
    @web.middleware
    async def envelope(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except ApiError as exc:
            return reply(exc.body(), exc.status)
        except web.HTTPException as exc:
            status, body = _http_error(exc.status, max_body)
            response = reply(body, status)
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


class _EnvelopeHandler(RequestHandler):
    """aiohttp's connection handler, answering parser errors with the JSON envelope.

    aiohttp answers a request its parser rejects (a line over 8,190 bytes, an
    unknown method, NUL bytes, ...) from ``handle_error`` with plain text that
    may quote the offending input; here the answer is API.md's envelope.
    """

    def handle_error(
        self,
        request: Any,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if status >= 500:
            log.error("API request failed", exc_info=exc)
        else:
            log.debug("malformed API request: %s", exc)
        if request.writer.output_size > 0:
            raise ConnectionError("a response was sent already")
        if isinstance(exc, BadHttpMethod):
            status, body = 404, {"code": UNKNOWN_ERROR, "message": "unknown HTTP method"}
        else:
            status, body = _http_error(status)
        response = reply(body, status)
        response.force_close()
        return response


class _EnvelopeServer(web.Server):
    def __call__(self) -> RequestHandler:
        return _EnvelopeHandler(self, loop=self._loop, **self._kwargs)


class _EnvelopeRunner(web.AppRunner):
    """An AppRunner whose connections use ``_EnvelopeHandler``."""

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        server.__class__ = _EnvelopeServer
        return server


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
    listeners: ListenerInfo | None = None,
    authenticate: Middleware | None = None,
    share: ApiContext | None = None,
    peers: Peers | None = None,
    parts: ApiParts | None = None,
) -> web.Application:
    """The aiohttp application serving ``BASE`` for ``broker`` (which must have a store).

    The dashboard mounts the same routes with its own ``authenticate``
    middleware (sessions instead of app credentials) and ``share``s the API
    server's context, so both count writes and drop cached credentials together.
    ``listeners``: the node's MQTT listeners, for ``/listeners`` and the alarms' view.
    ``peers``: the other nodes of the cluster (``cluster.ClusterNode``), in cluster mode;
    the app then answers their requests (``Cluster.answer``).
    ``parts``: credentials, access sync and lifecycle made before the application.
    """
    if broker.store is None:
        raise ValueError("the API needs a broker with a store")
    if share is not None:
        auth, sync = share.auth, share.sync
    elif parts is not None:
        auth, sync = parts.auth, parts.sync
    else:
        auth = AppAuth(admin_store(broker))
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
    app[CTX] = ApiContext(broker, sync, auth, routes, mqtt_listen, listeners)
    app[OPENAPI_KEY] = build_openapi(routes)
    app[CLUSTER] = Cluster(app[CTX], peers)
    app[prometheus.EXPORTER] = prometheus.Exporter(app[CLUSTER].local)
    app[status.LIFECYCLE] = parts.lifecycle if parts is not None else status.Lifecycle()
    app.router.add_get(status.PATH, status.status, name="status")
    for route in routes:
        path = BASE + route.path
        app.router.add_route(route.method, path, route.handler, name=route.name)
        if route.path == "/":
            app.router.add_route(route.method, BASE, route.handler)
        elif ":.+}" not in route.path:
            # A trailing slash is accepted, as EMQX's router does (a multi-level
            # topic may itself end with "/", so those paths are left alone).
            app.router.add_route(route.method, path + "/", route.handler)
    return app


async def serve_site(
    runner: web.AppRunner,
    bind: str,
    port: int,
    context: ssl.SSLContext | None = None,
    socks: list[socket.socket] | None = None,
) -> None:
    """Set ``runner`` up and listen on ``bind``:``port``, or on the bound ``socks``
    (a ``DeferredListener``'s); on failure nothing stays open.
    Shared by the API and the dashboard listeners."""
    await runner.setup()
    sites: list[web.BaseSite]
    if socks is None:
        sites = [
            web.TCPSite(
                runner, bind, port, ssl_context=context, shutdown_timeout=1.0, reuse_address=True
            )
        ]
    else:
        sites = [
            web.SockSite(runner, sock, ssl_context=context, shutdown_timeout=1.0) for sock in socks
        ]
    try:
        for site in sites:
            await site.start()
    except BaseException:
        await runner.cleanup()
        raise


class ApiServer:
    """Serves the API of ``broker`` on ``api_bind:api_port`` until ``stop``."""

    def __init__(
        self,
        broker: Broker,
        mqtt_listen: list[str] | None = None,
        listeners: ListenerInfo | None = None,
        peers: Peers | None = None,
        parts: ApiParts | None = None,
    ) -> None:
        self.broker = broker
        self.app = build_app(broker, mqtt_listen, listeners=listeners, peers=peers, parts=parts)
        self._parts = parts
        self._sync_started = parts is not None and parts.sync_started
        self._runner: web.AppRunner | None = None
        self.addresses: list[str] = []

    @property
    def context(self) -> ApiContext:
        return self.app[CTX]

    @property
    def lifecycle(self) -> status.Lifecycle:
        """``state`` is what ``GET /status`` reports: starting, running, stopping."""
        return self.app[status.LIFECYCLE]

    async def start(self, socks: list[socket.socket] | None = None) -> None:
        """Serve on ``api_bind``:``api_port``, or on ``socks`` bound there already."""
        s = self.broker.settings
        if self._parts is not None:
            context = self._parts.context
        else:
            context = ssl_context(s.api_certfile, s.api_keyfile) if s.api_certfile else None
        runner = _EnvelopeRunner(self.app, handle_signals=False)
        await serve_site(runner, s.api_bind, s.api_port, context, socks)
        self._runner = runner
        self.addresses = urls("https" if context else "http", runner.addresses, BASE)
        if not self._sync_started:
            self.context.sync.start()
            self._sync_started = True

    async def stop(self) -> None:
        await self.context.sync.stop()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
