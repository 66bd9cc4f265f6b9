"""The event loop a broker runs on: uvloop, with ``ssl`` left unloaded where no TLS is spoken.

``ssl`` loads and initialises OpenSSL (libssl, libcrypto): 4.5 MiB of RSS, a sixth of a
fresh broker's, and asyncio (``base_events``, ``selector_events``, ``sslproto``) and uvloop
both import it whatever the configuration. For a broker that never speaks TLS
(``Settings.speaks_tls``) ``import_asyncio`` imports asyncio with ``ssl`` unimportable (its
modules take ``ssl = None``, as on a Python built without OpenSSL) and uvloop beside a
stand-in ``ssl`` (``_NoTLS``): uvloop only binds a few of its names at import (the
context and BIO classes, the error classes and codes, ``create_default_context``) and
reaches them only for a TLS socket, which such a broker never opens; one it were handed
would fail uvloop's check that it is an ``SSLContext``. The stand-in leaves
``sys.modules`` at once, so the real ``ssl`` is there for whatever imports it later:
aiohttp does, at the API's first request, and its plain HTTP never reaches the loop's TLS
code.
"""

from __future__ import annotations

import contextlib
import sys
import types
from collections.abc import Callable, Coroutine
from typing import Any


class _NoTLS(types.ModuleType):
    """A stand-in ``ssl`` for uvloop's import: a constant it asks for (``SSL_ERROR_...``,
    ``OP_...``) is a negative integer of its own, any other name a class of its own
    (exception classes, as uvloop catches the errors), never a real context's type."""

    def __getattr__(self, name: str) -> int | type:
        if name.startswith("__"):
            raise AttributeError(name)
        stand_in: int | type
        if name.isupper():
            stand_in = -1 - len(vars(self))
        else:
            stand_in = type(name, (Exception,), {"__module__": __name__})
        setattr(self, name, stand_in)
        return stand_in


def import_asyncio(tls: bool) -> None:
    """Import asyncio and uvloop, without ``ssl`` unless ``tls``; before anything else imports
    asyncio (else ``ssl`` is loaded already and this changes nothing)."""
    if tls or "asyncio" in sys.modules or "ssl" in sys.modules:
        import asyncio

        return
    sys.modules["ssl"] = None  # type: ignore[assignment]  # import ssl: ImportError
    try:
        import asyncio  # noqa: F401

        sys.modules["ssl"] = _NoTLS("ssl")
        with contextlib.suppress(ImportError):  # platforms without uvloop
            import uvloop  # type: ignore[import-not-found]  # noqa: F401
    finally:
        del sys.modules["ssl"]


def runner() -> Callable[[Coroutine[Any, Any, None]], None]:
    """uvloop's ``run`` where uvloop is installed, else asyncio's."""
    import asyncio

    try:
        import uvloop
    except ImportError:  # pragma: no cover - platforms without uvloop
        return asyncio.run
    return uvloop.run  # type: ignore[no-any-return]
