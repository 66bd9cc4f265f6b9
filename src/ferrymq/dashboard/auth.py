"""Dashboard sessions: a login hands out a random token, accepted as a cookie or a bearer.

Sessions live in memory (a restart logs everyone out) and end after
``dashboard_session_timeout`` seconds without a request. A session also ends
when its user is deleted or gets a new password (from the command line or
another broker sharing the data directory): each session re-reads its user
at most every ``RECHECK`` seconds.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ferrymq.dashboard.users import verify

if TYPE_CHECKING:
    from ferrymq.storage.sqlite import SqliteStore

COOKIE = "ferrymq_session"
RECHECK = 5.0
MAX_SESSIONS = 1000


@dataclass(slots=True)
class Session:
    username: str
    password_hash: str
    expires: float  # monotonic
    checked: float  # monotonic time the user record was last compared


class Sessions:
    """The live sessions of one dashboard server."""

    def __init__(self, store: SqliteStore, timeout: float) -> None:
        self.store = store
        self.timeout = timeout
        self._sessions: dict[str, Session] = {}

    async def login(self, username: str, password: str) -> str | None:
        """A new session token, or None for wrong credentials."""
        loop = asyncio.get_running_loop()
        user = await loop.run_in_executor(None, verify, self.store, username, password)
        if user is None:
            return None
        now = time.monotonic()
        self._expire(now)
        if len(self._sessions) >= MAX_SESSIONS:  # drop the one closest to expiry
            del self._sessions[min(self._sessions, key=lambda t: self._sessions[t].expires)]
        token = secrets.token_urlsafe(32)
        self._sessions[token] = Session(username, user["password_hash"], now + self.timeout, now)
        return token

    async def check(self, token: str | None) -> str | None:
        """The username of a live session (extending it), or None."""
        session = self._sessions.get(token) if token else None
        if session is None:
            return None
        now = time.monotonic()
        if session.expires <= now:
            del self._sessions[token]  # type: ignore[arg-type]
            return None
        if now - session.checked >= RECHECK:
            user = await self.store.call(self.store.get_dashboard_user, session.username)
            if user is None or user["password_hash"] != session.password_hash:
                self._sessions.pop(token, None)  # type: ignore[arg-type]
                return None
            session.checked = now
        session.expires = now + self.timeout
        return session.username

    def logout(self, token: str | None) -> None:
        if token:
            self._sessions.pop(token, None)

    def _expire(self, now: float) -> None:
        for token in [t for t, s in self._sessions.items() if s.expires <= now]:
            del self._sessions[token]
