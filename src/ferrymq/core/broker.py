"""The broker: sessions, routing, retained messages, wills, takeover, back-pressure.

Everything here runs on the event loop thread and never blocks: durable
writes are handed to the store, which batches them on its own thread.

Rules kept here:
- one online connection per client id; a new CONNECT takes the session over
  (the old connection gets MQTT 5 DISCONNECT 0x8E);
- clean start discards an existing session; a persistent session outlives
  its connection until its expiry interval has passed offline;
- a will is published when the connection ends without a normal DISCONNECT
  (or with MQTT 5 DISCONNECT 0x04, or because the broker shuts down), after
  its will delay unless the session is resumed first, and at the latest when
  the session ends; a pending will is stored with its session and fires at
  its time after a restart (after a crash, the delay counts from the start);
- with ``durability = "acked"`` an acknowledgement that confirms durable state
  (a message retained or queued for a persistent session, a QoS 2 state
  change) waits for the store batch holding it (``hold_batch`` /
  ``_committed``); the store is asked to commit at once (group commit);
- a slow subscriber costs only itself: its deliveries wait in its own bounded
  queue, whose oldest messages are dropped and counted against it;
- publishers are slowed (TCP back-pressure) only while the broker as a whole is
  short of CPU (``saturated``): then a publisher feeding a backed-up subscriber
  is paused until that subscriber drains, for at most ``_MAX_PAUSE`` seconds,
  and every pause ends as soon as the broker has CPU to spare again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from functools import partial
from typing import TYPE_CHECKING, Any

from ferrymq.access.acl import Acl, AclRule
from ferrymq.access.authn import Authenticator
from ferrymq.core.alarms import AlarmChecks
from ferrymq.core.banned import Ban, BanList
from ferrymq.core.message import Message
from ferrymq.core.metrics import new_metrics
from ferrymq.core.retained import RetainedStore
from ferrymq.core.router import Overlap, Router
from ferrymq.core.session import (
    QUEUED,
    Delivery,
    Session,
    fields_from_meta,
    load_will,
)
from ferrymq.core.stats import Stats
from ferrymq.core.subscription import Subscription
from ferrymq.core.topic_metrics import DROPPED, IN, OUT, QOS_IN, QOS_OUT, TopicMetrics
from ferrymq.mqtt import reason_codes as rc
from ferrymq.mqtt.packets import MQTT5, SubscriptionOptions, Will
from ferrymq.mqtt.topics import (
    TopicError,
    is_wildcard,
    parse_shared,
    validate_topic_filter,
)

if TYPE_CHECKING:
    from ferrymq.config import Settings
    from ferrymq.core.client import Client
    from ferrymq.storage.sqlite import SqliteStore

log = logging.getLogger("ferrymq.broker")

_MAX_PAUSE = 1.0
# Load probe, every _PROBE seconds. A process that spent _BUSY or more of the last
# interval on the CPU counts as saturated for the next _HOLD seconds. An event loop
# running more than _LAG_HIGH behind the probe is saturated at once (one long
# iteration: a burst from many publishers, or a process starved of CPU by others)
# and for _LAG_HOLD seconds after; long enough for backed-up subscribers to drain
# before their publishers are read again, short enough not to stall anyone.
_PROBE = 0.05
_BUSY = 0.85
_HOLD = 1.0
_LAG_HIGH = 0.05
_LAG_HOLD = 0.25
_QOS_RECEIVED = ("messages.qos0.received", "messages.qos1.received", "messages.qos2.received")
# Counters that $SYS publications must not move (see _publish_sys).
_SYS_UNCOUNTED = (
    "messages.received",
    "messages.qos0.received",
    "messages.publish",
    "messages.retained",
    "messages.dropped",
    "messages.dropped.no_subscribers",
)
_WILL_FORWARDED = (
    "payload_format_indicator",
    "content_type",
    "response_topic",
    "correlation_data",
    "user_property",
)


def _count_topic(counts: list[int], qos: int, delivered: Iterable[int]) -> None:
    """Topic metrics of one publish: in by its QoS, out per delivery QoS, dropped if none."""
    counts[IN] += 1
    counts[QOS_IN[qos]] += 1
    out = 0
    for q in delivered:
        counts[QOS_OUT[q]] += 1
        out += 1
    counts[OUT] += out
    if not out:
        counts[DROPPED] += 1


def _online(sub: Subscription) -> bool:
    session = sub.session
    return session.client is not None  # type: ignore[attr-defined]


class Broker:
    """All broker state of one node."""

    def __init__(
        self,
        settings: Settings,
        store: SqliteStore | None = None,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        self.settings = settings
        self.loop = loop or asyncio.get_event_loop()
        self.store = store
        self.metrics = new_metrics()
        self.router = Router(settings.shared_subscription_strategy)
        self.retained = RetainedStore(settings.max_retained_messages)
        self.sessions: dict[str, Session] = {}
        self.clients: dict[str, Client] = {}
        self.connections: set[Client] = set()
        self.authenticator = Authenticator(settings.anonymous_allowed())
        self.acl = Acl(settings.acl_nomatch, metrics=self.metrics)
        self.banned = BanList()
        self.alarm_checks = AlarmChecks(self)
        self.topic_metrics = TopicMetrics()
        self._watched = self.topic_metrics.watched  # read once per publish, see publish()
        self.started_at = time.time()
        self.stats_tracker = Stats(self)
        self._dirty: list[Client] = []
        self._flush_scheduled = False
        self._paused: set[Client] = set()
        # A subscriber whose queue passes this length pauses its publishers (QoS 1/2
        # messages wait for acks there); below a quarter of the limit they resume.
        self._queue_high = max(1, settings.max_mqueue_len // 2)
        self.queue_low = settings.max_mqueue_len // 4
        self._housekeeping: asyncio.TimerHandle | None = None
        self._last_sys = 0.0
        self._load_probe: asyncio.TimerHandle | None = None
        self._probe_due = float("inf")
        self._busy_until = 0.0
        self._cpu_mark = (time.monotonic(), time.process_time())
        # Acknowledgements after commit: every store write made on behalf of a
        # client bumps durable_writes (so a handler sees whether it wrote), clients
        # with held acknowledgements wait in _holding for the batch they need.
        self.ack_on_commit = store is not None and settings.durability == "acked"
        self.durable_writes = 0
        self._holding: list[Client] = []
        self._commit_wanted = 0
        # Restore in two steps (load_state, then finish_restore): stored sessions
        # whose messages are not back yet, the CONNECTs and retained deliveries waiting
        # for them, and retained topics changed meanwhile (the stored value is older).
        self.restoring = False
        self._pending: dict[str, tuple[Session, int]] = {}  # with its highest stored key
        self._deferred: list[tuple[Client, Any]] = []
        self._retained_waiting: list[tuple[Session, Subscription]] = []
        self._touched: set[str] = set()
        if self.ack_on_commit:
            assert store is not None
            store.set_commit_listener(partial(self.loop.call_soon_threadsafe, self._committed))

    # --- start-up and shutdown ----------------------------------------------

    def load_state(self) -> None:
        """Restore from the store what answering a CONNECT needs: persistent sessions with
        their subscriptions, QoS 2 ids and wills, and access data.

        Retained messages and the sessions' messages follow in :meth:`finish_restore`,
        run as a task once the listeners are open. Until it is done, a CONNECT for a
        stored session waits, and so do retained deliveries to new subscriptions.
        """
        store = self.store
        if store is None:
            return
        now_mono = time.monotonic()
        now = time.time()
        keys = store.load_session_keys()
        self.restoring = True
        awaiting = store.load_awaiting_rel()
        for client_id, data in store.load_sessions().items():
            expiry = int(data.get("expiry_interval", 0))
            gone_at = data.get("disconnected_at") or now
            session = Session(self, client_id, expiry)
            if expiry == 0 or (expiry != 0xFFFFFFFF and gone_at + expiry <= now):
                store.delete_session(client_id)
                if data.get("will"):  # the session ended while the broker was down
                    session.username = data.get("username")
                    self._restore_will(session, data["will"], now, now)
                continue
            session.created_at = data.get("created_at", now)
            session.disconnected_at = gone_at
            session.username = data.get("username")
            session.last_conn = data.get("conn")
            session.next_pid = int(data.get("next_pid", 1)) or 1
            # "awaiting_rel" in the session record: databases of schema version 1.
            pids = awaiting.get(client_id, data.get("awaiting_rel", ()))
            session.awaiting_rel = dict.fromkeys(pids, now_mono)
            for item in data.get("subscriptions", []):
                sub = Subscription(
                    client_id,
                    session,
                    item["f"],
                    item.get("q", 0),
                    no_local=item.get("nl", False),
                    retain_as_published=item.get("rap", False),
                    retain_handling=item.get("rh", 0),
                    identifier=item.get("id"),
                )
                sub.acl_admin = item.get("adm", False)
                self.router.add(sub)
                session.subscriptions[sub.topic_filter] = sub
            session.next_key = keys.get(client_id, 0) + 1
            self.sessions[client_id] = session
            self._pending[client_id] = (session, keys.get(client_id, 0))
            self._schedule_expiry(session, remaining=gone_at + expiry - now)
            if data.get("will"):
                self._restore_will(session, data["will"], data.get("will_due"), now)
        for client_id in keys.keys() - self.sessions.keys():
            store.delete_session(client_id)
        self.load_access()
        bans = [Ban(**row) for row in store.list_bans()]
        for ban in bans:
            if not ban.active(now):
                store.delete_ban(ban.kind, ban.who)
        self.banned.load([ban for ban in bans if ban.active(now)])

    async def finish_restore(self, sessions_back: asyncio.Future[None] | None = None) -> None:
        """The deferred part of :meth:`load_state`, read on the store's thread: first the
        sessions' queued and inflight messages (then the CONNECTs that waited for them
        run, and ``sessions_back`` is resolved), then the retained messages (then the
        retained deliveries that waited)."""
        store = self.store
        assert store is not None
        try:
            messages = await store.call(store.load_session_messages)
            parsed: dict[int, tuple[Any, ...]] = {}
            for client_id, records in messages.items():
                pending = self._pending.get(client_id)
                if pending is None or self.sessions.get(client_id) is not pending[0]:
                    continue
                # Rows above the key stored at the start were written since: in memory.
                last = pending[1]
                if records[-1][0] > last:
                    records = [r for r in records if r[0] <= last]
                if records:
                    self._restore_deliveries(pending[0], records, parsed)
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
                restored += self._restore_retained(retained[start : start + 10_000], self._touched)
                await asyncio.sleep(0)
        except Exception:
            log.exception("restoring stored retained messages failed")
        finally:
            self.restoring = False
            self._touched = set()
            waiting, self._retained_waiting = self._retained_waiting, []
            for session, sub in waiting:
                if session.subscriptions.get(sub.topic_filter) is sub:
                    self._deliver_retained(session, sub)
            log.info(
                "restored %d retained messages and %d persistent sessions",
                restored,
                len(self.sessions),
            )

    def _restore_retained(self, messages: list[Message], skip: set[str]) -> int:
        """Stored retained messages, unless expired or changed since the start (``skip``);
        how many were put back."""
        now = time.monotonic()
        retained = self.retained
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
        client.held_packets = []
        client.transport.pause_reading()
        self._deferred.append((client, packet))
        return True

    @staticmethod
    def _restore_deliveries(
        session: Session, records: list[Any], parsed: dict[int, tuple[Any, ...]]
    ) -> None:
        """Queued and inflight messages of a restored session (records ordered by key),
        ahead of any queued since the start. The store shares equal meta dicts, so each
        distinct one is parsed once."""
        queued = []
        inflight = session.inflight
        for key, msg, meta in records:
            entry = parsed.get(id(meta))
            if entry is None or entry[1] is not meta:
                entry = parsed[id(meta)] = (fields_from_meta(meta, msg.qos), meta)
            d = Delivery(msg, *entry[0], key)
            if d.pid and d.state != QUEUED:
                inflight[d.pid] = d
            else:
                queued.append(d)
        session.queue.extendleft(reversed(queued))

    def _restore_will(self, session: Session, text: str, due: float | None, now: float) -> None:
        """Schedule a stored will; one whose client was still connected (a crash) is due
        after its delay from now."""
        try:
            will = load_will(text)
        except ValueError:
            log.exception("skipping unreadable will of %s", session.client_id)
            return
        session.will = will
        if due is None:
            delay = will.properties.get("will_delay_interval", 0)
            due = now + min(delay, session.expiry_interval)
        session.will_due = due
        session.will_timer = self.loop.call_later(max(0.0, due - now), self._will_due, session)

    def load_access(self) -> None:
        """(Re)load credentials and ACL rules from the store."""
        store = self.store
        if store is None:
            return
        self.authenticator.load(
            {r["subject"]: r["password_hash"] for r in store.list_auth("username")},
            {r["subject"]: r["password_hash"] for r in store.list_auth("clientid")},
        )
        self.acl.load(AclRule.from_row(r) for r in store.list_acl())

    def start(self) -> None:
        # $SYS first: a tick scheduled before it would find less than one interval
        # passed and skip, doubling the first $SYS period.
        if self.settings.sys_interval > 0:
            self._publish_sys()
        self._housekeeping = self.loop.call_later(1.0, self._tick)
        self._probe_load()

    def shutdown(self) -> None:
        """Tell every client we are going (MQTT 5: 0x8B), close them, persist sessions."""
        if self._housekeeping is not None:
            self._housekeeping.cancel()
            self._housekeeping = None
        if self._load_probe is not None:
            self._load_probe.cancel()
            self._load_probe = None
            self._probe_due = float("inf")
        # The server closes these connections: their wills are due (MQTT 3.1.2.5),
        # published now or stored with their due time when they have a delay.
        for client in list(self.connections):
            client.will_allowed = True
            client.kick(rc.SERVER_SHUTTING_DOWN, "server shutting down")
        for session in self.sessions.values():
            if session.expiry_timer is not None:
                session.expiry_timer.cancel()
            if session.will_timer is not None:
                session.will_timer.cancel()
        self._flush()
        if self.store is not None:
            self.store.set_commit_listener(None)

    # --- connections ----------------------------------------------------------

    def online_count(self) -> int:
        return len(self.clients)

    def authenticate(self, client_id: str, username: str | None, password: bytes | None) -> int:
        """0 when the CONNECT may proceed, else the MQTT 5 reason code to refuse it with."""
        metrics = self.metrics
        metrics["client.authenticate"] += 1
        result, anonymous = self.authenticator.authenticate_ex(client_id, username, password)
        if anonymous:
            metrics["client.auth.anonymous"] += 1
        if result:
            metrics["client.auth.failure"] += 1
        else:
            metrics["client.auth.success"] += 1
            if anonymous:
                metrics["client.auth.success.anonymous"] += 1
        return int(result)

    def open_session(
        self, client: Client, clean_start: bool, expiry: int, will: Will | None
    ) -> tuple[Session, bool]:
        """Attach ``client`` to its session (new, resumed or taken over)."""
        client_id = client.client_id
        metrics = self.metrics
        old = self.clients.get(client_id)
        if old is not None and old is not client:
            log.info("client %s taken over by a new connection", client_id)
            old.will_allowed = True
            old.kick(rc.SESSION_TAKEN_OVER, "session taken over")
            if not clean_start:
                metrics["session.takeovered"] += 1
        session = self.sessions.get(client_id)
        if session is not None:
            if session.will_timer is not None:
                # Resumed within the will delay: the will is not sent. A clean start
                # ends the session instead, and _end_session publishes the will.
                session.will_timer.cancel()
                session.will_timer = None
                if not clean_start:
                    session.will = None
                    session.will_due = None
            if session.expiry_timer is not None:
                session.expiry_timer.cancel()
                session.expiry_timer = None
            if clean_start:
                self._end_session(session, "discarded")
                session = None
        present = session is not None
        if session is None:
            session = Session(self, client_id, expiry)
            self.sessions[client_id] = session
            metrics["session.created"] += 1
        else:
            metrics["session.resumed"] += 1
            if session.persistent and not expiry and self.store is not None:
                self.store.delete_session(client_id)
                for d in list(session.inflight.values()) + list(session.queue):
                    d.key = 0
            session.expiry_interval = expiry
        session.client = client
        session.will = will
        if session.username != client.username:
            for sub in session.subscriptions.values():
                sub.acl_gen = -1  # the ACL guard depends on the username
        session.username = client.username
        session.disconnected_at = None
        client.session = session
        self.clients[client_id] = client
        if session.persistent:
            self.persist_session(session)
            if present:
                for d in list(session.inflight.values()) + list(session.queue):
                    if not d.key:
                        session._track(d)
                for pid in session.awaiting_rel:
                    self.store_awaiting_rel(session, pid, True)
        return session, present

    def client_closed(self, client: Client) -> None:
        """The connection of ``client`` is gone (or going): detach it from its session."""
        if client not in self.connections:
            return
        self.connections.discard(client)
        self._unblock(client)
        if not client.connected:
            return
        self.metrics["client.disconnected"] += 1
        client_id = client.client_id
        if self.clients.get(client_id) is client:
            del self.clients[client_id]
        self.acl.forget_client(client_id)
        session = client.session
        log.info("client %s disconnected: %s", client_id, client.disconnect_reason)
        if session is None or session.client is not client:
            return
        session.client = None
        session.disconnected_at = time.time()
        session.last_conn = client.connection_info()
        if not client.will_allowed:
            session.will = None
        if not session.persistent:
            self._end_session(session, "terminated")
            return
        if session.will is not None:
            delay = session.will.properties.get("will_delay_interval", 0)
            if delay:
                delay = min(delay, session.expiry_interval)
                session.will_due = time.time() + delay
                session.will_timer = self.loop.call_later(delay, self._will_due, session)
            else:
                self._publish_will(session)
        self.persist_session(session)
        self._schedule_expiry(session, remaining=session.expiry_interval)

    def set_session_expiry(self, session: Session, expiry: int) -> None:
        was = session.persistent
        session.expiry_interval = expiry
        if was and not expiry and self.store is not None:
            self.store.delete_session(session.client_id)

    def kick(self, client_id: str) -> bool:
        """Close the client's connection and discard its session; its will is published."""
        session = self.sessions.get(client_id)
        client = self.clients.get(client_id)
        if session is None and client is None:
            return False
        if client is not None:
            client.will_allowed = True
            if client.session is not None:
                client.session.expiry_interval = 0
            client.kick(rc.ADMINISTRATIVE_ACTION, "kicked by administrator")
        session = self.sessions.get(client_id)
        if session is not None:
            self._end_session(session, "discarded")
        return True

    def _schedule_expiry(self, session: Session, remaining: float) -> None:
        if session.expiry_interval == 0xFFFFFFFF:
            return
        session.expiry_timer = self.loop.call_later(
            max(0.0, remaining), self._expire_session, session
        )

    def _expire_session(self, session: Session) -> None:
        session.expiry_timer = None
        if session.client is None and self.sessions.get(session.client_id) is session:
            log.info("session %s expired", session.client_id)
            self._end_session(session, "terminated")

    def _end_session(self, session: Session, why: str) -> None:
        """Remove a session for good; a will still pending is published now."""
        if session.expiry_timer is not None:
            session.expiry_timer.cancel()
            session.expiry_timer = None
        if session.will is not None:
            self._publish_will(session)
        for topic_filter in list(session.subscriptions):
            self.router.remove(session.client_id, topic_filter)
        session.subscriptions.clear()
        if self.sessions.get(session.client_id) is session:
            del self.sessions[session.client_id]
        if self.store is not None and (session.persistent or session.disconnected_at):
            self.store.delete_session(session.client_id)
        session.inflight.clear()
        session.queue.clear()
        self.metrics["session." + why] += 1

    def _will_due(self, session: Session) -> None:
        session.will_timer = None
        self._publish_will(session)
        if self.sessions.get(session.client_id) is session:
            self.persist_session(session)

    def _publish_will(self, session: Session) -> None:
        will = session.will
        session.will = None
        session.will_due = None
        if session.will_timer is not None:
            session.will_timer.cancel()
            session.will_timer = None
        if will is None:
            return
        if not self.acl.check_publish(session.client_id, session.username, will.topic):
            self.metrics["messages.dropped"] += 1
            return
        props = will.properties
        forwarded = {k: props[k] for k in _WILL_FORWARDED if k in props} or None
        interval = props.get("message_expiry_interval")
        expiry_at = time.monotonic() + interval if interval is not None else 0.0
        msg = Message(
            will.topic, will.payload, will.qos, will.retain, forwarded, session.client_id, expiry_at
        )
        log.info("publishing will of %s to %s", session.client_id, will.topic)
        self.publish(msg)

    # --- access ----------------------------------------------------------------

    def acl_publish(self, client: Client, topic: str) -> bool:
        return self.acl.check_publish(client.client_id, client.username, topic)

    def acl_guard(self, sub: Subscription) -> bool:
        """Decide whether deliveries through ``sub`` need a per-message ACL check.

        API.md: nothing leaks through wildcards. Decided at SUBSCRIBE and again
        once per rule generation (lazily, on the next delivery): a subscription
        that no rule can narrow is marked clean (``acl_gen`` = generation, and
        the message path pays one comparison); otherwise it is marked checked
        (``-generation - 2``) and each message's topic is tested as a SUBSCRIBE
        of that topic. Subscriptions made by an administrator (``acl_admin``)
        are never checked.
        """
        acl = self.acl
        session: Session = sub.session  # type: ignore[assignment]
        # One client's overlapping subscriptions (router.Overlap) deliver once: the
        # message may go out when any one of them would deliver it unchecked.
        members = sub.members if isinstance(sub, Overlap) else (sub,)
        if any(
            m.acl_admin or not acl.needs_delivery_check(m.client_id, session.username, m.filter)
            for m in members
        ):
            sub.acl_gen = acl.generation
            return False
        sub.acl_gen = -acl.generation - 2
        return True

    def acl_delivers(self, sub: Subscription, topic: str) -> bool:
        """May a message on ``topic`` go out through ``sub``? Called only while
        ``sub.acl_gen`` differs from the ACL generation (see ``acl_guard``)."""
        acl = self.acl
        if sub.acl_gen != -acl.generation - 2 and not self.acl_guard(sub):
            return True
        session: Session = sub.session  # type: ignore[assignment]
        if acl.check_delivery(sub.client_id, session.username, topic):
            return True
        metrics = self.metrics
        metrics["delivery.dropped.acl"] += 1
        metrics["delivery.dropped"] += 1
        return False

    # --- publish -------------------------------------------------------------

    def publish(self, msg: Message, origin: Client | None = None) -> int:
        """Route ``msg`` to every matching subscription; return how many it went to."""
        metrics = self.metrics
        metrics["messages.received"] += 1
        metrics[_QOS_RECEIVED[msg.qos]] += 1
        metrics["messages.publish"] += 1
        if msg.retain:
            self._retain(msg)
        watched = self._watched
        counters = watched.get(msg.topic) if watched else None
        subs, groups, _ = self.router.targets(msg.topic)
        if not subs and not groups:
            metrics["messages.dropped"] += 1
            metrics["messages.dropped.no_subscribers"] += 1
            if counters is not None:
                _count_topic(counters.counts, msg.qos, ())
            return 0
        publisher = msg.publisher
        if groups:
            # One member of each shared group; the router's list itself is not ours to extend.
            picked = [group.pick(publisher, _online) for group in groups]
            subs = subs + [sub for sub in picked if sub is not None]
        qos = msg.qos
        count = 0
        queue_high = self._queue_high
        acl_gen = self.acl.generation
        for sub in subs:
            if sub.no_local and sub.client_id == publisher:
                sub = sub.local  # the client's other overlapping subscriptions, if any
                if sub is None:
                    metrics["delivery.dropped.no_local"] += 1
                    metrics["delivery.dropped"] += 1
                    continue
            if sub.acl_gen != acl_gen and not self.acl_delivers(sub, msg.topic):
                continue
            session: Session = sub.session  # type: ignore[assignment]
            session.deliver(
                msg,
                qos if qos < sub.qos else sub.qos,
                msg.retain and sub.retain_as_published,
                sub.ids,
            )
            count += 1
            target = session.client
            if (
                target is not None
                and origin is not None
                and (target.write_paused or len(session.queue) >= queue_high)
                and self.saturated()
            ):
                self._block(origin, target)
        if msg.retain:
            msg.cache = None  # the retained store keeps the message, not its encodings
        if counters is not None:
            _count_topic(counters.counts, qos, self._delivered_qos(subs, msg))
        return count

    def _delivered_qos(self, subs: list[Subscription | Overlap], msg: Message) -> list[int]:
        """The QoS of each delivery ``publish`` made of ``msg`` to ``subs``: the same
        no-local and ACL rules, for the topic-metrics counters of watched topics only."""
        acl, acl_gen, out = self.acl, self.acl.generation, []
        for sub in subs:
            if sub.no_local and sub.client_id == msg.publisher:
                sub = sub.local
                if sub is None:
                    continue
            if sub.acl_gen != acl_gen and not acl.check_delivery(
                sub.client_id, sub.session.username, msg.topic
            ):
                continue
            out.append(msg.qos if msg.qos < sub.qos else sub.qos)
        return out

    def publish_exactly_once(self, msg: Message, origin: Client, pid: int) -> int:
        """QoS 2 from ``origin``: route ``msg`` and record ``pid`` as awaiting PUBREL in one
        store batch, so that a crash keeps both or neither (a resend is then routed once)."""
        session = origin.session
        assert session is not None
        store = self.store
        if store is None:
            session.awaiting_rel[pid] = time.monotonic()
            return self.publish(msg, origin)
        with store.atomic:
            matched = self.publish(msg, origin)
            session.awaiting_rel[pid] = time.monotonic()
            if session.expiry_interval:
                self.store_awaiting_rel(session, pid, True)
        return matched

    def _retain(self, msg: Message) -> None:
        if not self.settings.retain_available:
            return
        durable = self.store is not None and not msg.topic.startswith("$SYS/")
        if self.restoring:
            self._touched.add(msg.topic)
        if msg.payload:
            if self.retained.set(msg):
                self.metrics["messages.retained"] += 1
                if durable:
                    self.durable_writes += 1
                    self.store.put_retained(msg)  # type: ignore[union-attr]
        elif self.retained.delete(msg.topic) is not None and durable:
            self.durable_writes += 1
            self.store.delete_retained(msg.topic)  # type: ignore[union-attr]

    def delete_retained(self, topic: str) -> bool:
        """Clear the retained message of ``topic`` (for the API); False when there is none."""
        if self.retained.delete(topic) is None:
            return False
        if self.store is not None and not topic.startswith("$SYS/"):
            self.store.delete_retained(topic)
        return True

    # --- subscribe -------------------------------------------------------------

    def subscribe(
        self,
        session: Session,
        options: Iterable[SubscriptionOptions],
        sub_id: int | None,
        client: Client | None = None,
        *,
        admin: bool = False,
    ) -> tuple[list[int], list[Callable[[], None]]]:
        """Install subscriptions; return the reason codes and the retained deliveries to run
        after the SUBACK has been sent. ``admin``: made by an administrator, so the ACL
        does not apply (EMQX 4.4's API subscribe), neither now nor at delivery."""
        settings = self.settings
        metrics = self.metrics
        codes: list[int] = []
        deliveries: list[Callable[[], None]] = []
        for opt in options:
            topic_filter = opt.topic_filter
            try:
                validate_topic_filter(
                    topic_filter, settings.max_topic_levels, settings.max_topic_length
                )
                group, plain = parse_shared(topic_filter)
            except TopicError:
                metrics["packets.subscribe.error"] += 1
                codes.append(rc.TOPIC_FILTER_INVALID)
                continue
            if group is not None and not settings.shared_subscription:
                codes.append(rc.SHARED_SUBSCRIPTIONS_NOT_SUPPORTED)
                continue
            if not settings.wildcard_subscription and is_wildcard(plain):
                codes.append(rc.WILDCARD_SUBSCRIPTIONS_NOT_SUPPORTED)
                continue
            if not admin and not self.acl.check_subscribe(
                session.client_id, session.username, topic_filter
            ):
                metrics["packets.subscribe.auth_error"] += 1
                codes.append(rc.NOT_AUTHORIZED)
                continue
            if (
                settings.max_subscriptions
                and topic_filter not in session.subscriptions
                and len(session.subscriptions) >= settings.max_subscriptions
            ):
                codes.append(rc.QUOTA_EXCEEDED)
                continue
            qos = min(opt.qos, settings.max_qos)
            sub = Subscription(
                session.client_id,
                session,
                topic_filter,
                qos,
                no_local=opt.no_local,
                retain_as_published=opt.retain_as_published,
                retain_handling=opt.retain_handling,
                identifier=sub_id,
            )
            sub.acl_admin = admin
            self.acl_guard(sub)
            existed = self.router.add(sub) is not None
            session.subscriptions[topic_filter] = sub
            metrics["client.subscribe"] += 1
            codes.append(qos)
            if (
                group is None
                and settings.retain_available
                and (opt.retain_handling == 0 or (opt.retain_handling == 1 and not existed))
            ):
                deliveries.append(partial(self._deliver_retained, session, sub))
        if session.persistent:
            self.persist_session(session)
        if client is not None and client.version != MQTT5:
            codes = [c if c < 0x80 else rc.V3_SUBACK_FAILURE for c in codes]
        return codes, deliveries

    def _deliver_retained(self, session: Session, sub: Subscription) -> None:
        if self.restoring:
            self._retained_waiting.append((session, sub))
            return
        ids = sub.ids
        sub_qos = sub.qos
        acl_gen = self.acl.generation
        for msg in self.retained.match(sub.filter, time.monotonic()):
            if sub.acl_gen != acl_gen and not self.acl_delivers(sub, msg.topic):
                continue
            session.deliver(msg, msg.qos if msg.qos < sub_qos else sub_qos, True, ids)
            msg.cache = None

    def unsubscribe(self, session: Session, topic_filters: Iterable[str]) -> list[int]:
        codes = []
        for topic_filter in topic_filters:
            removed = self.router.remove(session.client_id, topic_filter)
            if session.subscriptions.pop(topic_filter, None) is not None or removed is not None:
                self.metrics["client.unsubscribe"] += 1
                codes.append(rc.SUCCESS)
            else:
                codes.append(rc.NO_SUBSCRIPTION_EXISTED)
        if session.persistent:
            self.persist_session(session)
        return codes

    # --- writing and back-pressure ------------------------------------------

    def mark_dirty(self, client: Client) -> None:
        self._dirty.append(client)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self.loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        dirty = self._dirty
        if not dirty:
            return
        self._dirty = []
        for client in dirty:
            client.flush()

    def _block(self, origin: Client, target: Client) -> None:
        if target.slow or target is origin or target in origin.paused_by:
            return
        origin.paused_by.add(target)
        target.blocked.append(origin)
        if not origin.read_paused and not origin.closing:
            origin.read_paused = True
            origin.paused_since = time.monotonic()
            self._paused.add(origin)
            origin.transport.pause_reading()

    def release_publishers(self, target: Client) -> None:
        """``target`` can take more again: resume the publishers it held up."""
        blocked = target.blocked
        if not blocked:
            return
        target.blocked = []
        for origin in blocked:
            origin.paused_by.discard(target)
            if not origin.paused_by and origin.read_paused:
                origin.read_paused = False
                self._paused.discard(origin)
                if not origin.closing:
                    origin.transport.resume_reading()

    def saturated(self) -> bool:
        """Whether the broker as a whole is short of CPU, the one reason to slow publishers."""
        now = time.monotonic()
        return now < self._busy_until or now > self._probe_due + _LAG_HIGH

    def _probe_load(self) -> None:
        now = time.monotonic()
        cpu = time.process_time()
        then, cpu_then = self._cpu_mark
        self._cpu_mark = (now, cpu)
        if now > then and cpu - cpu_then >= _BUSY * (now - then):
            self._busy_until = now + _HOLD
        elif now > self._probe_due + _LAG_HIGH:
            self._busy_until = max(self._busy_until, now + _LAG_HOLD)
        elif self._paused and now >= self._busy_until:
            # CPU to spare again: whoever is still backed up only queues and drops.
            for origin in list(self._paused):
                for target in list(origin.paused_by):
                    self.release_publishers(target)
        self._probe_due = now + _PROBE
        self._load_probe = self.loop.call_later(_PROBE, self._probe_load)

    def _unblock(self, client: Client) -> None:
        """Forget the pause relations of a closing connection."""
        self.release_publishers(client)
        for target in client.paused_by:
            if client in target.blocked:
                target.blocked.remove(client)
        client.paused_by.clear()
        self._paused.discard(client)

    # --- periodic work ----------------------------------------------------------

    def _tick(self) -> None:
        now = time.monotonic()
        self.stats_tracker.sample()
        if self.banned:
            self.banned.expire(time.time())
        self.alarm_checks.tick(now)
        if self._watched:
            self.topic_metrics.tick(now)
        if self._paused:
            for origin in list(self._paused):
                if now - origin.paused_since >= _MAX_PAUSE:
                    for target in list(origin.paused_by):
                        target.slow = True
                        self.release_publishers(target)
        interval = self.settings.sys_interval
        if interval > 0 and now - self._last_sys >= interval:
            self._publish_sys()
        self._housekeeping = self.loop.call_later(1.0, self._tick)

    def _publish_sys(self) -> None:
        from ferrymq.core.sys_topics import sys_messages

        self._last_sys = time.monotonic()
        self.publish_sys(list(sys_messages(self)), retain=True)

    def publish_sys(self, messages: Iterable[tuple[str, bytes]], retain: bool) -> None:
        """Publish the broker's own QoS 0 messages (``$SYS/...``) without counting traffic.

        The broker describing itself is not traffic: the inbound counters are
        restored afterwards, so an idle broker reports no messages received or dropped.
        """
        metrics = self.metrics
        saved = [(key, metrics[key]) for key in _SYS_UNCOUNTED]
        for topic, payload in messages:
            self.publish(Message(topic, payload, 0, retain))
        metrics.update(saved)

    # --- persistence hooks (called by Session and Client) ----------------------

    def persist_session(self, session: Session) -> None:
        if self.store is not None and session.persistent:
            self.durable_writes += 1
            self.store.put_session(session.client_id, session.snapshot())

    def store_put_delivery(self, session: Session, d: Delivery) -> None:
        if self.store is not None:
            self.durable_writes += 1
            self.store.put_session_message(session.client_id, d.key, d.msg, d.meta())

    def store_update_meta(self, session: Session, d: Delivery) -> None:
        if self.store is not None:
            self.durable_writes += 1
            self.store.update_session_message_meta(session.client_id, d.key, d.meta())

    def store_delete_delivery(self, session: Session, d: Delivery) -> None:
        if self.store is not None:
            self.durable_writes += 1
            self.store.delete_session_message(session.client_id, d.key)

    def store_awaiting_rel(self, session: Session, pid: int, awaiting: bool) -> None:
        """An incoming QoS 2 packet id of a persistent session starts or stops awaiting PUBREL."""
        store = self.store
        if store is not None:
            self.durable_writes += 1
            if awaiting:
                store.put_awaiting_rel(session.client_id, pid)
            else:
                store.delete_awaiting_rel(session.client_id, pid)

    # --- acknowledgements after commit ------------------------------------------

    def hold_batch(self) -> int:
        """The store batch holding the writes made so far; it is asked to commit now."""
        store = self.store
        assert store is not None
        batch = store.open_batch
        if batch > self._commit_wanted:
            self._commit_wanted = batch
            store.request_commit(batch)
        return batch

    def hold_acks(self, client: Client) -> None:
        """``client`` now holds acknowledgements until batches commit."""
        self._holding.append(client)

    def _committed(self, batch: int) -> None:
        """The store committed ``batch`` (and all before it): release what waited for it."""
        holding = self._holding
        if holding:
            self._holding = [client for client in holding if client.release_acks(batch)]

    # --- introspection (API, $SYS) ----------------------------------------------

    def stats(self) -> dict[str, int]:
        """EMQX's stats (``connections.count``, ``connections.max`` ...), see core/stats.py."""
        return self.stats_tracker.sample()
