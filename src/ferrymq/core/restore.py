"""Start-up: the broker's state back from the store, in two steps, serving in between.

Rules kept here:
- :meth:`Restore.load_state` (synchronous, before the listeners open) reads
  what answering a CONNECT needs: persistent sessions with their
  subscriptions, QoS 2 ids and wills, and access data (credentials, ACL,
  bans). Sessions that expired while the broker was down are deleted (their
  wills are published), and so are expired bans;
- :meth:`Restore.finish_restore` (a task, once the listeners are open) reads
  the sessions' queued and inflight messages on the store's thread, then the
  retained messages; until each is back, a CONNECT resuming a stored session
  waits (``defer_connect``, with whatever its client sent after it), and so
  do retained deliveries to new subscriptions;
- what changed meanwhile wins over the older stored value: messages stored
  after ``load_state`` are already in memory (their keys are above the highest
  key seen then), and retained topics set or cleared while restoring are not
  overwritten.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from ferrymq.core.banned import Ban
from ferrymq.core.session import EXPIRY_NEVER, Session
from ferrymq.model.delivery import DeliveryFields
from ferrymq.model.message import Message
from ferrymq.model.subscription import Subscription
from ferrymq.storage.store import SessionMessage

if TYPE_CHECKING:
    from ferrymq.core.broker import Broker
    from ferrymq.core.client import Client

log = logging.getLogger("ferrymq.broker")


class Restore:
    """The restore of one broker; ``active`` from ``load_state`` until it is done."""

    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self.active = False
        # Stored sessions whose messages are not back yet (with their highest stored
        # key), the CONNECTs and retained deliveries waiting for them, and retained
        # topics changed meanwhile (the stored value is older).
        self._pending: dict[str, tuple[Session, int]] = {}
        self._deferred: list[tuple[Client, Any]] = []
        self._retained_waiting: list[tuple[Session, Subscription]] = []
        self._touched: set[str] = set()

    def load_state(self) -> None:
        """Restore what answering a CONNECT needs (see the module docstring)."""
        broker = self.broker
        store = broker.store
        if store is None:
            return
        now_mono = time.monotonic()
        now = time.time()
        keys = store.load_session_keys()
        self.active = True
        awaiting = store.load_awaiting_rel()
        sessions = broker.sessions
        for client_id, data in store.load_sessions().items():
            # "awaiting_rel" in the session record: databases of schema version 1.
            pids = awaiting.get(client_id, data.get("awaiting_rel", ()))
            last_key = keys.get(client_id, 0)
            session = self._load(client_id, data, pids, last_key, now, now_mono)
            if session is not None:
                self._pending[client_id] = (session, last_key)
        for client_id in keys.keys() - sessions.keys():
            store.delete_session(client_id)
        broker.load_access()
        bans = [Ban(**row) for row in store.list_bans()]
        for ban in bans:
            if not ban.active(now):
                store.delete_ban(ban.kind, ban.who)
        broker.banned.load([ban for ban in bans if ban.active(now)])

    def _load(
        self,
        client_id: str,
        data: dict[str, Any],
        pids: Iterable[int],
        last_key: int,
        now: float,
        now_mono: float,
    ) -> Session | None:
        """One stored session back, offline, with its subscriptions routed, its expiry and
        its will scheduled; None when it expired meanwhile (its will is published)."""
        broker = self.broker
        store = broker.store
        assert store is not None
        expiry = int(data.get("expiry_interval", 0))
        gone_at = data.get("disconnected_at") or now
        session = Session(broker, client_id, expiry, data.get("username"))
        if expiry == 0 or (expiry != EXPIRY_NEVER and gone_at + expiry <= now):
            store.delete_session(client_id)
            if data.get("will"):  # the session ended while nobody held it
                broker.wills.restore(session, data["will"], now, now)
            return None
        for sub in session.load(data, pids, last_key, now, now_mono):
            broker.router.add(sub)
        broker.sessions[client_id] = session
        broker.registry.schedule_expiry(session, gone_at + expiry - now)
        if data.get("will"):
            broker.wills.restore(session, data["will"], data.get("will_due"), now)
        return session

    def revive(
        self,
        client_id: str,
        data: dict[str, Any],
        pids: Iterable[int],
        records: list[SessionMessage],
    ) -> Session | None:
        """A stored session taken in at once, messages included (cluster mode: another node
        held it); offline until its client connects. None when it expired meanwhile."""
        session = self._load(
            client_id, data, pids, records[-1][0] if records else 0, time.time(), time.monotonic()
        )
        if session is not None and records:
            session.load_deliveries(records, {})
        return session

    async def finish_restore(self, sessions_back: asyncio.Future[None] | None = None) -> None:
        """The deferred part of :meth:`load_state`, read on the store's thread: first the
        sessions' queued and inflight messages (then the CONNECTs that waited for them
        run, and ``sessions_back`` is resolved), then the retained messages (then the
        retained deliveries that waited)."""
        broker = self.broker
        store = broker.store
        assert store is not None
        try:
            messages = await store.call(store.load_session_messages)
            parsed: dict[int, tuple[DeliveryFields, Any]] = {}
            sessions = broker.sessions
            for client_id, records in messages.items():
                pending = self._pending.get(client_id)
                if pending is None or sessions.get(client_id) is not pending[0]:
                    continue
                # Rows above the key stored at the start were written since: in memory.
                last = pending[1]
                if records[-1][0] > last:
                    records = [r for r in records if r[0] <= last]
                if records:
                    pending[0].load_deliveries(records, parsed)
            del messages
        except Exception:
            log.exception("restoring stored session messages failed")
        self._pending = {}
        deferred, self._deferred = self._deferred, []
        for client, packet in deferred:
            client.resume_connect(packet)
        if sessions_back is not None and not sessions_back.done():
            sessions_back.set_result(None)
        restored = 0
        try:
            retained = await store.call(store.load_retained)
            for start in range(0, len(retained), 10_000):
                restored += self._restore_retained(retained[start : start + 10_000])
                await asyncio.sleep(0)
        except Exception:
            log.exception("restoring stored retained messages failed")
        finally:
            self.active = False
            self._touched = set()
            waiting, self._retained_waiting = self._retained_waiting, []
            for session, sub in waiting:
                if session.subscriptions.get(sub.topic_filter) is sub:
                    broker.deliver_retained(session, sub)
            log.info(
                "restored %d retained messages and %d persistent sessions",
                restored,
                len(broker.sessions),
            )

    def _restore_retained(self, messages: list[Message]) -> int:
        """Stored retained messages, unless expired or changed since the start; how many
        were put back."""
        now = time.monotonic()
        retained = self.broker.retained
        skip = self._touched
        count = 0
        for msg in messages:
            if not msg.expired(now) and msg.topic not in skip:
                retained.set(msg)
                count += 1
        return count

    def defer_connect(self, client: Client, packet: Any, client_id: str) -> bool:
        """While restoring: hold a CONNECT that resumes a stored session (and
        whatever the client sent after it) until the session's messages are back."""
        if client_id not in self._pending:
            return False
        client.transport.pause_reading()
        self._deferred.append((client, packet))
        return True

    def touched(self, topic: str) -> None:
        """The retained message of ``topic`` changed while restoring: keep the new one."""
        self._touched.add(topic)

    def wait_retained(self, session: Session, sub: Subscription) -> None:
        """A retained delivery to ``sub`` waits for the retained messages."""
        self._retained_waiting.append((session, sub))
