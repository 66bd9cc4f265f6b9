"""Wills: when a will is published, and how.

Rules kept here:
- a will is published when the connection ends without a normal DISCONNECT
  (or with MQTT 5 DISCONNECT 0x04, or because the broker shuts down), after
  its will delay unless the session is resumed first, and at the latest when
  the session ends (the delay is capped by the session expiry interval);
- a pending will is stored with its session (``Session.snapshot``) with its
  wall-clock due time, and fires at that time after a restart; one stored
  while its client was still connected (a crash) is due its delay after the
  start;
- the will is published as the client would have published it: subject to
  the ACL of its client, with the will properties a message carries forward.

The will itself is session state (``Session.will`` / ``will_due``); the timers
are kept here, one per session with a will waiting for its delay.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

from ferrymq.model.message import FORWARDED, Message
from ferrymq.storage.codec import load_will

if TYPE_CHECKING:
    from ferrymq.core.broker import Broker
    from ferrymq.core.session import Session

log = logging.getLogger("ferrymq.broker")


class Wills:
    """The will timers of one broker, and will publication."""

    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self._timers: dict[Session, asyncio.TimerHandle] = {}

    def waiting(self, session: Session) -> bool:
        """Whether ``session`` has a will waiting for its delay."""
        return session in self._timers

    def resumed(self, session: Session, clean_start: bool) -> None:
        """A new connection for ``session``: a will waiting for its delay is not sent
        (a clean start ends the session instead, which publishes it)."""
        timer = self._timers.pop(session, None)
        if timer is not None:
            timer.cancel()
            if not clean_start:
                session.cancel_will()

    def disconnected(self, session: Session) -> None:
        """The connection of the persistent ``session`` ended with its will allowed:
        publish it now, or when its delay has passed."""
        will = session.will
        if will is None:
            return
        delay = will.properties.get("will_delay_interval", 0)
        if delay:
            delay = min(delay, session.expiry_interval)
            session.will_pending(time.time() + delay)
            self._timers[session] = self.broker.loop.call_later(delay, self._due, session)
        else:
            self.publish(session)

    def restore(self, session: Session, text: str, due: float | None, now: float) -> None:
        """Schedule a stored will; one whose client was still connected (a crash) is due
        after its delay from now (wall clock ``now``)."""
        try:
            will = load_will(text)
        except ValueError:
            log.exception("skipping unreadable will of %s", session.client_id)
            return
        if due is None:
            delay = will.properties.get("will_delay_interval", 0)
            due = now + min(delay, session.expiry_interval)
        session.will_pending(due, will)
        self._timers[session] = self.broker.loop.call_later(max(0.0, due - now), self._due, session)

    def _due(self, session: Session) -> None:
        self._timers.pop(session, None)
        self.publish(session)
        broker = self.broker
        if broker.sessions.get(session.client_id) is session:
            broker.persist_session(session)

    def publish(self, session: Session) -> None:
        """Publish the will of ``session`` now, if it has one; it leaves the session."""
        timer = self._timers.pop(session, None)
        if timer is not None:
            timer.cancel()
        will = session.take_will()
        if will is None:
            return
        broker = self.broker
        if not broker.acl.check_publish(session.client_id, session.username, will.topic):
            broker.counters["messages.dropped"] += 1
            return
        props = will.properties
        forwarded = {k: props[k] for k in FORWARDED if k in props} or None
        interval = props.get("message_expiry_interval")
        expiry_at = time.monotonic() + interval if interval is not None else 0.0
        msg = Message(
            will.topic, will.payload, will.qos, will.retain, forwarded, session.client_id, expiry_at
        )
        log.info("publishing will of %s to %s", session.client_id, will.topic)
        broker.publish(msg)

    def forget(self, session: Session) -> None:
        """The session moved to another node: its will timer stops here (the will and its
        due time travel with the stored session)."""
        timer = self._timers.pop(session, None)
        if timer is not None:
            timer.cancel()

    def cancel_all(self) -> None:
        """Shutdown: the stored sessions keep their wills and due times. (The will of a
        session that ended while the broker was down has no record left: it still fires.)"""
        sessions = self.broker.sessions
        for session, timer in list(self._timers.items()):
            if sessions.get(session.client_id) is session:
                timer.cancel()
                del self._timers[session]
