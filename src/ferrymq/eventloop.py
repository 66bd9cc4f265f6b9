"""The event loop a broker runs on: uvloop, or asyncio's own without ``ssl``.

uvloop imports ``ssl``, and so do asyncio's ``base_events``, ``selector_events`` and
``sslproto``, which load and initialise OpenSSL (libssl, libcrypto): 4.5 MiB of RSS, a sixth
of a fresh broker's. asyncio's modules take ``ssl = None`` when it cannot be imported (as on
a Python built without it), so ``import_asyncio`` imports them that way for a broker that
neither speaks TLS nor runs on uvloop (``Settings.uvloop``), then puts ``ssl`` back within
reach of whatever imports it later: aiohttp does, at the API's first request, and its plain
HTTP never reaches asyncio's TLS code. The MQTT sockets are ``transport.poller``'s (one
epoll per listener), so the loop runs only that epoll's reader, the timers and the
callbacks; asyncio's loop costs more per iteration than uvloop's (docs/architecture.md,
"Memory at start": about 15 % of S1's msg/s), hence ``event_loop = "uvloop"``.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Coroutine
from typing import Any


def import_asyncio(uvloop: bool) -> None:
    """Import asyncio, without ``ssl`` unless ``uvloop`` (which needs it, as TLS does);
    before anything else imports asyncio."""
    if uvloop or "asyncio" in sys.modules or "ssl" in sys.modules:
        import asyncio

        return
    sys.modules["ssl"] = None  # type: ignore[assignment]  # import ssl: ImportError
    try:
        import asyncio  # noqa: F401
    finally:
        del sys.modules["ssl"]


def runner(uvloop: bool) -> Callable[[Coroutine[Any, Any, None]], None]:
    """uvloop's ``run`` if ``uvloop`` and it is installed, else asyncio's."""
    import asyncio

    if uvloop:
        try:
            import uvloop as module  # type: ignore[import-not-found]
        except ImportError:  # pragma: no cover - platforms without uvloop
            pass
        else:
            return module.run  # type: ignore[no-any-return]
    return asyncio.run
