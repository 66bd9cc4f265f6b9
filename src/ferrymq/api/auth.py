"""HTTP Basic authentication of API apps, with a short-lived cache of verified pairs.

A verified (AppID, secret) pair is remembered for ``TTL`` seconds under a
keyed digest of the secret (never the secret itself), so a busy script costs
one dict look-up per request. The cache is dropped whenever the command line
changes apps (see ``sync.py``), so ``apps disable`` takes effect within a second.
"""

from __future__ import annotations

import base64
import binascii
import time
from typing import TYPE_CHECKING

from ferrymq.admin.apps import secret_matches
from ferrymq.digests import keyed_digest, token_bytes

if TYPE_CHECKING:
    from ferrymq.storage.sqlite import SqliteStore

TTL = 30.0
_MAX_CACHED = 1024


def parse_basic(header: str | None) -> tuple[str, str] | None:
    """(user, password) of a Basic Authorization header, or None."""
    if not header:
        return None
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        return None
    user, sep, password = decoded.partition(":")
    if not sep or not user or not password:
        return None
    return user, password


class AppAuth:
    """Checks API app credentials against the store."""

    def __init__(self, store: SqliteStore) -> None:
        self.store = store
        self._key = token_bytes(32)
        self._verified: dict[tuple[str, bytes], float] = {}

    def clear(self) -> None:
        self._verified.clear()

    async def check(self, header: str | None) -> bool:
        creds = parse_basic(header)
        if creds is None:
            return False
        app_id, secret = creds
        key = (app_id, keyed_digest(self._key, secret.encode("utf-8")))
        now = time.monotonic()
        until = self._verified.get(key)
        if until is not None and until > now:
            return True
        app = await self.store.call(self.store.get_app, app_id)
        if app is None or not app["enabled"] or not secret_matches(app, secret):
            self._verified.pop(key, None)
            return False
        if len(self._verified) >= _MAX_CACHED:
            self._verified.clear()
        self._verified[key] = now + TTL
        return True
