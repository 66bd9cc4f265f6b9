"""The persistence port: what the broker, the management API and the command line need.

Two kinds of operation with different contracts:

* Message-path writes (retained messages, persistent sessions and their queued
  or inflight messages) never block: they are queued and committed in batches a
  short interval later. Within one batch only the last operation on a key
  counts, so a message that is queued and acknowledged before the batch is
  written never reaches the disk. A crash loses at most the last batch.
* Admin operations (API apps, authentication records, ACL rules, bans) and start-up
  loading are synchronous, see every write queued before them, and are
  committed before they return. ``call`` runs one of them from an event loop.

Dicts handed to the message-path methods (session data, message meta) are
serialised later, on the writer thread: pass a dict you do not mutate afterwards.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from ferrymq.core.message import Message

__all__ = [
    "ACL_KINDS",
    "AUTH_KINDS",
    "DuplicateError",
    "SessionMessage",
    "StorageError",
    "Store",
]

T = TypeVar("T")

#: ``kind`` values of authentication records.
AUTH_KINDS = ("username", "clientid")
#: ``kind`` values of ACL rules; rules of kind "all" have the subject "".
ACL_KINDS = ("clientid", "username", "all")

#: One stored message of a session: (key, message, meta).
SessionMessage = tuple[int, Message, dict[str, Any]]


class DuplicateError(Exception):
    """The record to add already exists (app id, or (kind, subject) of an auth record)."""


class StorageError(Exception):
    """The database could not be opened, read or written."""


class Store(Protocol):
    """Durable state of one broker node."""

    def open(self) -> None:
        """Create or open the database and start accepting operations."""

    def close(self) -> None:
        """Commit everything queued, then release the database. Idempotent."""

    def flush(self) -> None:
        """Block until every write queued before the call is committed."""

    # --- message path: never blocks ---
    def put_retained(self, msg: Message) -> None: ...
    def delete_retained(self, topic: str) -> None: ...
    def put_session(self, client_id: str, data: dict[str, Any]) -> None: ...
    def delete_session(self, client_id: str) -> None:
        """Delete the session and every message stored for it."""

    def put_session_message(
        self, client_id: str, key: int, msg: Message, meta: dict[str, Any]
    ) -> None: ...
    def update_session_message_meta(self, client_id: str, key: int, meta: dict[str, Any]) -> None:
        """Replace the meta of a stored message without rewriting its payload."""

    def delete_session_message(self, client_id: str, key: int) -> None: ...

    # --- start-up loading ---
    def load_retained(self) -> list[Message]: ...
    def load_sessions(self) -> dict[str, dict[str, Any]]: ...
    def load_session_messages(self) -> dict[str, list[SessionMessage]]:
        """Per client id, ordered by key."""

    # --- admin data ---
    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run one of the synchronous methods without blocking the event loop."""

    def add_app(
        self, app_id: str, name: str, secret_hash: str, desc: str = "", enabled: bool = True
    ) -> None: ...
    def get_app(self, app_id: str) -> dict[str, Any] | None: ...
    def list_apps(self) -> list[dict[str, Any]]: ...
    def set_app_enabled(self, app_id: str, enabled: bool) -> bool: ...
    def delete_app(self, app_id: str) -> bool: ...

    def add_auth(self, kind: str, subject: str, password_hash: str) -> None: ...
    def get_auth(self, kind: str, subject: str) -> dict[str, Any] | None: ...
    def list_auth(self, kind: str) -> list[dict[str, Any]]: ...
    def update_auth(self, kind: str, subject: str, password_hash: str) -> bool: ...
    def delete_auth(self, kind: str, subject: str) -> bool: ...

    def put_acl(self, kind: str, subject: str, topic: str, action: str, access: str) -> None: ...
    def list_acl(
        self, kind: str | None = None, subject: str | None = None
    ) -> list[dict[str, Any]]: ...
    def delete_acl(self, kind: str, subject: str, topic: str) -> bool: ...

    def put_ban(self, ban: dict[str, Any]) -> None:
        """Add or replace a ban ``{kind, who, by, reason, at, until}`` (key: kind, who)."""

    def list_bans(self) -> list[dict[str, Any]]: ...
    def delete_ban(self, kind: str, who: str) -> bool: ...
