"""CONNECT authentication against the built-in credential tables.

Rule (API.md, "Authentication data"): if a record exists for the client's
clientid or for its username, the CONNECT password must match one such record,
else the connection is refused with bad credentials. With no record at all,
``allow_anonymous`` decides between success and "not authorized".

The tables live in memory and mirror the database: the API loads them at
start and applies every change, so a change affects the next CONNECT without
a database round trip. Not thread-safe beyond what the GIL gives dict
operations; call from the event loop (or one worker thread for slow hashes).
"""

from __future__ import annotations

import enum

from ferrymq.access.passwords import verify_password
from ferrymq.digests import keyed_digest, token_bytes
from ferrymq.mqtt import reason_codes as rc


class AuthResult(enum.IntEnum):
    """Outcome of a CONNECT check; the values are the MQTT 5 CONNACK reason codes.

    For MQTT 3.x use ``reason_codes.v3_connack_code(result)`` (0, 4, 5).
    """

    SUCCESS = rc.SUCCESS
    BAD_CREDENTIALS = rc.BAD_USERNAME_OR_PASSWORD
    NOT_AUTHORIZED = rc.NOT_AUTHORIZED


# Successful checks of slow hashes (pbkdf2, bcrypt) are remembered so that
# reconnect storms do not redo them; the cache is cleared when it fills up.
_VERIFIED_CACHE_MAX = 8192


class Authenticator:
    """Decides CONNECT credentials from username and clientid tables of stored hashes."""

    __slots__ = ("_cache_key", "_clientids", "_usernames", "_verified", "allow_anonymous")

    def __init__(self, allow_anonymous: bool = True) -> None:
        self.allow_anonymous = allow_anonymous
        self._usernames: dict[str, str] = {}
        self._clientids: dict[str, str] = {}
        # (stored hash, keyed digest of the password) pairs known to match.
        # The digest is keyed with a per-process secret so the cache never
        # holds anything usable to guess a password offline.
        self._verified: dict[tuple[str, bytes], None] = {}
        self._cache_key = token_bytes(32)

    def load(self, usernames: dict[str, str], clientids: dict[str, str]) -> None:
        """Replace both tables (username -> stored hash, clientid -> stored hash)."""
        self._usernames = dict(usernames)
        self._clientids = dict(clientids)
        self._verified.clear()

    def set_username(self, username: str, password_hash: str) -> None:
        self._usernames[username] = password_hash

    def remove_username(self, username: str) -> None:
        self._usernames.pop(username, None)

    def set_clientid(self, clientid: str, password_hash: str) -> None:
        self._clientids[clientid] = password_hash

    def remove_clientid(self, clientid: str) -> None:
        self._clientids.pop(clientid, None)

    def authenticate(
        self, client_id: str, username: str | None, password: bytes | None
    ) -> AuthResult:
        """Decide a CONNECT; see ``authenticate_ex`` for the anonymous flag."""
        return self.authenticate_ex(client_id, username, password)[0]

    def authenticate_ex(
        self, client_id: str, username: str | None, password: bytes | None
    ) -> tuple[AuthResult, bool]:
        """Decide a CONNECT and say whether a success was anonymous.

        Returns ``(result, is_anonymous)``; ``is_anonymous`` is True only for a
        SUCCESS granted by ``allow_anonymous`` because no record exists for the
        clientid or the username (the ``client.auth.anonymous`` metric).
        """
        by_clientid = self._clientids.get(client_id)
        by_username = self._usernames.get(username) if username is not None else None
        if by_clientid is None and by_username is None:
            if self.allow_anonymous:
                return AuthResult.SUCCESS, True
            return AuthResult.NOT_AUTHORIZED, False
        if password is None:
            return AuthResult.BAD_CREDENTIALS, False
        if isinstance(password, str):
            password = password.encode("utf-8")
        if (by_clientid is not None and self._verify(password, by_clientid)) or (
            by_username is not None and self._verify(password, by_username)
        ):
            return AuthResult.SUCCESS, False
        return AuthResult.BAD_CREDENTIALS, False

    def _verify(self, password: bytes, stored: str) -> bool:
        # Salted sha256 costs about as much as the cache lookup would: skip it.
        if stored.startswith("sha256$"):
            return verify_password(password, stored)
        key = (stored, keyed_digest(self._cache_key, password))
        verified = self._verified
        if key in verified:
            return True
        if not verify_password(password, stored):
            return False
        if len(verified) >= _VERIFIED_CACHE_MAX:
            verified.clear()
        verified[key] = None
        return True
