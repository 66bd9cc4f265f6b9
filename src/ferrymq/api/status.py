"""``GET /status`` at the server root: the health probe of load balancers and Kubernetes.

No credentials and plain text, as EMQX answers it: ``Node NAME is started``
and ``ferrymq is running`` with 200 once the MQTT listeners accept clients,
``ferrymq is starting`` / ``ferrymq is stopping`` with 503 before and after.
"""

from __future__ import annotations

from aiohttp import web

from ferrymq.api.context import ctx


class Lifecycle:
    """Where the broker is in its life; ``server.py`` moves it along."""

    def __init__(self) -> None:
        self.state = "starting"  # -> "running" -> "stopping"


LIFECYCLE = web.AppKey("ferrymq_lifecycle", Lifecycle)
PATH = "/status"


async def status(request: web.Request) -> web.Response:
    state = request.app[LIFECYCLE].state
    text = f"Node {ctx(request).node} is started\nferrymq is {state}"
    return web.Response(text=text, status=200 if state == "running" else 503)
