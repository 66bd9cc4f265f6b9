"""The persistence port: what the broker core needs of a store (``Store``), and the
types and errors every store shares.

The core (``Broker`` and its parts) is typed against ``Store`` only; a store
for another backend implements it and the core runs unchanged.
``storage/sqlite.py``'s ``SqliteStore`` implements it, plus what only the
management API and the command line use (opening and closing, apps,
authentication and ACL records, bans, dashboard users): those callers hold
the ``SqliteStore`` itself.

Two kinds of operation with different contracts:

* Message-path writes (retained messages, persistent sessions and their queued
  or inflight messages, QoS 2 packet ids awaiting PUBREL) never block: they are
  queued and committed in numbered batches, every flush interval or at once
  when someone waits for a batch (``request_commit``; the commit listener
  hears when it is done). Within one batch only the last operation on a key
  counts, so a message that is queued and acknowledged before the batch is
  written never reaches the disk. A crash loses at most the uncommitted batches.
* Admin operations (API apps, authentication records, ACL rules, bans) and start-up
  loading are synchronous, see every write queued before them, and are
  committed before they return. ``call`` runs one of them from an event loop.

Dicts handed to the message-path methods (session data, message meta) are
serialised later, on the writer thread: pass a dict you do not mutate afterwards.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any, Protocol, TypeVar

from ferrymq.model.message import Message

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
    """Durable state of one broker node, as the core uses it."""

    # --- group commit ---
    @property
    def open_batch(self) -> int:
        """Number of the batch the next message-path write joins (read-only)."""

    @property
    def atomic(self) -> AbstractContextManager[Any]:
        """Context manager: the message-path writes made inside it join one batch."""

    def set_commit_listener(self, listener: Callable[[int], None] | None) -> None:
        """``listener(n)``, called on the writer thread, says batch ``n`` is committed."""

    def request_commit(self, batch: int) -> None:
        """Commit every batch up to ``batch`` as soon as possible."""

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
    def put_awaiting_rel(self, client_id: str, pid: int) -> None: ...
    def delete_awaiting_rel(self, client_id: str, pid: int) -> None: ...

    # --- start-up loading (synchronous, or through ``call``) ---
    def load_retained(self) -> list[Message]: ...
    def load_sessions(self) -> dict[str, dict[str, Any]]: ...
    def load_session_messages(self) -> dict[str, list[SessionMessage]]:
        """Per client id, ordered by key."""

    def load_awaiting_rel(self) -> dict[str, list[int]]:
        """Per client id, the incoming QoS 2 packet ids still awaiting PUBREL."""

    def load_session_keys(self) -> dict[str, int]:
        """Per client id with stored messages, the highest message key (cheap: an index scan)."""

    # --- access data the broker loads (start-up, and after the API changed it) ---
    def list_auth(self, kind: str) -> list[dict[str, Any]]: ...
    def list_acl(
        self, kind: str | None = None, subject: str | None = None
    ) -> list[dict[str, Any]]: ...
    def list_bans(self) -> list[dict[str, Any]]: ...
    def delete_ban(self, kind: str, who: str) -> bool:
        """Delete a ban (an expired one, at start-up); False when there was none."""

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run one of the synchronous methods without blocking the event loop."""
