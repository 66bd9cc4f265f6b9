"""``GET /status`` at the server root: the health probe of load balancers and Kubernetes.

No credentials and plain text in EMQX's two lines, ``Node NAME is STATE``
(started, starting, stopping) and ``ferrymq is running`` with 200 once the
MQTT listeners accept clients, or ``ferrymq is not_running`` with 503 before
and after.
"""

from __future__ import annotations

from aiohttp import web

from ferrymq.api.context import ctx
from ferrymq.api.parts import Lifecycle

LIFECYCLE = web.AppKey("ferrymq_lifecycle", Lifecycle)
PATH = "/status"


async def status(request: web.Request) -> web.Response:
    state = request.app[LIFECYCLE].state
    if state == "running":
        node_state, app_state, status = "started", "running", 200
    else:
        node_state, app_state, status = state, "not_running", 503
    text = f"Node {ctx(request).node} is {node_state}\nferrymq is {app_state}"
    return web.Response(text=text, status=status)
