"""The broker of a clustered node: a ``Broker`` whose publish also forwards.

A standalone node uses ``core.Broker`` itself, so cluster mode costs it
nothing. Here, after local routing, a message goes to every other node whose
route matches its topic (``RouteReplica.nodes_for``: a dict look-up once the
topic is cached), framed once, in the next batch to each node. A message whose
topic is cached (as going to no other node, or to known ones), while no hand-over
is recent and no node has a shared group, never leaves the compiled
``Broker.publish`` (it reads the replica's cache itself and puts into the
compiled outbox, ``Broker._forward``); everything else comes here
(``publish_cluster``). Received messages are counted as a client's read is
(``Broker.in_read``): once per dispatched slice, not per message.

Rules kept here:
- a message received from another node is dispatched locally only, never
  forwarded again (``dispatch_remote``), so a message crosses at most one hop
  and reaches each node once;
- a forwarded message's retain flag only serves retain-as-published:
  retained state travels on its own (``ClusterNode.retain_changed``), to
  every node, whether it has a matching route or not;
- ``$SYS/`` topics are forwarded like any other (as EMQX's ``emqx_sys``
  publishes through the broker): a ``$SYS/#`` subscriber on any node gets
  every node's ``$SYS/brokers/<node>/...``, whose names never collide. They
  stay out of the cluster's retained set (each node retains its own in
  memory) and, on the receiving node, out of its message counters, as on
  the node that publishes them;
- while the outbox holds more than ``outbox.HIGH`` messages and the broker
  is short of CPU, the publishers adding to it are paused until the sender
  has handed it to Redis (one comparison per forwarded message otherwise);
- while a destination says it is behind with its QoS 0 inbox
  (``pressure.Destinations.behind``), a client whose QoS 0 message goes there is
  paused until it is not (one truth test per forwarded message otherwise);
- a QoS 1/2 message from a client that goes to other nodes has its PUBACK /
  PUBREC held until the send carrying it is in Redis (``cluster/acks.py``:
  ``durable_writes`` is bumped, so the client asks ``hold_batch``); a
  local-only or QoS 0 message pays nothing for it;
- a publish that found subscribers only on other nodes counts as matched
  (PUBACK reason 0, not "no matching subscribers"), and not as dropped;
- a shared group gets each message once cluster-wide: the publishing node
  picks the node that serves it (``cluster/shared.py``), serves it itself
  or forwards the message naming the group; a forwarded message serves only
  the groups it names (none when it names none). A node asked to serve a
  group it no longer has members of passes the message on to another node
  that has (once: ``hops``), so a member leaving loses nothing while others
  remain. While no node has any shared group, publish pays one truth test.
- persistent sessions are written to Redis (``ClusterStore``), and a CONNECT
  waits for the cluster-wide client registry (``cluster/clients.py``).
"""

from __future__ import annotations

import asyncio
import time
from functools import partial
from typing import TYPE_CHECKING

from ferrymq.cluster.acks import AckGate
from ferrymq.cluster.adminsync import AdminSync
from ferrymq.cluster.clients import SKIP, ClientRegistry
from ferrymq.cluster.codec import Serve
from ferrymq.cluster.node import ClusterNode
from ferrymq.cluster.outbox import Backlog
from ferrymq.cluster.pressure import LOOK_EVERY, DispatchGate
from ferrymq.cluster.router import ClusterRouter
from ferrymq.cluster.shared import group_key
from ferrymq.cluster.store import ClusterStore
from ferrymq.core.broker import Broker, online
from ferrymq.model.message import Message
from ferrymq.mqtt.topics import parse_shared
from ferrymq.storage.sqlite import SqliteStore

if TYPE_CHECKING:
    from collections.abc import Callable

    from ferrymq.config import Settings
    from ferrymq.core.client import Client
    from ferrymq.core.interfaces import RouteTable
    from ferrymq.core.router import Overlap, SharedGroup
    from ferrymq.model.subscription import Subscription
    from ferrymq.mqtt.packets import Connect
    from ferrymq.storage.store import Store

#: What ``_retain`` does: keep and announce (a local publish), keep only (a retained
#: change from another node), nothing (a forwarded message being dispatched).
_ANNOUNCE, _KEEP, _SKIP = 0, 1, 2

CLUSTER_METRICS = (
    "cluster.forwarded",  # (message, node) pairs sent to other nodes
    "cluster.received",  # messages received from other nodes and dispatched here
    "cluster.forward.paused",  # (message, node) pairs not sent: Redis unreachable
    "cluster.dropped.expired",  # received from another node after their expiry
    "cluster.dropped.queue_full",  # QoS 0 received, dropped: more than this node dispatched
    "cluster.shared.passed_on",  # (message, group) pairs passed on: members left here
    "cluster.shared.dropped",  # (message, group) pairs no member was left for
    "cluster.suback.bound",  # SUBACKs sent on their bound, before every node had the route
)

_NEVER = float("inf")

#: What a forwarded message without groups asks of the local shared groups: nothing.
_SERVE_NONE: dict[str, set[str]] = {}


class ClusterBroker(Broker):
    """``Broker`` plus forwarding to, and dispatch from, the other nodes."""

    def __init__(
        self,
        settings: Settings,
        store: Store | None,
        loop: asyncio.AbstractEventLoop,
        router: RouteTable,
        node: ClusterNode,
    ) -> None:
        cluster_store = None if store is None else ClusterStore(store, loop)
        super().__init__(settings, cluster_store, loop, router=router)
        self.node = node
        #: The cluster-wide client registry (one client id, one session).
        self.cluster_clients = ClientRegistry(node, cluster_store)
        node.parts.append(self.cluster_clients)
        self._nodes_for = node.replica.nodes_for
        self._answers = node.replica.answers()
        self._groups_for = node.shared.groups_for
        # Read by Broker.publish too, which keeps local-only traffic in compiled code.
        self.cluster_answers = self._answers
        self.cluster_recent = self.cluster_clients.recent  # not empty while a hand-over is recent
        self.cluster_shared = node.shared.by_node  # empty while no node has a shared group
        #: During a publish: the local groups to serve, ``{plain filter: {group name}}``
        #: (None: every matching one, as standalone); what is left after it was not served.
        self._serve: dict[str, set[str]] | None = None
        self._retain_mode = _ANNOUNCE
        self._outbox = node.outbox
        self._backlog = Backlog()
        self._behind = node.destinations.behind  # node -> the publishers paused for it
        # What Broker.publish forwards with when the topic's nodes are cached (_forward).
        self.cluster_node = node
        self.cluster_outbox = node.outbox
        self.cluster_wake = node._wake.set
        self.cluster_behind = self._behind
        #: PUBACKs / PUBRECs held for the forwarding send (and the store, when "acked").
        self._acks = AckGate()
        self.holds_acks = True
        self._held_at = 0  # durable_writes at the last hold_batch
        #: Cluster-wide admin data (``adminsync.py``), with a SQLite store.
        self.admin: AdminSync | None = None
        for name in CLUSTER_METRICS:
            self.metrics[name] = 0

    def publish_cluster(self, msg: Message, origin: Client | None) -> int:
        """What ``Broker.publish`` hands over: a hand-over is recent, a shared group exists
        somewhere, the node is down, or the topic's nodes are not cached (a topic cached
        as going to other nodes stays in ``Broker._forward``, which keeps these rules)."""
        if self.cluster_recent:
            self.cluster_clients.note(msg)
        if self.cluster_shared:
            return self._publish_shared(msg, origin)
        count = Broker.publish(self, msg, origin, True)
        topic = msg.topic
        nodes = self._answers.get(topic)  # the warm path: no call
        if nodes is None:
            nodes = self._nodes_for(topic)
        if not nodes:
            return count
        self.node.forward(msg, nodes)
        if origin is not None:
            Broker._forwarded(self, msg, origin, nodes)
        return count + len(nodes)

    def hold_behind(self, origin: Client, nodes: tuple[str, ...]) -> None:
        """``origin``'s QoS 0 message went to ``nodes``: it waits for those that are behind."""
        behind = self._behind
        for node in nodes:
            held = behind.get(node)
            if held is not None:
                self.flow.block(origin, held, elsewhere=True)  # type: ignore[arg-type]

    def hold_forwarding(self, origin: Client) -> None:
        """The outbox is long and the broker short of CPU: ``origin`` waits for the send."""
        self.flow.block(origin, self._backlog)  # type: ignore[arg-type]

    def forwarded(self, send: int) -> None:
        """The sender handed send number ``send`` to Redis (or dropped it): publishers read
        again, and the acknowledgements that waited for it leave."""
        backlog = self._backlog
        backlog.slow = False
        if backlog.blocked:
            self.flow.release_publishers(backlog)  # type: ignore[arg-type]
        due = self._acks.forwarded(send)
        if due:
            Broker._committed(self, due)

    def hold_batch(self) -> int:
        """The ticket an acknowledgement waits for: the forwarding send carrying what was
        just queued for other nodes, and with ``durability = "acked"`` the store batch."""
        writes = self.durable_writes
        # Nothing but the forwarding bump since the last hold: no store write to wait for
        # (and no empty commit asked of the store for each forwarded message).
        forward_only = self.cluster_forward_bump == writes and self._held_at == writes - 1
        self._held_at = writes
        batch = Broker.hold_batch(self) if self.ack_on_commit and not forward_only else 0
        return self._acks.hold(batch, self._outbox.due())

    def _committed(self, batch: int) -> None:
        due = self._acks.committed(batch)
        if due:
            Broker._committed(self, due)

    def _publish_shared(self, msg: Message, origin: Client | None) -> int:
        """``publish`` while shared groups exist somewhere: one node per matching group."""
        topic = msg.topic
        if not self.node.up:  # Redis unreachable: local members serve their groups
            count = Broker.publish(self, msg, origin, True)
            nodes = self._nodes_for(topic)
            if nodes:
                self.node.forward(msg, nodes)  # counted as paused
            return count + len(nodes)
        groups = self._groups_for(topic)
        remote: dict[str, list[str]] = {}
        serve: dict[str, set[str]] = {}
        own = self.node.name
        publisher = msg.publisher
        for group in groups:
            node = group.choose(publisher)
            if node == own:
                serve.setdefault(group.filter, set()).add(group.name)
            elif node is not None:
                remote.setdefault(node, []).append(group.key)
        self._serve = serve
        try:
            count = Broker.publish(self, msg, origin, True)
        finally:
            self._serve = None
        if serve:  # chosen here but gone meanwhile: another node's members
            self._pass_on(msg, serve, remote)
        nodes = self._nodes_for(topic)
        if remote:
            count += self.node.forward_shared(msg, nodes, remote)
        elif nodes:
            self.node.forward(msg, nodes)
            count += len(nodes)
        if origin is not None and (remote or nodes):
            Broker._forwarded(self, msg, origin, (*nodes, *remote))
        return count

    def choose_shared(self, groups: list[SharedGroup], msg: Message) -> list[Subscription | None]:
        """The member of each local group this node serves ``msg`` to (see ``_serve``)."""
        serve = self._serve
        publisher = msg.publisher
        if serve is None:
            return [group.pick(publisher, online) for group in groups]
        picked: list[Subscription | None] = []
        for group in groups:
            names = serve.get(group.filter)
            if names and group.name in names:
                sub = group.pick(publisher, online)
                if sub is not None:
                    picked.append(sub)
                    names.discard(group.name)
                    if not names:
                        del serve[group.filter]
        return picked

    def _pass_on(
        self, msg: Message, left: dict[str, set[str]], remote: dict[str, list[str]]
    ) -> None:
        """Groups this node was to serve ``msg`` to but has no member of any more: to
        another node that has, added to ``remote``; counted as dropped when none has."""
        metrics = self.metrics
        shared = self.node.shared
        own = self.node.name
        for plain, names in left.items():
            for name in names:
                key = group_key(name, plain)
                group = shared.get(key)
                node = None if group is None else group.choose(msg.publisher, skip=own)
                if node is None:
                    metrics["cluster.shared.dropped"] += 1
                else:
                    metrics["cluster.shared.passed_on"] += 1
                    remote.setdefault(node, []).append(key)

    def acl_delivers(self, sub: Subscription | Overlap, topic: str) -> bool:
        """Also refuses a target marked ``SKIP``: a session taken from a live node that
        had this message already, handed on by its old node (``ClientRegistry.note``)."""
        if sub.acl_gen == SKIP:
            return False
        return Broker.acl_delivers(self, sub, topic)

    def hold_connect(self, client: Client, packet: Connect) -> bool:
        return self.cluster_clients.hold_connect(client, packet)

    def unrouted(self, msg: Message) -> bool:
        """Dropped only when no other node subscribes either, or when ``msg`` came from
        another node (``dispatch_remote``: it is not forwarded again)."""
        topic = msg.topic
        if self._retain_mode == _SKIP:
            return True
        return not self._nodes_for(topic) and not (self.cluster_shared and self._groups_for(topic))

    def after_routes(self, client: Client, done: Callable[[], None]) -> bool:
        """Hold a SUBACK (``done``) until the routes it added are in Redis, boundedly."""
        return self.node.hold_suback(client, done)

    def dispatch_remote(
        self,
        messages: list[Message],
        served: dict[int, Serve] | None = None,
        start: int = 0,
        gate: DispatchGate | None = None,
        until: float = _NEVER,
    ) -> int:
        """Messages forwarded by another node, from index ``start``: to the local subscribers
        only, and to one member of each local shared group a message names (``served``, by
        index). Every few messages (``LOOK_EVERY``, or the gate's ``every``) it looks at
        the clock, and stops once it is past ``until`` (a ``time.monotonic`` time: one
        batch may hold thousands), and, with ``gate`` (the QoS 1/2 inbox's), at the local
        queues the messages since the last look went to, and stops if one is full; it does
        not start while the gate still waits. The index to go on from (``len(messages)``
        once all went)."""
        if served is None and gate is None and not self.cluster_recent:
            # Plain messages (the QoS 0 inbox's, mostly): the compiled loop.
            self._retain_mode = _SKIP
            self._serve = _SERVE_NONE
            try:
                return Broker.dispatch_forwarded(self, messages, start, until, LOOK_EVERY)
            finally:
                self._serve = None
                self._retain_mode = _ANNOUNCE
        clock = time.monotonic
        now = clock()
        if gate and not gate.ready(now):
            return start
        self._retain_mode = _SKIP
        self._serve = _SERVE_NONE
        was_in_read = self.in_read
        self.in_read = True  # the held counts are added once, at the end
        received = expired = 0
        publish = Broker.publish
        recent = self.cluster_recent
        targets = self.router.targets
        topics: list[str] = []  # dispatched since the gate last looked
        every = LOOK_EVERY if gate is None else gate.every
        try:
            for i in range(start, len(messages)):
                msg = messages[i]
                if msg.expired(now):
                    expired += 1
                    continue
                received += 1
                if recent:
                    self.cluster_clients.note(msg)
                ask = None if served is None else served.get(i)
                if msg.topic.startswith("$SYS/"):
                    Broker.route_uncounted(
                        self, msg, None if ask is None else partial(self._serve_groups, msg, *ask)
                    )
                elif ask is None:
                    publish(self, msg, None, True)
                else:
                    self._serve_groups(msg, *ask)
                if gate is not None:
                    topics.append(msg.topic)
                if not i % every:
                    if topics and gate.check(topics, targets, now):  # type: ignore[union-attr]
                        return i + 1
                    if clock() >= until:
                        return i + 1
            if topics:
                gate.check(topics, targets, now)  # type: ignore[union-attr]
        finally:
            self._serve = None
            self._retain_mode = _ANNOUNCE
            Broker.dispatched(self, received, expired, was_in_read)
        return len(messages)

    def _serve_groups(self, msg: Message, keys: tuple[str, ...], hops: int) -> None:
        serve: dict[str, set[str]] = {}
        for key in keys:
            name, plain = parse_shared(key)
            if name is not None:
                serve.setdefault(plain, set()).add(name)
        self._serve = serve
        try:
            Broker.publish(self, msg, None, True)
        finally:
            self._serve = _SERVE_NONE
        if not serve:
            return
        if hops:  # passed on once already: not again
            self.metrics["cluster.shared.dropped"] += sum(len(n) for n in serve.values())
            return
        remote: dict[str, list[str]] = {}
        self._pass_on(msg, serve, remote)
        if remote:
            self.node.forward_shared(msg, (), remote, hops=1)

    def apply_remote_retain(self, msg: Message) -> None:
        """Another node's retained change (an empty payload clears the topic)."""
        self._retain_mode = _KEEP
        try:
            Broker._retain(self, msg)
        finally:
            self._retain_mode = _ANNOUNCE
            self.add_held()  # its count, held as in a publish

    def _retain(self, msg: Message) -> None:
        mode = self._retain_mode
        if mode == _SKIP:
            return
        Broker._retain(self, msg)
        if (
            mode == _ANNOUNCE
            and self.settings.retain_available
            and not msg.topic.startswith("$SYS/")
        ):
            self.node.retain_changed(msg)

    def delete_retained(self, topic: str) -> bool:
        found = super().delete_retained(topic)
        if found and not topic.startswith("$SYS/"):
            self.node.retain_changed(Message(topic, b"", 0, True))
        return found


def clustered_broker(
    settings: Settings, store: Store | None, loop: asyncio.AbstractEventLoop
) -> ClusterBroker:
    """The broker of a node joining the cluster at ``settings.cluster_redis_url``: its node
    (``broker.node``) is started with ``broker.node.start()`` once the node's state is back."""
    node = ClusterNode(
        settings.node_name, settings.cluster_redis_url, settings.shared_subscription_strategy
    )
    router = ClusterRouter(
        settings.shared_subscription_strategy,
        node.route_added,
        node.route_removed,
        node.share_changed,
        node.route_joined,
    )
    broker = ClusterBroker(settings, store, loop, router, node)
    node.attach(broker)
    if isinstance(store, SqliteStore):  # the admin data lives in the SQLite store
        broker.admin = AdminSync(settings.node_name, broker, store, settings.data_dir, loop)
        node.parts.append(broker.admin)
    return broker
