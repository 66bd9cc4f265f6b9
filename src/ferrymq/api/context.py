"""What every handler reaches through ``request.app[CTX]``: the broker and its neighbours."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from aiohttp import web

from ferrymq.admin.store import admin_store

if TYPE_CHECKING:
    from ferrymq.admin.sync import AccessSync
    from ferrymq.api.auth import AppAuth
    from ferrymq.api.routes import Route
    from ferrymq.config import Settings
    from ferrymq.core.broker import Broker
    from ferrymq.core.interfaces import ListenerInfo
    from ferrymq.storage.sqlite import SqliteStore


class ApiContext:
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
        self.broker = broker
        self.settings: Settings = broker.settings
        self.node = broker.settings.node_name
        self.sync = sync
        self.auth = auth
        self.routes = routes
        self.mqtt_listen = mqtt_listen or [f"{self.settings.bind}:{self.settings.port}"]
        # The node's MQTT listeners (server.py hands them over); without them
        # /listeners describes ``mqtt_listen``.
        self.listeners = listeners

    @property
    def store(self) -> SqliteStore:
        """The broker's SQLite store, which has the API's admin operations (the core's
        ``Store`` protocol has none of them)."""
        return admin_store(self.broker)


CTX = web.AppKey("ferrymq_api", ApiContext)


def ctx(request: web.Request) -> ApiContext:
    return request.app[CTX]


def strftime(ts: float | None) -> str | None:
    """API.md time format, local time."""
    if ts is None:
        return None
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))
