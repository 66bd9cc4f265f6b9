"""The dashboard listener: the browser app, logins, and ``/api/v4`` behind sessions.

It mounts the very route table of the management API (``api.app.build_app``)
with a session check in place of app credentials, so the dashboard can only
do and show what a script can through the API. Pages are static files of
this package; nothing is built or fetched at run time.
"""

from __future__ import annotations

import logging
import socket
from pathlib import Path
from typing import TYPE_CHECKING

from aiohttp import web
from aiohttp.typedefs import Handler

from ferrymq.admin.store import admin_store
from ferrymq.api import status
from ferrymq.api.app import build_app, serve_site
from ferrymq.api.cluster import CLUSTER
from ferrymq.api.context import CTX
from ferrymq.api.errors import BAD_CREDENTIALS, EMPTY_CREDENTIALS
from ferrymq.api.params import as_object, get_str, read_json
from ferrymq.api.parts import ApiParts, urls
from ferrymq.api.routes import BASE, ok, reply
from ferrymq.dashboard.auth import COOKIE, Sessions

if TYPE_CHECKING:
    from ferrymq.api.app import ApiServer
    from ferrymq.api.cluster import Peers
    from ferrymq.api.context import ApiContext
    from ferrymq.core.broker import Broker
    from ferrymq.core.interfaces import ListenerInfo

log = logging.getLogger("ferrymq.dashboard")

STATIC = Path(__file__).parent / "static"
SESSIONS = web.AppKey("dashboard_sessions", Sessions)

# Scripts, styles and WebSocket connections (the WebSocket tool) only from here; MQTT.js
# runs its keep-alive timer in a worker made from a blob of its own code.
_CSP = (
    "default-src 'self'; script-src 'self'; worker-src 'self' blob:; "
    "style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self' ws: wss:; "
    "frame-ancestors 'none'"
)


def _token(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return request.cookies.get(COOKIE)


def _unauthorized() -> web.Response:
    return reply({"code": BAD_CREDENTIALS, "message": "not logged in, or the session ended"}, 401)


@web.middleware
async def _session_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.path.startswith(BASE) and not await request.app[SESSIONS].check(_token(request)):
        return _unauthorized()
    return await handler(request)


async def _headers(request: web.Request, response: web.StreamResponse) -> None:
    response.headers["Content-Security-Policy"] = _CSP
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    if request.path.startswith(BASE) or request.path == "/session":
        response.headers["Cache-Control"] = "no-store"


async def index(request: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC / "index.html")


async def login(request: web.Request) -> web.Response:
    body = as_object(await read_json(request))
    username = get_str(body, "username", empty_code=EMPTY_CREDENTIALS)
    password = get_str(body, "password", empty_code=EMPTY_CREDENTIALS)
    assert username is not None and password is not None
    sessions = request.app[SESSIONS]
    token = await sessions.login(username, password)
    if token is None:
        log.warning("dashboard login refused for %r from %s", username, request.remote)
        return reply({"code": BAD_CREDENTIALS, "message": "wrong username or password"}, 401)
    log.info("dashboard login of %r from %s", username, request.remote)
    response = ok({"username": username, "token": token, "timeout": sessions.timeout})
    response.set_cookie(COOKIE, token, httponly=True, samesite="Strict", path="/")
    return response


async def whoami(request: web.Request) -> web.Response:
    username = await request.app[SESSIONS].check(_token(request))
    if username is None:
        return _unauthorized()
    return ok({"username": username, "node": request.app[CTX].node})


async def logout(request: web.Request) -> web.Response:
    request.app[SESSIONS].logout(_token(request))
    response = ok()
    response.del_cookie(COOKIE, path="/")
    return response


def build_dashboard(
    broker: Broker,
    api: ApiServer | None = None,
    listeners: ListenerInfo | None = None,
    peers: Peers | None = None,
    parts: ApiParts | None = None,
) -> web.Application:
    """The dashboard application; shares ``api``'s context when the API is served too,
    else uses ``parts`` when given. Without the API, ``peers`` (cluster mode) give it the
    cluster view the API would have: its pages show every node, and it answers the other
    nodes' requests."""
    assert broker.store is not None
    share = api.context if api is not None else None
    app = build_app(
        broker,
        listeners=listeners,
        authenticate=_session_middleware,
        share=share,
        parts=parts,
        peers=peers if api is None else None,
    )
    if api is not None:  # one view of the node and of its life for both listeners
        app[CLUSTER] = api.app[CLUSTER]
        app[status.LIFECYCLE] = api.lifecycle
    app[SESSIONS] = Sessions(admin_store(broker), broker.settings.dashboard_session_timeout)
    app.on_response_prepare.append(_headers)
    app.router.add_get("/", index)
    app.router.add_post("/session", login)
    app.router.add_get("/session", whoami)
    app.router.add_delete("/session", logout)
    app.router.add_static("/static", STATIC)
    return app


class DashboardServer:
    """Serves the dashboard on ``dashboard_bind:dashboard_port`` until ``stop``."""

    def __init__(
        self,
        broker: Broker,
        api: ApiServer | None = None,
        listeners: ListenerInfo | None = None,
        peers: Peers | None = None,
        parts: ApiParts | None = None,
    ) -> None:
        self.broker = broker
        self.app = build_dashboard(broker, api, listeners, peers, parts)
        self._owns_sync = api is None
        self._sync_started = api is None and parts is not None and parts.sync_started
        self._runner: web.AppRunner | None = None
        self.addresses: list[str] = []

    @property
    def context(self) -> ApiContext:
        return self.app[CTX]

    async def start(self, socks: list[socket.socket] | None = None) -> None:
        """Serve on ``dashboard_bind``:``dashboard_port``, or on ``socks`` bound there already."""
        s = self.broker.settings
        # no access log: the overview page polls every 2 seconds
        runner = web.AppRunner(self.app, handle_signals=False, access_log=None)
        await serve_site(runner, s.dashboard_bind, s.dashboard_port, socks=socks)
        self._runner = runner
        self.addresses = urls("http", runner.addresses, "/")
        if self._owns_sync and not self._sync_started:
            # no API server: watch the data directory, report /status
            self.app[CTX].sync.start()
            self.app[status.LIFECYCLE].state = "running"

    async def stop(self) -> None:
        if self._owns_sync:
            self.app[status.LIFECYCLE].state = "stopping"
            await self.app[CTX].sync.stop()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
