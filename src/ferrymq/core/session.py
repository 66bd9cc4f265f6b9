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
"""

from __future__ import annotations

import binascii
import time
from collections import deque
from typing import TYPE_CHECKING, Any

from ferrymq.core.message import Message
from ferrymq.mqtt.packets import Will
from ferrymq.storage.codec import dump_message, load_message

if TYPE_CHECKING:
    from ferrymq.core.broker import Broker
    from ferrymq.core.client import Client
    from ferrymq.core.subscription import Subscription

# Delivery states.
QUEUED = 0
INFLIGHT = 1  # PUBLISH sent, waiting for PUBACK / PUBREC
RELEASING = 2  # QoS 2: PUBREL sent, waiting for PUBCOMP

_STATE_NAMES = {QUEUED: "queued", INFLIGHT: "inflight", RELEASING: "pubrel"}
_STATE_BY_NAME = {v: k for k, v in _STATE_NAMES.items()}

EXPIRY_NEVER = 0xFFFFFFFF


class Delivery:
    """A message on its way to one session, with the QoS and flags it is delivered with."""

    __slots__ = ("msg", "qos", "retain", "sub_ids", "pid", "state", "key")

    def __init__(
        self,
        msg: Message,
        qos: int,
        retain: bool,
        sub_ids: tuple[int, ...] | None,
        pid: int = 0,
        state: int = QUEUED,
        key: int = 0,
    ) -> None:
        self.msg = msg
        self.qos = qos
        self.retain = retain
        self.sub_ids = sub_ids
        self.pid = pid
        self.state = state
        self.key = key

    def meta(self) -> dict[str, Any]:
        meta: dict[str, Any] = {"q": self.qos, "s": _STATE_NAMES[self.state]}
        if self.pid:
            meta["p"] = self.pid
        if self.retain:
            meta["r"] = 1
        if self.sub_ids:
            meta["i"] = list(self.sub_ids)
        return meta


def fields_from_meta(
    meta: dict[str, Any], qos: int
) -> tuple[int, bool, tuple[int, ...] | None, int, int]:
    """(qos, retain, sub_ids, pid, state) of a stored meta (the inverse of
    ``Delivery.meta``), for ``Delivery(msg, *fields, key)``."""
    ids = meta.get("i")
    return (
        int(meta.get("q", qos)),
        bool(meta.get("r", 0)),
        tuple(ids) if ids else None,
        int(meta.get("p", 0)),
        _STATE_BY_NAME.get(meta.get("s", "queued"), QUEUED),
    )


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
        "expiry_timer",
        "will",
        "will_timer",
        "will_due",
        "dropped",
        "username",
        "last_conn",
    )

    def __init__(self, broker: Broker, client_id: str, expiry_interval: int = 0) -> None:
        self.client_id = client_id
        self.broker = broker
        self.client: Client | None = None
        self.subscriptions: dict[str, Subscription] = {}
        self.inflight: dict[int, Delivery] = {}
        self.queue: deque[Delivery] = deque()
        self.awaiting_rel: dict[int, float] = {}
        self.next_pid = 1
        self.next_key = 1
        self.expiry_interval = expiry_interval
        self.created_at = time.time()
        self.disconnected_at: float | None = None
        self.expiry_timer: Any = None
        self.will: Will | None = None
        self.will_timer: Any = None
        self.will_due: float | None = None  # wall clock; None while connected
        self.dropped = 0
        self.username: str | None = None
        # The last connection's values (Client.connection_info) while offline.
        self.last_conn: dict[str, Any] | None = None

    @property
    def persistent(self) -> bool:
        return self.expiry_interval > 0

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
                self.broker.metrics["delivery.dropped.qos0_msg"] += 1
                self.broker.metrics["delivery.dropped"] += 1
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
        if len(queue) >= self.broker.settings.max_mqueue_len:
            old = queue.popleft()
            self._untrack(old)
            self.dropped += 1
            metrics = self.broker.metrics
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
        metrics = self.broker.metrics
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
        broker.metrics["messages.acked"] += 1
        if self.queue:
            self.drain()
        client = self.client
        if client is not None and client.blocked and len(self.queue) <= broker.queue_low:
            client.slow = False
            if not client.write_paused:
                broker.release_publishers(client)
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

    def mqueue_len(self) -> int:
        return len(self.queue)


def dump_will(will: Will) -> str:
    """A will as text for the stored session (the stored-message form, base64)."""
    msg = Message(will.topic, will.payload, will.qos, will.retain, will.properties or None)
    return binascii.b2a_base64(dump_message(msg), newline=False).decode("ascii")


def load_will(text: str) -> Will:
    """Inverse of :func:`dump_will`; ValueError when ``text`` is not one."""
    try:
        msg = load_message(binascii.a2b_base64(text))
    except binascii.Error as exc:
        raise ValueError(str(exc)) from None
    return Will(msg.topic, msg.payload, msg.qos, msg.retain, msg.properties)
