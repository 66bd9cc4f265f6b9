"""The store of a cluster node: persistent sessions in Redis, everything else local.

``ClusterStore`` implements ``storage.store.Store`` around the node's
``SqliteStore`` (any ``Store``): retained messages, access data and whatever only the API
and the command line use stay in the local database, while the session
writes (records, queued and inflight messages, QoS 2 ids) are collected in
``SessionWrites`` and sent to Redis by ``cluster.clients`` off the message
path, so any node can take a session over. Sessions are not loaded from the
local database at start: in cluster mode they come from Redis (those a
standalone run left there are carried into Redis once, by ``cluster.clients``).

Group commit spans both: batch numbers are the local store's, and batch ``n``
is reported committed once the local store committed it and a send to Redis
taken after it closed has succeeded, so a held PUBACK means the message is in
Redis. While Redis is unreachable the session writes wait in memory for the
reconnection and batches are reported on the local commit alone (logged once
by the node, as the outage is).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any, TypeVar

from ferrymq.cluster.session_writes import SessionWrites
from ferrymq.model.message import Message
from ferrymq.storage.store import SessionMessage, Store

T = TypeVar("T")


class ClusterStore:
    """``Store`` with the session writes going to Redis (sent by the client registry)."""

    def __init__(self, local: Store, loop: asyncio.AbstractEventLoop) -> None:
        self.local = local
        self.loop = loop
        self.writes = SessionWrites()
        #: Client ids whose session was handed over and still lingers here: its writes
        #: are the new owner's business, and what it collects is handed on to that owner
        #: (``ClientRegistry``).
        self.muted: set[str] = set()
        #: Called (on the loop) when a send to Redis is wanted now.
        self.wake: Callable[[], None] = _nothing
        #: Whether sends to Redis happen (the node is connected).
        self.online = False
        self.sending = False
        self._listener: Callable[[int], None] | None = None
        self._local_done = 0  # highest batch the local store committed
        self._sent = 0  # every batch up to this one is in Redis
        self._reported = 0

    # --- group commit -----------------------------------------------------------

    @property
    def open_batch(self) -> int:
        return self.local.open_batch

    @property
    def atomic(self) -> AbstractContextManager[Any]:
        return self.local.atomic

    def set_commit_listener(self, listener: Callable[[int], None] | None) -> None:
        self._listener = listener
        self.local.set_commit_listener(None if listener is None else self._local_committed)

    def request_commit(self, batch: int) -> None:
        self.local.request_commit(batch)

    def _local_committed(self, batch: int) -> None:  # on the store's writer thread
        self.loop.call_soon_threadsafe(self._local_done_at, batch)

    def _local_done_at(self, batch: int) -> None:
        self._local_done = max(self._local_done, batch)
        if not self.online:
            self._sent = max(self._sent, batch)
        elif self.sending or self.writes:
            self.wake()  # a send taken after this batch closed covers it
            return
        else:  # nothing pending, nothing on its way: Redis has it all
            self._sent = max(self._sent, self.local.open_batch - 1)
        self._report()

    def behind(self) -> bool:
        """Whether a committed local batch waits for a send to Redis."""
        return self._local_done > self._sent

    def taking(self) -> int:
        """A send to Redis starts (the writes are taken next): every batch up to the
        returned number is in it."""
        self.sending = True
        return self.local.open_batch - 1

    def sent(self, upto: int | None) -> None:
        """The send that started at ``taking() == upto`` is over (None: it failed)."""
        self.sending = False
        if upto is not None:
            self._sent = max(self._sent, upto)
            self._report()

    def went_offline(self) -> None:
        self.online = False
        self._sent = max(self._sent, self._local_done)
        self._report()

    def _report(self) -> None:
        done = min(self._local_done, self._sent)
        if done > self._reported and self._listener is not None:
            self._reported = done
            self._listener(done)

    # --- message path: sessions to Redis, the rest local -------------------------

    def put_retained(self, msg: Message) -> None:
        self.local.put_retained(msg)

    def delete_retained(self, topic: str) -> None:
        self.local.delete_retained(topic)

    def put_session(self, client_id: str, data: dict[str, Any]) -> None:
        self.writes.put_session(client_id, data)

    def delete_session(self, client_id: str) -> None:
        self.writes.delete_session(client_id)
        self.wake()  # also frees the client id's registration soon

    def put_session_message(
        self, client_id: str, key: int, msg: Message, meta: dict[str, Any]
    ) -> None:
        if client_id not in self.muted:
            self.writes.put_message(client_id, key, msg, meta)
        else:
            self.writes.hand_on(client_id, msg, meta)

    def update_session_message_meta(self, client_id: str, key: int, meta: dict[str, Any]) -> None:
        if client_id not in self.muted:
            self.writes.update_meta(client_id, key, meta)

    def delete_session_message(self, client_id: str, key: int) -> None:
        if client_id not in self.muted:
            self.writes.delete_message(client_id, key)

    def put_awaiting_rel(self, client_id: str, pid: int) -> None:
        self.writes.awaiting_rel(client_id, pid, True)

    def delete_awaiting_rel(self, client_id: str, pid: int) -> None:
        self.writes.awaiting_rel(client_id, pid, False)

    # --- start-up: no sessions from the local database ---------------------------

    def load_retained(self) -> list[Message]:
        return self.local.load_retained()

    def load_sessions(self) -> dict[str, dict[str, Any]]:
        return {}

    def load_session_messages(self) -> dict[str, list[SessionMessage]]:
        return {}

    def load_awaiting_rel(self) -> dict[str, list[int]]:
        return {}

    def load_session_keys(self) -> dict[str, int]:
        return {}

    # --- access data, and what the API and the command line use -------------------

    def list_auth(self, kind: str) -> list[dict[str, Any]]:
        return self.local.list_auth(kind)

    def list_acl(self, kind: str | None = None, subject: str | None = None) -> list[dict[str, Any]]:
        return self.local.list_acl(kind, subject)

    def list_bans(self) -> list[dict[str, Any]]:
        return self.local.list_bans()

    def delete_ban(self, kind: str, who: str) -> bool:
        return self.local.delete_ban(kind, who)

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        return await self.local.call(fn, *args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.local, name)


def _nothing() -> None:
    pass
