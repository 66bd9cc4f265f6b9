"""The session registry: which sessions exist, which connection each has, how long they live.

Rules kept here:
- one online connection per client id; a new CONNECT takes the session over
  (the old connection gets MQTT 5 DISCONNECT 0x8E, and its will is due);
- clean start discards an existing session; a persistent session outlives
  its connection until its expiry interval has passed offline (never, for
  0xFFFFFFFF), then it ends as if discarded;
- a session that ends takes its subscriptions out of the router and out of
  the store, and publishes a will still pending;
- an administrator's kick closes the connection (0x98) and ends the session;
- a session handed over to another node (cluster mode) leaves without ending.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from ferrymq.core.session import EXPIRY_NEVER, Session
from ferrymq.mqtt import reason_codes as rc
from ferrymq.mqtt.packets import Will

if TYPE_CHECKING:
    from ferrymq.core.broker import Broker
    from ferrymq.core.client import Client

log = logging.getLogger("ferrymq.broker")


class Sessions:
    """Sessions by client id, the online connection of each, and the expiry timers."""

    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self.sessions: dict[str, Session] = {}
        #: The online connection of each client id.
        self.clients: dict[str, Client] = {}
        self._expiry: dict[Session, asyncio.TimerHandle] = {}

    def open(
        self, client: Client, clean_start: bool, expiry: int, will: Will | None
    ) -> tuple[Session, bool]:
        """Attach ``client`` to its session (new, resumed or taken over); the session
        and whether it was present (CONNACK's session present)."""
        broker = self.broker
        client_id = client.client_id
        metrics = broker.counters
        old = self.clients.get(client_id)
        if old is not None and old is not client:
            log.info("client %s taken over by a new connection", client_id)
            old.will_allowed = True
            old.kick(rc.SESSION_TAKEN_OVER, "session taken over")
            if not clean_start:
                metrics["session.takeovered"] += 1
        session = self.sessions.get(client_id)
        if session is not None:
            broker.wills.resumed(session, clean_start)
            self._cancel_expiry(session)
            if clean_start:
                self.end(session, "discarded")
                session = None
        present = session is not None
        if session is None:
            session = Session(broker, client_id, expiry)
            self.sessions[client_id] = session
            metrics["session.created"] += 1
        else:
            metrics["session.resumed"] += 1
            session.set_expiry(expiry)
        session.attach(client, will)
        client.session = session
        self.clients[client_id] = client
        if session.persistent:
            if present:
                session.store_all()
            else:
                broker.persist_session(session)
        return session, present

    def closed(self, client: Client) -> None:
        """The connection of the connected ``client`` is gone: detach it from its session,
        which ends now, or when it expires."""
        broker = self.broker
        broker.counters["client.disconnected"] += 1
        client_id = client.client_id
        if self.clients.get(client_id) is client:
            del self.clients[client_id]
        broker.acl.forget_client(client_id)
        session = client.session
        log.info("client %s disconnected: %s", client_id, client.disconnect_reason)
        if session is None or session.client is not client:
            return
        session.detach(client.connection_info(), client.will_allowed)
        if not session.persistent:
            self.end(session, "terminated")
            return
        broker.wills.disconnected(session)
        broker.persist_session(session)
        self.schedule_expiry(session, session.expiry_interval)

    def kick(self, client_id: str) -> bool:
        """Close the client's connection and discard its session; its will is published."""
        session = self.sessions.get(client_id)
        client = self.clients.get(client_id)
        if session is None and client is None:
            return False
        if client is not None:
            client.will_allowed = True
            if client.session is not None:
                client.session.set_expiry(0)
            client.kick(rc.ADMINISTRATIVE_ACTION, "kicked by administrator")
        session = self.sessions.get(client_id)
        if session is not None:
            self.end(session, "discarded")
        return True

    def hand_over(self, session: Session, linger: bool = False) -> None:
        """The session now lives on another node (cluster mode): forget it here without
        ending it, so its stored state, its will and its expiry go on over there.
        ``linger``: its subscriptions stay routed here (``unroute`` ends that), and what
        they still bring is collected in its queue, for the new owner."""
        self._cancel_expiry(session)
        self.broker.wills.forget(session)
        if self.sessions.get(session.client_id) is session:
            del self.sessions[session.client_id]
        if linger:
            session.linger()
        else:
            self.unroute(session)

    def unroute(self, session: Session) -> None:
        """A session handed over stops collecting: its subscriptions leave the router,
        unless a new session of its client id has taken them over here meanwhile."""
        router = self.broker.router
        now = self.sessions.get(session.client_id)
        for topic_filter in session.subscriptions:
            if now is None or topic_filter not in now.subscriptions:
                router.remove(session.client_id, topic_filter)
        session.clear()

    def schedule_expiry(self, session: Session, remaining: float) -> None:
        """End the offline ``session`` in ``remaining`` seconds (unless resumed first)."""
        if session.expiry_interval == EXPIRY_NEVER:
            return
        self._expiry[session] = self.broker.loop.call_later(
            max(0.0, remaining), self._expire, session
        )

    def _cancel_expiry(self, session: Session) -> None:
        timer = self._expiry.pop(session, None)
        if timer is not None:
            timer.cancel()

    def _expire(self, session: Session) -> None:
        self._expiry.pop(session, None)
        if session.client is None and self.sessions.get(session.client_id) is session:
            log.info("session %s expired", session.client_id)
            self.end(session, "terminated")

    def end(self, session: Session, why: str) -> None:
        """Remove a session for good; a will still pending is published now."""
        broker = self.broker
        self._cancel_expiry(session)
        if session.will is not None:
            broker.wills.publish(session)
        router = broker.router
        for topic_filter in list(session.subscriptions):
            router.remove(session.client_id, topic_filter)
        if self.sessions.get(session.client_id) is session:
            del self.sessions[session.client_id]
        store = broker.store
        # Only a persistent session is in the store (set_expiry removes one that stops
        # being persistent): a clean session ends without a store write.
        if store is not None and session.persistent:
            store.delete_session(session.client_id)
        session.clear()
        broker.counters["session." + why] += 1

    def cancel_timers(self) -> None:
        """Shutdown: stored sessions keep their expiry (counted from their disconnect)."""
        for timer in self._expiry.values():
            timer.cancel()
        self._expiry.clear()
