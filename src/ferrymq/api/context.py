"""What every handler reaches through ``request.app[CTX]``: the broker and its neighbours."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from ferrymq.admin.store import admin_store
from ferrymq.api.ops import NodeContext

if TYPE_CHECKING:
    from ferrymq.admin.sync import AccessSync
    from ferrymq.api.auth import AppAuth
    from ferrymq.api.routes import Route
    from ferrymq.core.broker import Broker
    from ferrymq.core.interfaces import ListenerInfo
    from ferrymq.storage.sqlite import SqliteStore


class ApiContext(NodeContext):
    """Live broker state plus the API's own helpers; one per API server."""

    def __init__(
        self,
        broker: Broker,
        sync: AccessSync,
        auth: AppAuth,
        routes: list[Route],
        mqtt_listen: list[str] | None = None,
        listeners: ListenerInfo | None = None,
    ) -> None:
        super().__init__(broker, mqtt_listen, listeners)
        self.sync = sync
        self.auth = auth
        self.routes = routes

    @property
    def store(self) -> SqliteStore:
        """The broker's SQLite store, which has the API's admin operations (the core's
        ``Store`` protocol has none of them)."""
        return admin_store(self.broker)


CTX = web.AppKey("ferrymq_api", ApiContext)


def ctx(request: web.Request) -> ApiContext:
    return request.app[CTX]
