"""What the API's server works with but does not build: made before it, without aiohttp.

``server.py`` binds the API's and the dashboard's ports at start and builds
their aiohttp applications on the first request (``transport.deferred``), yet
from the start the node has a lifecycle for ``GET /status``, watches the data
directory for access changes (``AccessSync``) and logs its URLs. Those parts
live here, so holding them imports no aiohttp; the applications take them over.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ferrymq.admin.store import admin_store
from ferrymq.admin.sync import AccessSync
from ferrymq.api.auth import AppAuth

if TYPE_CHECKING:
    import ssl

    from ferrymq.core.broker import Broker

BASE = "/api/v4"  # routes.BASE, which imports aiohttp


class Lifecycle:
    """Where the broker is in its life; ``server.py`` moves it along."""

    def __init__(self) -> None:
        self.state = "starting"  # -> "running" -> "stopping"


@dataclass
class ApiParts:
    """App credentials, the access sync (``sync_started``: already watching), the
    lifecycle and the API's TLS context (None: plain HTTP)."""

    auth: AppAuth
    sync: AccessSync
    lifecycle: Lifecycle
    sync_started: bool = False
    context: ssl.SSLContext | None = None

    @classmethod
    def start(cls, broker: Broker, api: bool = True) -> ApiParts:
        """The parts of ``broker``'s API (``api``: it is served, else only the dashboard),
        with the access sync running (in the event loop); the API's certificate is
        loaded now, so a bad one fails the start as it always has."""
        assert broker.store is not None
        s = broker.settings
        context = ssl_context(s.api_certfile, s.api_keyfile) if api and s.api_certfile else None
        auth = AppAuth(admin_store(broker))
        parts = cls(auth, AccessSync(broker, on_change=auth.clear), Lifecycle(), True, context)
        parts.sync.start()
        return parts


def ssl_context(certfile: str, keyfile: str) -> ssl.SSLContext:
    """The API's HTTPS context; ``ssl`` (OpenSSL) is imported only for one."""
    import ssl

    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certfile, keyfile or None)
    return context


def urls(scheme: str, addresses: list[Any], path: str = "") -> list[str]:
    """``scheme://host:port`` + ``path`` for each bound address (what the start-up log names)."""
    return [f"{scheme}://{a[0]}:{a[1]}{path}" for a in addresses]
