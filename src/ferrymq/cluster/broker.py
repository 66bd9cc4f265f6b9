"""The broker of a clustered node: a ``Broker`` whose publish also forwards.

A standalone node uses ``core.Broker`` itself, so cluster mode costs it
nothing. Here, after local routing, a message goes to every other node whose
route matches its topic (``RouteReplica.nodes_for``: a dict look-up once the
topic is cached), framed once, in the next batch to each node.

Rules kept here:
- a message received from another node is dispatched locally only, never
  forwarded again (``dispatch_remote``), so a message crosses at most one hop
  and reaches each node once;
- a forwarded message's retain flag only serves retain-as-published:
  retained state travels on its own (``ClusterNode.retain_changed``), to
  every node, whether it has a matching route or not;
- ``$SYS/`` topics stay on the node that publishes them (each node has its
  own ``$SYS/brokers/<node>/...``);
- a publish that found subscribers only on other nodes counts as matched
  (PUBACK reason 0, not "no matching subscribers"), and not as dropped.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

from ferrymq.cluster.adminsync import AdminSync
from ferrymq.cluster.node import ClusterNode
from ferrymq.cluster.router import ClusterRouter
from ferrymq.core.broker import Broker
from ferrymq.model.message import Message
from ferrymq.storage.sqlite import SqliteStore

if TYPE_CHECKING:
    from ferrymq.config import Settings
    from ferrymq.core.client import Client
    from ferrymq.core.interfaces import RouteTable
    from ferrymq.storage.store import Store

#: What ``_retain`` does: keep and announce (a local publish), keep only (a retained
#: change from another node), nothing (a forwarded message being dispatched).
_ANNOUNCE, _KEEP, _SKIP = 0, 1, 2

CLUSTER_METRICS = (
    "cluster.forwarded",  # (message, node) pairs sent to other nodes
    "cluster.received",  # messages received from other nodes and dispatched here
    "cluster.forward.paused",  # (message, node) pairs not sent: Redis unreachable
    "cluster.dropped.expired",  # received from another node after their expiry
)


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
        super().__init__(settings, store, loop, router=router)
        self.node = node
        self._nodes_for = node.replica.nodes_for
        self._retain_mode = _ANNOUNCE
        #: Cluster-wide admin data (``adminsync.py``), with a SQLite store.
        self.admin: AdminSync | None = None
        for name in CLUSTER_METRICS:
            self.metrics[name] = 0

    def publish(self, msg: Message, origin: Client | None = None) -> int:
        count = Broker.publish(self, msg, origin)
        topic = msg.topic
        nodes = self._nodes_for(topic)
        if not nodes or topic.startswith("$SYS/"):
            return count
        self.node.forward(msg, nodes)
        return count + len(nodes)

    def unrouted(self, msg: Message) -> bool:
        """Dropped only when no other node subscribes either, or when ``msg`` came from
        another node (``dispatch_remote``: it is not forwarded again)."""
        topic = msg.topic
        return self._retain_mode == _SKIP or topic.startswith("$SYS/") or not self._nodes_for(topic)

    def dispatch_remote(self, messages: list[Message]) -> None:
        """Messages forwarded by another node: to the local subscribers only."""
        self._retain_mode = _SKIP
        metrics = self.metrics
        now = time.monotonic()
        publish = Broker.publish
        try:
            for msg in messages:
                if msg.expired(now):
                    metrics["cluster.dropped.expired"] += 1
                    continue
                metrics["cluster.received"] += 1
                publish(self, msg)
        finally:
            self._retain_mode = _ANNOUNCE

    def apply_remote_retain(self, msg: Message) -> None:
        """Another node's retained change (an empty payload clears the topic)."""
        self._retain_mode = _KEEP
        try:
            Broker._retain(self, msg)
        finally:
            self._retain_mode = _ANNOUNCE

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
    node = ClusterNode(settings.node_name, settings.cluster_redis_url)
    router = ClusterRouter(
        settings.shared_subscription_strategy, node.route_added, node.route_removed
    )
    broker = ClusterBroker(settings, store, loop, router, node)
    node.attach(broker)
    if isinstance(store, SqliteStore):  # the admin data lives in the SQLite store
        broker.admin = AdminSync(settings.node_name, broker, store, settings.data_dir, loop)
        node.parts.append(broker.admin)
    return broker
