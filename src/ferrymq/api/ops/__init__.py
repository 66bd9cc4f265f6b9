"""What a node answers for itself: the *operations* of the cluster view, without HTTP.

Every node of a cluster answers the other nodes' requests (``cluster/rpc.py``)
whether or not it serves the API or the dashboard, so the operations live here,
below the HTTP layer: nothing in ``api.ops`` imports aiohttp (an import
contract checks it), and a node with ``api_port = 0`` and ``dashboard_port = 0``
answers without building, or even importing, the HTTP servers. An operation is
a function registered with ``@node_op(name)``: ``op(ctx, **args)`` with JSON
args and result, run on this node for ``api.cluster.LocalNode`` and by RPC for
``RemoteNode``. ``answer`` turns an :class:`ApiError` into data the asking
node raises again.
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from ferrymq.api.errors import UNKNOWN_ERROR, ApiError

if TYPE_CHECKING:
    from ferrymq.config import Settings
    from ferrymq.core.broker import Broker
    from ferrymq.core.interfaces import ListenerInfo

Op = Callable[..., Awaitable[Any]]

#: Every operation a node answers, by name (filled by importing the modules of ``load``).
OPS: dict[str, Op] = {}

_MODULES = ("clients", "mqtt", "node", "subscriptions")


def node_op(name: str) -> Callable[[Op], Op]:
    """Register an operation that any node can be asked (see the module docstring)."""

    def register(op: Op) -> Op:
        assert name not in OPS, name
        OPS[name] = op
        return op

    return register


class NodeContext:
    """What the operations read: the broker and its MQTT listeners."""

    def __init__(
        self,
        broker: Broker,
        mqtt_listen: list[str] | None = None,
        listeners: ListenerInfo | None = None,
    ) -> None:
        self.broker = broker
        self.settings: Settings = broker.settings
        self.node = broker.settings.node_name
        self.mqtt_listen = mqtt_listen or [f"{self.settings.bind}:{self.settings.port}"]
        # The node's MQTT listeners (server.py hands them over); without them
        # /listeners describes ``mqtt_listen``.
        self.listeners = listeners


def load() -> dict[str, Op]:
    """Every operation, registered."""
    for name in _MODULES:
        importlib.import_module(f"{__name__}.{name}")
    return OPS


async def answer(ctx: NodeContext, op: str, args: Any) -> dict[str, Any]:
    """Another node's request: ``{"r": result}`` or ``{"e": [status, code, message,
    data]}`` for an :class:`ApiError`, which the asker raises in turn."""
    if op not in OPS:
        return {"e": [500, UNKNOWN_ERROR, f"no operation {op!r} on {ctx.node}", None]}
    try:
        return {"r": await OPS[op](ctx, **(args or {}))}
    except ApiError as exc:
        return {"e": [exc.status, exc.code, exc.message, exc.data]}


def strftime(ts: float | None) -> str | None:
    """API.md time format, local time."""
    if ts is None:
        return None
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))
