"""Session state: subscriptions, the inflight window, the message queue, packet ids.

A session outlives its connection when it is persistent (MQTT 3 clean session
= 0, MQTT 5 session expiry interval > 0). The rules it keeps:

- QoS 1/2 messages go out while the inflight window (min of ``max_inflight``
  and the client's receive maximum) has room; the rest wait in the queue, in
  order, and leave it as acknowledgements free the window.
- QoS 0 messages go straight to the connection unless it is offline or its
  socket is backed up; then they wait in the queue too.
- The queue is bounded by ``max_mqueue_len``; when full, the oldest message is
  dropped whatever its QoS (as EMQX does) and counted against this session
  (``dropped``, the API's ``mqueue_dropped``) and in ``delivery.dropped.queue_full``.
- Every message that enters the queue or the inflight window of a persistent
  session is written to the store under a per-session key, and deleted when
  it is acknowledged or dropped, so a restart can resume the session. So is
  each change of its delivery state (PUBREL sent), and each incoming QoS 2
  packet id awaiting PUBREL (added and removed).
- The will is part of the stored session: pending while connected, then with
  its due time once the connection ended, so it fires after a restart too.

The session's fields are changed by its own methods (``attach``, ``detach``,
``set_expiry``, ``load`` ...): the registry (core/sessions.py), the wills
(core/wills.py) and the restore (core/restore.py) call them. The one
exception is ``awaiting_rel``, the inbound QoS 2 state, which the connection
applies the protocol rules to directly.
"""

from __future__ import annotations

import time
from collections import deque
from typing import TYPE_CHECKING, Any

from ferrymq.core.empty import EmptyDict
from ferrymq.model.delivery import (
    INFLIGHT,
    QUEUED,
    RELEASING,
    Delivery,
    DeliveryFields,
    fields_from_meta,
)
from ferrymq.model.message import Message
from ferrymq.model.subscription import Subscription
from ferrymq.mqtt.packets import Will
from ferrymq.storage.codec import dump_will
from ferrymq.storage.store import SessionMessage

if TYPE_CHECKING:
    from ferrymq.core.broker import Broker
    from ferrymq.core.client import Client

EXPIRY_NEVER = 0xFFFFFFFF

_NO_SUBSCRIPTIONS: dict[str, Subscription] = EmptyDict()
_NO_INFLIGHT: dict[int, Delivery] = EmptyDict()


class Session:
    """The broker-side state of one client id."""

    __slots__ = (
        "client_id",
        "broker",
        "client",
        "subscriptions",
        "inflight",
        "queue",
        "awaiting_rel",
        "next_pid",
        "next_key",
        "expiry_interval",
        "created_at",
        "disconnected_at",
        "will",
        "will_due",
        "dropped",
        "username",
        "last_conn",
    )

    def __init__(
        self,
        broker: Broker,
        client_id: str,
        expiry_interval: int = 0,
        username: str | None = None,
    ) -> None:
        self.client_id = client_id
        self.broker = broker
        self.client: Client | None = None
        # Shared empty read-only stand-ins until the first subscription (add_subscription):
        # an idle connection has neither, and two empty dicts are 128 bytes each session.
        self.subscriptions: dict[str, Subscription] = _NO_SUBSCRIPTIONS
        self.inflight: dict[int, Delivery] = _NO_INFLIGHT
        # Deliveries waiting for the connection or the inflight window; a deque only once
        # one waits (an empty deque is ~600 bytes, times every idle connection).
        self.queue: deque[Delivery] | tuple[()] = ()
        self.awaiting_rel: dict[int, float] = {}
        self.next_pid = 1
        self.next_key = 1
        self.expiry_interval = expiry_interval
        self.created_at = time.time()
        self.disconnected_at: float | None = None
        # The will: pending while connected (will_due None), then until its wall-clock
        # due time once the connection ended (timers: core/wills.py).
        self.will: Will | None = None
        self.will_due: float | None = None
        self.dropped = 0
        self.username = username
        # The last connection's values (Client.connection_info) while offline.
        self.last_conn: dict[str, Any] | None = None

    @property
    def persistent(self) -> bool:
        return self.expiry_interval > 0

    # --- connection -----------------------------------------------------

    def attach(self, client: Client, will: Will | None) -> None:
        """``client`` is this session's connection now, with its (new) will."""
        self.client = client
        self.will = will
        if self.username != client.username:
            for sub in self.subscriptions.values():
                sub.acl_gen = -1  # the ACL guard depends on the username
        self.username = client.username
        self.disconnected_at = None

    def detach(self, conn: dict[str, Any], keep_will: bool) -> None:
        """The connection is gone; ``conn`` is what the API shows of it while offline."""
        self.client = None
        self.disconnected_at = time.time()
        self.last_conn = conn
        if not keep_will:
            self.will = None

    def set_expiry(self, expiry: int) -> None:
        """A new session expiry interval; a session no longer persistent leaves the store
        (and its messages lose their keys, as they are no longer stored)."""
        was = self.persistent
        self.expiry_interval = expiry
        if was and not expiry:
            store = self.broker.store
            if store is not None:
                store.delete_session(self.client_id)
                for d in self._deliveries():
                    d.key = 0

    def store_all(self) -> None:
        """Write what the store lacks of a resumed persistent session: the session record,
        the messages not stored yet, the QoS 2 ids awaiting PUBREL."""
        broker = self.broker
        broker.persist_session(self)
        for d in self._deliveries():
            if not d.key:
                self._track(d)
        for pid in self.awaiting_rel:
            broker.store_awaiting_rel(self, pid, True)

    def clear(self) -> None:
        """The session ends: forget its subscriptions and messages (the router is the
        caller's to update, the store too)."""
        if self.subscriptions:
            self.subscriptions.clear()
        if self.inflight:
            self.inflight.clear()
        self.queue = ()

    def add_subscription(self, sub: Subscription) -> None:
        """Record ``sub`` (the router is the caller's); the first one makes the dicts
        deliveries need."""
        subs = self.subscriptions
        if subs is _NO_SUBSCRIPTIONS:
            subs = self.subscriptions = {}
            self._own_inflight()
        subs[sub.topic_filter] = sub

    def remove_subscription(self, topic_filter: str) -> Subscription | None:
        subs = self.subscriptions
        return subs.pop(topic_filter, None) if subs else None

    def _own_inflight(self) -> None:
        if self.inflight is _NO_INFLIGHT:
            self.inflight = {}

    def linger(self) -> None:
        """Handed over to another node, which has its messages now: the queue starts
        empty and collects what its subscriptions still bring here."""
        self.client = None
        if self.inflight:  # a new dict: the empty stand-in must not be cleared
            self.inflight = {}
        self.queue = ()

    def _deliveries(self) -> list[Delivery]:
        return [*self.inflight.values(), *self.queue]

    # --- will -----------------------------------------------------------

    def will_pending(self, due: float, will: Will | None = None) -> None:
        """The connection ended: the will (or ``will``, one restored) is due at
        wall-clock time ``due``."""
        if will is not None:
            self.will = will
        self.will_due = due

    def take_will(self) -> Will | None:
        """The will, now leaving the session (published or dropped)."""
        will = self.will
        self.will = None
        self.will_due = None
        return will

    def cancel_will(self) -> None:
        """Resumed within the will delay: the will is not sent."""
        self.will = None
        self.will_due = None

    # --- packet ids -----------------------------------------------------

    def allocate_pid(self) -> int:
        pid = self.next_pid
        inflight = self.inflight
        while pid in inflight:
            pid = pid + 1 if pid < 65535 else 1
        self.next_pid = pid + 1 if pid < 65535 else 1
        return pid

    # --- delivery -------------------------------------------------------

    def deliver(
        self, msg: Message, qos: int, retain: bool, sub_ids: tuple[int, ...] | None
    ) -> None:
        """Hand one message to this session: send it now, or queue it."""
        client = self.client
        if client is None:
            if not self.persistent:
                return
            if qos == 0 and not self.broker.settings.mqueue_store_qos0:
                self.broker.counters["delivery.dropped.qos0_msg"] += 1
                self.broker.counters["delivery.dropped"] += 1
                return
            self._enqueue(Delivery(msg, qos, retain, sub_ids))
            return
        if qos == 0:
            if client.write_paused or self.queue:
                self._enqueue(Delivery(msg, 0, retain, sub_ids))
            else:
                client.send_message(msg, 0, retain, sub_ids, 0, False)
            return
        if self.queue or len(self.inflight) >= client.send_window:
            self._enqueue(Delivery(msg, qos, retain, sub_ids))
            return
        pid = self.allocate_pid()
        d = Delivery(msg, qos, retain, sub_ids, pid, INFLIGHT)
        if qos == 2 and self.expiry_interval and self.broker.ack_on_commit:
            self._send_exactly_once(client, d)
        elif client.send_message(msg, qos, retain, sub_ids, pid, False):
            self.inflight[pid] = d
            if self.expiry_interval:
                self._track(d)

    def _send_exactly_once(self, client: Client, d: Delivery) -> None:
        """QoS 2 to a persistent session: the PUBLISH leaves once its packet id is durable
        (the client holds it for the batch), so a crash can never make the message go out
        again under another id, which the subscriber could not recognise as a resend."""
        with self.broker.store.atomic:  # type: ignore[union-attr]
            if client.send_message(d.msg, 2, d.retain, d.sub_ids, d.pid, False):
                self.inflight[d.pid] = d
                self._retrack(d)
            else:
                self._untrack(d)

    def _enqueue(self, d: Delivery) -> None:
        queue = self.queue
        if not queue:
            queue = self.queue = deque()
        if len(queue) >= self.broker.settings.max_mqueue_len:
            old = queue.popleft()
            self._untrack(old)
            self.dropped += 1
            metrics = self.broker.counters
            metrics["delivery.dropped.queue_full"] += 1
            metrics["delivery.dropped"] += 1
        queue.append(d)
        if self.expiry_interval:
            self._track(d)

    def drain(self) -> None:
        """Send queued messages while the connection and the inflight window allow."""
        client = self.client
        if client is None:
            return
        queue = self.queue
        inflight = self.inflight
        window = client.send_window
        now = time.monotonic()
        while queue and not client.write_paused and not client.closing:
            d = queue[0]
            if d.qos and len(inflight) >= window:
                return
            queue.popleft()
            if d.msg.expired(now):
                self._drop_expired(d)
                continue
            if d.qos == 0:
                client.send_message(d.msg, 0, d.retain, d.sub_ids, 0, False)
                self._untrack(d)
                continue
            d.pid = self.allocate_pid()
            d.state = INFLIGHT
            if d.qos == 2 and self.expiry_interval and self.broker.ack_on_commit:
                self._send_exactly_once(client, d)
            elif client.send_message(d.msg, d.qos, d.retain, d.sub_ids, d.pid, False):
                inflight[d.pid] = d
                self._retrack(d)
            else:
                self._untrack(d)

    def resend_inflight(self) -> None:
        """On session resume: resend unacknowledged PUBLISH (DUP) and PUBREL, in order."""
        client = self.client
        if client is None:
            return
        for pid, d in list(self.inflight.items()):
            if d.state == RELEASING:
                client.send_pubrel(pid)
            elif not client.send_message(d.msg, d.qos, d.retain, d.sub_ids, pid, True):
                del self.inflight[pid]
                self._untrack(d)

    def _drop_expired(self, d: Delivery) -> None:
        metrics = self.broker.counters
        metrics["delivery.dropped.expired"] += 1
        metrics["delivery.dropped"] += 1
        self._untrack(d)

    # --- acknowledgements -------------------------------------------------

    def acked(self, pid: int, qos: int) -> bool:
        """PUBACK (qos 1) or PUBCOMP (qos 2) arrived: free the slot. False if unknown."""
        d = self.inflight.get(pid)
        if d is None or d.qos != qos or (qos == 2 and d.state != RELEASING):
            return False
        del self.inflight[pid]
        self._untrack(d)
        broker = self.broker
        broker.held_acked += 1
        if self.queue:
            self.drain()
        client = self.client
        if client is not None and client.blocked:
            broker.flow.acked(client, len(self.queue))
        return True

    def received(self, pid: int) -> bool:
        """PUBREC arrived for a QoS 2 message: it now awaits PUBCOMP."""
        d = self.inflight.get(pid)
        if d is None or d.qos != 2:
            return False
        if d.state == INFLIGHT:
            d.state = RELEASING
            if d.key:
                self.broker.store_update_meta(self, d)
        return True

    def discard_inflight(self, pid: int) -> None:
        """A v5 PUBREC with an error code ends the QoS 2 flow for that message."""
        d = self.inflight.pop(pid, None)
        if d is not None:
            self._untrack(d)
            if self.queue:
                self.drain()

    # --- persistence ------------------------------------------------------

    def _track(self, d: Delivery) -> None:
        if not d.key:
            d.key = self.next_key
            self.next_key += 1
        self.broker.store_put_delivery(self, d)

    def _retrack(self, d: Delivery) -> None:
        if d.key:
            self.broker.store_update_meta(self, d)
        elif self.expiry_interval:
            self._track(d)

    def _untrack(self, d: Delivery) -> None:
        if d.key:
            self.broker.store_delete_delivery(self, d)
            d.key = 0

    def snapshot(self) -> dict[str, Any]:
        """What the store keeps of this session besides its messages and QoS 2 packet ids."""
        will = self.will
        return {
            "expiry_interval": self.expiry_interval,
            "created_at": self.created_at,
            "disconnected_at": self.disconnected_at,
            "username": self.username,
            "conn": self.last_conn,
            "next_pid": self.next_pid,
            "will": None if will is None else dump_will(will),
            "will_due": self.will_due,
            "subscriptions": [
                {
                    "f": s.topic_filter,
                    "q": s.qos,
                    "nl": s.no_local,
                    "rap": s.retain_as_published,
                    "rh": s.retain_handling,
                    "id": s.identifier,
                    "adm": s.acl_admin,
                }
                for s in self.subscriptions.values()
            ],
        }

    def load(
        self, data: dict[str, Any], awaiting: Any, last_key: int, now: float, now_mono: float
    ) -> list[Subscription]:
        """Take back a stored session record (the inverse of :meth:`snapshot`, the will
        aside: core/wills.py schedules it); return its subscriptions, for the router.
        ``awaiting``: the QoS 2 packet ids stored for it, ``last_key``: its highest
        stored message key."""
        self.created_at = data.get("created_at", now)
        self.disconnected_at = data.get("disconnected_at") or now
        self.username = data.get("username")
        self.last_conn = data.get("conn")
        self.next_pid = int(data.get("next_pid", 1)) or 1
        self.awaiting_rel = dict.fromkeys(awaiting, now_mono)
        self.next_key = last_key + 1
        for item in data.get("subscriptions", []):
            sub = Subscription(
                self.client_id,
                self,
                item["f"],
                item.get("q", 0),
                no_local=item.get("nl", False),
                retain_as_published=item.get("rap", False),
                retain_handling=item.get("rh", 0),
                identifier=item.get("id"),
                acl_admin=item.get("adm", False),
            )
            self.add_subscription(sub)
        return list(self.subscriptions.values())

    def load_deliveries(
        self, records: list[SessionMessage], parsed: dict[int, tuple[DeliveryFields, Any]]
    ) -> None:
        """Stored queued and inflight messages (records ordered by key), ahead of any
        queued since the start. The store shares equal meta dicts, so each distinct one
        is parsed once (``parsed``, kept over sessions)."""
        queued = []
        self._own_inflight()
        inflight = self.inflight
        for key, msg, meta in records:
            entry = parsed.get(id(meta))
            if entry is None or entry[1] is not meta:
                entry = parsed[id(meta)] = (fields_from_meta(meta, msg.qos), meta)
            d = Delivery(msg, *entry[0], key)
            if d.pid and d.state != QUEUED:
                inflight[d.pid] = d
            else:
                queued.append(d)
        if queued:  # in front of what was queued meanwhile
            queued.extend(self.queue)
            self.queue = deque(queued)

    def mqueue_len(self) -> int:
        return len(self.queue)
