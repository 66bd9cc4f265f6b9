"""The broker: routing, retained messages, subscriptions, access; the parts composed.

Everything here runs on the event loop thread and never blocks: durable
writes are handed to the store, which batches them on its own thread.

The broker is composed of parts, each keeping its own rules (see their module
docstrings): ``Sessions`` (core/sessions.py: registry, resume, takeover,
expiry), ``Wills`` (core/wills.py), ``Flow`` (core/flow.py: write scheduling
and back-pressure), ``Restore`` (core/restore.py: start-up from the store) and
``SysPublisher`` (core/sys_topics.py). It is typed against the ``Store``
protocol (storage/store.py) and the ``RouteTable`` protocol
(core/interfaces.py), not against their implementations.

Rules kept here:
- a message goes to every matching subscription once per client (overlapping
  subscriptions fold into one delivery), to one member of each shared group,
  never back to its publisher through a no-local subscription, and only where
  the ACL allows delivery;
- a retained message with a payload replaces the topic's retained message,
  one without clears it; both are stored, ``$SYS`` ones are not;
- with ``durability = "acked"`` an acknowledgement that confirms durable state
  (a message retained or queued for a persistent session, a QoS 2 state
  change) waits for the store batch holding it (``hold_batch`` /
  ``_committed``); the store is asked to commit at once (group commit).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from functools import partial
from typing import TYPE_CHECKING, Any, final

from mypy_extensions import mypyc_attr

from ferrymq.access.acl import Acl, AclRule
from ferrymq.access.authn import Authenticator
from ferrymq.core.alarms import AlarmChecks
from ferrymq.core.banned import BanList
from ferrymq.core.deadlines import Deadlines
from ferrymq.core.flow import Flow
from ferrymq.core.metrics import new_metrics
from ferrymq.core.restore import Restore
from ferrymq.core.retained import RetainedStore
from ferrymq.core.router import Overlap, Router, SharedGroup
from ferrymq.core.session import Session
from ferrymq.core.sessions import Sessions
from ferrymq.core.stats import Stats
from ferrymq.core.sys_topics import SysPublisher, uncounted
from ferrymq.core.topic_metrics import DROPPED, IN, OUT, QOS_IN, QOS_OUT, TopicMetrics
from ferrymq.core.wills import Wills
from ferrymq.model.delivery import Delivery
from ferrymq.model.message import Message
from ferrymq.model.subscription import Subscription
from ferrymq.mqtt import reason_codes as rc
from ferrymq.mqtt.packets import Connect, SubscriptionOptions, Will
from ferrymq.mqtt.topics import (
    TopicError,
    is_wildcard,
    parse_shared,
    validate_topic_filter,
)

if TYPE_CHECKING:
    from ferrymq.config import Settings
    from ferrymq.core.client import Client
    from ferrymq.core.interfaces import Forwarding, RouteTable
    from ferrymq.storage.store import Store

log = logging.getLogger("ferrymq.broker")


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


def _nothing() -> None:
    """``cluster_wake`` of a standalone broker, which forwards nothing."""


def online(sub: Subscription) -> bool:
    """Whether ``sub``'s session has a connection (shared groups prefer such members)."""
    session = sub.session
    return session.client is not None  # type: ignore[attr-defined]


# ClusterBroker and ClusterRouter (cluster/) extend it in interpreted code.
@mypyc_attr(allow_interpreted_subclasses=True)
class Broker:
    """All broker state of one node."""

    def __init__(
        self,
        settings: Settings,
        store: Store | None = None,
        loop: asyncio.AbstractEventLoop | None = None,
        router: RouteTable | None = None,
    ) -> None:
        """``router``: the route table to use instead of a local ``Router`` (cluster mode)."""
        self.settings = settings
        self.loop = loop = loop or asyncio.get_event_loop()
        self.store = store
        # The counters as written; ``metrics`` adds the held ones first (``add_held``).
        self.counters = new_metrics()
        if router is None:
            router = Router(settings.shared_subscription_strategy)
        self.router: RouteTable = router
        self.retained = RetainedStore(settings.max_retained_messages)
        self.registry = Sessions(self)
        self.sessions: dict[str, Session] = self.registry.sessions
        self.clients: dict[str, Client] = self.registry.clients
        # Open connections: a dict used as a set (about 30 bytes an entry; a set's take
        # 33 to 105 as it grows by four).
        self.connections: dict[Client, None] = {}
        self.deadlines = Deadlines(loop)  # every connection's timer (core/deadlines.py)
        self.wills = Wills(self)
        self.flow = flow = Flow(loop, settings.max_mqueue_len, settings.max_inflight)
        # What connections call on every write and ack: the flow's own methods.
        self.mark_dirty = flow.mark_dirty
        self.release_publishers = flow.release_publishers
        self.saturated = flow.saturated
        self.restore = Restore(self)
        self.defer_connect = self.restore.defer_connect
        self.load_state = self.restore.load_state
        self.finish_restore = self.restore.finish_restore
        self.sys = SysPublisher(self)
        self.publish_sys = self.sys.publish
        self.authenticator = Authenticator(settings.anonymous_allowed())
        self.acl = Acl(settings.acl_nomatch, metrics=self.counters)
        self.banned = BanList()
        self.alarm_checks = AlarmChecks(self)
        self.topic_metrics = TopicMetrics()
        self._watched = self.topic_metrics.watched  # read once per publish, see publish()
        self.started_at = time.time()
        #: Wall clock of the latest read from any client: the ``created`` time of the
        #: messages it brought (one float for a read's messages, one clock call per read).
        #: ``Any``: compiled code keeps a ``float`` attribute unboxed and would box a new
        #: float for every message it is read into (24 bytes each of a retained message).
        self.read_at: Any = self.started_at
        self.stats_tracker = Stats(self)
        self._housekeeping: asyncio.TimerHandle | None = None
        # Acknowledgements after commit: every store write made on behalf of a
        # client bumps durable_writes (so a handler sees whether it wrote), clients
        # with held acknowledgements wait in _holding for the batch they need.
        self.ack_on_commit = store is not None and settings.durability == "acked"
        #: Whether a client hands acknowledgements after writes to ``hold_batch`` (a cluster
        #: node also holds them for the forwarding send to Redis).
        self.holds_acks = self.ack_on_commit
        #: Cluster mode only (``cluster/broker.py`` sets them; None standalone: one test per
        #: publish): the other nodes' cached route answers by topic, and what is empty while
        #: no hand-over is recent and no node has a shared group. A publish whose topic is
        #: cached as going nowhere else then stays here, in compiled code.
        self.cluster_answers: dict[str, tuple[str, ...]] | None = None
        self.cluster_recent: dict[str, Any] = {}
        self.cluster_shared: dict[str, Any] = {}
        #: The node (its ``up``), the outbox a cached forward goes to (``_forward``) and
        #: what wakes the node's sender, ``durable_writes`` at the last forwarding bump
        #: (``ClusterBroker.hold_batch``) and the destinations behind with their QoS 0
        #: inbox (not empty: ``hold_behind``).
        self.cluster_node: Any = None
        self.cluster_outbox: Forwarding | None = None
        self.cluster_wake: Callable[[], object] = _nothing
        self.cluster_forward_bump = 0
        self.cluster_behind: dict[str, Any] = {}
        self.durable_writes = 0
        #: The message path's counts, kept in native integers and added to ``counters``
        #: when anything reads ``metrics`` (``add_held``), so every reader sees exact
        #: values. A dict increment costs about 650 instructions, and a QoS 1 message
        #: made about twenty. A publish outside a client's read (``in_read``, set by
        #: ``Client._handle_packets``: the API, wills, ``$SYS``) adds them at once, which
        #: ``$SYS`` relies on to take its own counts back (``sys_topics.uncounted``).
        self.in_read = False
        self.held_publish_packets = 0
        self.held_acl_open = 0
        self.held_qos0 = 0
        self.held_qos1 = 0
        self.held_qos2 = 0
        self.held_unrouted = 0
        self.held_retained = 0
        self.held_bytes_received = 0
        self.held_bytes_sent = 0
        self.held_packets_received = 0
        self.held_packets_sent = 0
        self.held_publish_sent = 0  # packets.publish.sent, messages.sent and .delivered
        self.held_qos0_sent = 0
        self.held_qos1_sent = 0
        self.held_qos2_sent = 0
        self.held_puback_sent = 0
        self.held_puback_received = 0
        self.held_acked = 0
        self._holding: list[Client] = []
        self._commit_wanted = 0
        if self.ack_on_commit:
            assert store is not None
            committed = self._committed

            def on_commit(batch: int) -> None:  # on the store's writer thread
                loop.call_soon_threadsafe(committed, batch)

            store.set_commit_listener(on_commit)

    @property
    def restoring(self) -> bool:
        """Whether stored state is still being read back (see core/restore.py)."""
        return self.restore.active

    # --- start-up and shutdown ----------------------------------------------

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
            self.sys.publish_topics()
        self._housekeeping = self.loop.call_later(1.0, self._tick)
        self.flow.probe_load()

    def shutdown(self) -> None:
        """Tell every client we are going (MQTT 5: 0x8B), close them, persist sessions."""
        if self._housekeeping is not None:
            self._housekeeping.cancel()
            self._housekeeping = None
        self.flow.stop_probe()
        # The server closes these connections: their wills are due (MQTT 3.1.2.5),
        # published now or stored with their due time when they have a delay.
        for client in list(self.connections):
            client.will_allowed = True
            client.kick(rc.SERVER_SHUTTING_DOWN, "server shutting down")
        self.registry.cancel_timers()
        self.wills.cancel_all()
        self.flow.flush()
        if self.store is not None:
            self.store.set_commit_listener(None)

    def _tick(self) -> None:
        now = time.monotonic()
        self.stats_tracker.sample()
        if self.banned:
            self.banned.expire(time.time())
        self.alarm_checks.tick(now)
        if self._watched:
            self.topic_metrics.tick(now)
        self.flow.tick(now)
        self.sys.tick(now)
        self._housekeeping = self.loop.call_later(1.0, self._tick)

    # --- connections ----------------------------------------------------------

    def online_count(self) -> int:
        return len(self.clients)

    def authenticate(self, client_id: str, username: str | None, password: bytes | None) -> int:
        """0 when the CONNECT may proceed, else the MQTT 5 reason code to refuse it with."""
        metrics = self.counters
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
        return self.registry.open(client, clean_start, expiry, will)

    def hold_connect(self, client: Client, packet: Connect) -> bool:
        """Whether the accepted CONNECT of ``client`` waits before its session opens (a
        cluster node asks the others first; it calls ``client.continue_connect`` then)."""
        return False

    def client_closed(self, client: Client) -> None:
        """The connection of ``client`` is gone (or going): detach it from its session."""
        if client not in self.connections:
            return
        del self.connections[client]
        self.flow.forget(client)
        if client.connected:
            self.registry.closed(client)

    def set_session_expiry(self, session: Session, expiry: int) -> None:
        session.set_expiry(expiry)

    def kick(self, client_id: str) -> bool:
        """Close the client's connection and discard its session; its will is published."""
        return self.registry.kick(client_id)

    # --- access ----------------------------------------------------------------

    @final
    def acl_publish(self, client: Client, topic: str) -> bool:
        acl = self.acl
        if acl.allows_all:
            self.held_acl_open += 1  # counted by acl.count_open (add_held)
            return True
        return acl.check_publish(client.client_id, client.username, topic)

    def acl_guard(self, sub: Subscription | Overlap) -> bool:
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

    def acl_delivers(self, sub: Subscription | Overlap, topic: str) -> bool:
        """May a message on ``topic`` go out through ``sub``? Called only while
        ``sub.acl_gen`` differs from the ACL generation (see ``acl_guard``)."""
        acl = self.acl
        if sub.acl_gen != -acl.generation - 2 and not self.acl_guard(sub):
            return True
        session: Session = sub.session  # type: ignore[assignment]
        if acl.check_delivery(sub.client_id, session.username, topic):
            return True
        metrics = self.counters
        metrics["delivery.dropped.acl"] += 1
        metrics["delivery.dropped"] += 1
        return False

    # --- publish -------------------------------------------------------------

    @final
    def publish(self, msg: Message, origin: Client | None = None, here: bool = False) -> int:
        """Route ``msg`` to every matching subscription; return how many it went to. On a
        cluster node, unless ``here`` (route it on this node only), a message that may
        concern other nodes goes to ``publish_cluster``.

        Final, as ``acl_publish``: the compiled client calls both as ``Broker.publish(broker,
        ...)``, a direct C call. A method call on an instance of an interpreted subclass
        (``ClusterBroker``) would go through mypyc's glue instead (attribute look-up, a
        bound method, an argument tuple and dict, parsing), for each message a clustered
        node reads; what a cluster node changes it changes through the hooks below. For
        the same reason the final methods here call each other as ``Broker.m(self, ...)``:
        mypyc calls ``self.m(...)`` through the vtable even when ``m`` is final, and an
        interpreted subclass's vtable holds glue only."""
        answers = self.cluster_answers
        if answers is not None and not here:
            nodes = answers.get(msg.topic)
            if nodes is None or nodes or self.cluster_recent or self.cluster_shared:
                if nodes and not self.cluster_recent and not self.cluster_shared:
                    node = self.cluster_node
                    if node is not None and node.up:
                        return Broker._route(self, msg, origin, True) + Broker._forward(
                            self, msg, origin, nodes
                        )
                return self.publish_cluster(msg, origin)
        return Broker._route(self, msg, origin, False)

    @final
    def _forward(self, msg: Message, origin: Client | None, nodes: tuple[str, ...]) -> int:
        """The warm path of ``ClusterBroker.publish_cluster``, here in compiled code: ``msg``
        into the outbox for ``nodes``, with the same acknowledgement and pause rules
        (cluster/broker.py); how many nodes it goes to."""
        outbox = self.cluster_outbox
        assert outbox is not None
        if not outbox.messages:
            self.cluster_wake()  # the sender takes all that joins until it runs
        outbox.put(msg, nodes)
        if origin is not None:
            Broker._forwarded(self, msg, origin, nodes)
        return len(nodes)

    @final
    def _forwarded(self, msg: Message, origin: Client, nodes: tuple[str, ...]) -> None:
        """``origin``'s ``msg`` joined the outbox for ``nodes``: a QoS 1/2 acknowledgement
        waits for the send; a QoS 0 publisher waits for the nodes that are behind, and any
        publisher for a long outbox. Every forwarding path keeps these rules through here."""
        if msg.qos:
            self.durable_writes += 1
            self.cluster_forward_bump = self.durable_writes
        elif self.cluster_behind:
            self.hold_behind(origin, nodes)
        outbox = self.cluster_outbox
        if outbox is not None and outbox.messages >= outbox.high and self.flow.saturated():
            self.hold_forwarding(origin)

    @final
    def dispatch_forwarded(
        self, messages: list[Message], start: int, until: float, every: int
    ) -> int:
        """``ClusterBroker.dispatch_remote``'s common case, here in compiled code: messages
        another node forwarded, from index ``start``, to the local subscribers only (the
        caller has turned off what a forwarded message skips: its retained state, the
        local shared groups). Counted as received by the cluster, or dropped for their
        expiry, and as a client's read is (``in_read``): once, at the end. Every ``every``
        messages it looks at the clock and stops once past ``until``; the index to go on
        from (``len(messages)`` once all went)."""
        clock = time.monotonic
        now = clock()
        was_in_read = self.in_read
        self.in_read = True
        received = expired = 0
        end = len(messages)
        i = start
        try:
            while i < end:
                msg = messages[i]
                i += 1
                if msg.expired(now):
                    expired += 1
                    continue
                received += 1
                if msg.topic.startswith("$SYS/"):
                    Broker.route_uncounted(self, msg)
                else:
                    Broker._route(self, msg, None, False)
                if not i % every and clock() >= until:
                    break
        finally:
            Broker.dispatched(self, received, expired, was_in_read)
        return i

    @final
    def dispatched(self, received: int, expired: int, was_in_read: bool) -> None:
        """A slice of forwarded messages went: ``received`` dispatched, ``expired`` dropped;
        the read it made ends (its held counts are added) unless one was under way."""
        self.in_read = was_in_read
        metrics = self.counters
        if received:
            metrics["cluster.received"] += received
        if expired:
            metrics["cluster.dropped.expired"] += expired
        if not was_in_read:
            Broker.add_held(self)

    @final
    def route_uncounted(self, msg: Message, route: Callable[[], object] | None = None) -> None:
        """Another node's ``$SYS/`` message to the local subscribers (or ``route()``): not
        traffic here either, so the counts it makes are added at once, then taken back."""
        metrics = self.counters
        Broker.add_held(self)
        saved = uncounted(metrics)
        was_in_read = self.in_read
        self.in_read = False
        try:
            if route is None:
                Broker._route(self, msg, None, False)
            else:
                route()
        finally:
            self.in_read = was_in_read
        metrics.update(saved)

    @final
    def _route(self, msg: Message, origin: Client | None, elsewhere: bool) -> int:
        """``publish`` on this node: to every matching local subscription; ``elsewhere``
        when other nodes get it too (then it is not dropped for want of subscribers)."""
        qos = msg.qos
        if qos == 0:
            self.held_qos0 += 1
        elif qos == 1:
            self.held_qos1 += 1
        else:
            self.held_qos2 += 1
        if msg.retain:
            self._retain(msg)
        watched = self._watched
        counters = watched.get(msg.topic) if watched else None
        targets = self.router.targets(msg.topic)
        subs, groups = targets.per_client, targets.groups
        if not subs and not groups:
            if not elsewhere and self.unrouted(msg):
                self.held_unrouted += 1
            if counters is not None:
                _count_topic(counters.counts, qos, ())
            if not self.in_read:
                Broker.add_held(self)
            return 0
        metrics = self.counters
        publisher = msg.publisher
        if groups:
            # One member of each shared group; the router's list itself is not ours to extend.
            picked = self.choose_shared(groups, msg)
            subs = subs + [sub for sub in picked if sub is not None]
        count = 0
        queue_high = self.flow.queue_high
        acl_gen = self.acl.generation
        sub: Subscription | Overlap | None
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
                and self.flow.saturated()
            ):
                self.flow.block(origin, target, len(session.queue))
        if msg.retain:
            msg.cache = None  # the retained store keeps the message, not its encodings
        if counters is not None:
            _count_topic(counters.counts, qos, self._delivered_qos(subs, msg))
        if not self.in_read:
            Broker.add_held(self)
        return count

    @property
    def metrics(self) -> dict[str, int]:
        """The counters under their EMQX names, exact: the held ones added first."""
        Broker.add_held(self)
        return self.counters

    @final
    def add_held(self) -> None:
        """Add the counts held in native integers (see ``in_read``) to ``counters``."""
        metrics = self.counters
        if self.held_publish_packets:
            metrics["packets.publish.received"] += self.held_publish_packets
            self.held_publish_packets = 0
        if self.held_acl_open:
            self.acl.count_open(self.held_acl_open)
            self.held_acl_open = 0
        received = self.held_qos0 + self.held_qos1 + self.held_qos2
        if received:
            metrics["messages.received"] += received
            metrics["messages.publish"] += received
            if self.held_qos0:
                metrics["messages.qos0.received"] += self.held_qos0
                self.held_qos0 = 0
            if self.held_qos1:
                metrics["messages.qos1.received"] += self.held_qos1
                self.held_qos1 = 0
            if self.held_qos2:
                metrics["messages.qos2.received"] += self.held_qos2
                self.held_qos2 = 0
        if self.held_unrouted:
            metrics["messages.dropped"] += self.held_unrouted
            metrics["messages.dropped.no_subscribers"] += self.held_unrouted
            self.held_unrouted = 0
        if self.held_retained:
            metrics["messages.retained"] += self.held_retained
            self.held_retained = 0
        if self.held_bytes_received:
            metrics["bytes.received"] += self.held_bytes_received
            self.held_bytes_received = 0
        if self.held_packets_received:
            metrics["packets.received"] += self.held_packets_received
            self.held_packets_received = 0
        if self.held_bytes_sent:
            metrics["bytes.sent"] += self.held_bytes_sent
            self.held_bytes_sent = 0
        if self.held_packets_sent:
            metrics["packets.sent"] += self.held_packets_sent
            self.held_packets_sent = 0
        if self.held_publish_sent:
            sent = self.held_publish_sent
            metrics["packets.publish.sent"] += sent
            metrics["messages.sent"] += sent
            metrics["messages.delivered"] += sent
            self.held_publish_sent = 0
            if self.held_qos0_sent:
                metrics["messages.qos0.sent"] += self.held_qos0_sent
                self.held_qos0_sent = 0
            if self.held_qos1_sent:
                metrics["messages.qos1.sent"] += self.held_qos1_sent
                self.held_qos1_sent = 0
            if self.held_qos2_sent:
                metrics["messages.qos2.sent"] += self.held_qos2_sent
                self.held_qos2_sent = 0
        if self.held_puback_sent:
            metrics["packets.puback.sent"] += self.held_puback_sent
            self.held_puback_sent = 0
        if self.held_puback_received:
            metrics["packets.puback.received"] += self.held_puback_received
            self.held_puback_received = 0
        if self.held_acked:
            metrics["messages.acked"] += self.held_acked
            self.held_acked = 0

    # Cluster mode's hooks, methods ClusterBroker (cluster/broker.py) overrides: compiled
    # code reads an attribute from its own slot, which a subclass's method cannot replace.

    def publish_cluster(self, msg: Message, origin: Client | None) -> int:
        """``publish`` of a message other nodes may want (a cluster node forwards it)."""
        return self.publish(msg, origin, True)

    def hold_behind(self, origin: Client, nodes: tuple[str, ...]) -> None:
        """``origin``'s QoS 0 message went to ``nodes``, some of which are behind (a cluster
        node pauses it for them)."""

    def hold_forwarding(self, origin: Client) -> None:
        """The outbox is past its high mark while the broker is short of CPU (a cluster
        node pauses ``origin``)."""

    def choose_shared(self, groups: list[SharedGroup], msg: Message) -> list[Subscription | None]:
        """The member of each matching shared group ``msg`` goes to (a cluster node: of
        the groups it serves only)."""
        publisher = msg.publisher
        return [group.pick(publisher, online) for group in groups]

    def after_routes(self, client: Client, send: Callable[[], None]) -> bool:
        """True when ``send`` (a SUBACK) is held until the routes just added reach the
        other nodes; a standalone broker sends it at once."""
        return False

    def unrouted(self, msg: Message) -> bool:
        """No subscription here matches ``msg``: whether it is dropped (a cluster node's
        other nodes may still subscribe)."""
        return True

    def _delivered_qos(self, subs: list[Subscription | Overlap], msg: Message) -> list[int]:
        """The QoS of each delivery ``publish`` made of ``msg`` to ``subs``: the same
        no-local and ACL rules, for the topic-metrics counters of watched topics only."""
        acl, acl_gen, out = self.acl, self.acl.generation, []
        sub: Subscription | Overlap | None
        for sub in subs:
            if sub.no_local and sub.client_id == msg.publisher:
                sub = sub.local
                if sub is None:
                    continue
            session: Session = sub.session  # type: ignore[assignment]
            if sub.acl_gen != acl_gen and not acl.check_delivery(
                sub.client_id, session.username, msg.topic
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
            return Broker.publish(self, msg, origin)
        with store.atomic:
            matched = Broker.publish(self, msg, origin)
            session.awaiting_rel[pid] = time.monotonic()
            if session.expiry_interval:
                self.store_awaiting_rel(session, pid, True)
        return matched

    def _retain(self, msg: Message) -> None:
        if not self.settings.retain_available:
            return
        durable = self.store is not None and not msg.topic.startswith("$SYS/")
        restore = self.restore
        if restore.active:
            restore.touched(msg.topic)
        if msg.payload:
            if self.retained.set(msg):
                self.held_retained += 1
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
        metrics = self.counters
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
                acl_admin=admin,
            )
            self.acl_guard(sub)
            existed = self.router.add(sub) is not None
            session.add_subscription(sub)
            metrics["client.subscribe"] += 1
            codes.append(qos)
            if (
                group is None
                and settings.retain_available
                and (opt.retain_handling == 0 or (opt.retain_handling == 1 and not existed))
            ):
                deliveries.append(partial(self.deliver_retained, session, sub))
        if session.persistent:
            self.persist_session(session)
        return codes, deliveries

    def deliver_retained(self, session: Session, sub: Subscription) -> None:
        """The retained messages ``sub`` matches, to ``session`` (after its SUBACK)."""
        restore = self.restore
        if restore.active:
            restore.wait_retained(session, sub)
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
            if session.remove_subscription(topic_filter) is not None or removed is not None:
                self.counters["client.unsubscribe"] += 1
                codes.append(rc.SUCCESS)
            else:
                codes.append(rc.NO_SUBSCRIPTION_EXISTED)
        if session.persistent:
            self.persist_session(session)
        return codes

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
        """The store batch holding the writes made so far; it is asked to commit now
        (a number ``_committed`` reports; 0: nothing to wait for)."""
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
