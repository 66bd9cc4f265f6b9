"""The cluster route table as one node holds it: no I/O, only bookkeeping.

Rules kept here:
- ``RouteReplica`` is every *other* node's plain filters (``{filter -> nodes}``),
  matched locally in a topic trie, so a PUBLISH costs no Redis round trip to
  find where it goes; this node's own filters are its ``Router``'s and never
  enter the replica (a message is never forwarded to its own node);
- topic answers are cached per topic name in a trie of names, and a route
  change drops only the cached topics its filter matches (as the local
  ``Router`` does);
- adding or removing a route twice is harmless, so replaying the change
  stream over a snapshot converges to the same table;
- ``PendingRoutes`` collects this node's route changes between two flushes:
  a filter added and removed again before the flush sends nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from ferrymq.mqtt.trie import TopicTrie

_NOWHERE: tuple[str, ...] = ()


class RouteReplica:
    """Which other nodes have a subscriber for what."""

    __slots__ = ("_by_node", "_cache", "_cached", "_trie", "own")

    def __init__(self, own: str) -> None:
        self.own = own
        self._trie: TopicTrie[set[str]] = TopicTrie()  # filter -> nodes
        self._by_node: dict[str, set[str]] = {}  # node -> filters
        self._cache: TopicTrie[tuple[str, ...]] = TopicTrie()
        self._cached = self._cache.by_key

    def __len__(self) -> int:
        """Routes held: (filter, node) pairs."""
        return sum(len(filters) for filters in self._by_node.values())

    def nodes(self) -> list[str]:
        """The other nodes that hold at least one route."""
        return sorted(self._by_node)

    def filters_of(self, node: str) -> set[str]:
        return set(self._by_node.get(node, ()))

    def add(self, node: str, topic_filter: str) -> None:
        if node == self.own:
            return
        filters = self._by_node.setdefault(node, set())
        if topic_filter in filters:
            return
        filters.add(topic_filter)
        nodes = self._trie.get(topic_filter)
        if nodes is None:
            self._trie.insert(topic_filter, {node})
        else:
            nodes.add(node)
        self._invalidate(topic_filter)

    def remove(self, node: str, topic_filter: str) -> None:
        filters = self._by_node.get(node)
        if filters is None or topic_filter not in filters:
            return
        filters.discard(topic_filter)
        if not filters:
            del self._by_node[node]
        nodes = self._trie.get(topic_filter)
        if nodes is not None:
            nodes.discard(node)
            if not nodes:
                self._trie.remove(topic_filter)
        self._invalidate(topic_filter)

    def drop_node(self, node: str) -> int:
        """Forget every route of ``node`` (it is down); how many there were."""
        filters = self._by_node.get(node)
        if not filters:
            return 0
        dropped = list(filters)
        for topic_filter in dropped:
            self.remove(node, topic_filter)
        return len(dropped)

    def replace(self, routes: Mapping[str, Iterable[str]]) -> None:
        """Start over from a snapshot ``{filter -> nodes}`` (a full resync)."""
        self._trie.clear()
        self._by_node.clear()
        self._cache.clear()
        for topic_filter, nodes in routes.items():
            for node in nodes:
                self.add(node, topic_filter)

    def answers(self) -> dict[str, tuple[str, ...]]:
        """The cached ``nodes_for`` answers by topic name (the same dict for the replica's
        whole life), for a caller that reads the warm path without a call; read only."""
        return self._cached

    def nodes_for(self, topic: str) -> tuple[str, ...]:
        """The other nodes with a route matching the topic name ``topic``, sorted."""
        hit = self._cached.get(topic)
        if hit is not None:
            return hit
        levels = topic.split("/")
        found: set[str] = set()
        for nodes in self._trie.filters_matching(levels):
            found |= nodes
        result = tuple(sorted(found)) if found else _NOWHERE
        if len(self._cached) >= 100_000:
            self._cache.clear()
        self._cache.insert(topic, result, levels)
        return result

    def _invalidate(self, topic_filter: str) -> None:
        drop_cached(self._cache, topic_filter)


def drop_cached(cache: TopicTrie[Any], topic_filter: str) -> None:
    """Drop the answers cached in ``cache`` (a trie of topic names) for every topic
    ``topic_filter`` matches."""
    if not cache.by_key:
        return
    if topic_filter == "#":
        cache.clear()
    else:
        cache.pop_matching(topic_filter)


class PendingRoutes:
    """This node's route changes not yet written to Redis."""

    __slots__ = ("added", "removed")

    def __init__(self) -> None:
        self.added: set[str] = set()
        self.removed: set[str] = set()

    def __bool__(self) -> bool:
        return bool(self.added or self.removed)

    def add(self, topic_filter: str) -> None:
        if topic_filter in self.removed:
            self.removed.discard(topic_filter)  # it was in Redis all along
        else:
            self.added.add(topic_filter)

    def remove(self, topic_filter: str) -> None:
        if topic_filter in self.added:
            self.added.discard(topic_filter)  # never reached Redis
        else:
            self.removed.add(topic_filter)

    def take(self) -> tuple[list[str], list[str]]:
        """The changes to send (added, removed), sorted; the pending set is then empty."""
        added, removed = sorted(self.added), sorted(self.removed)
        self.added.clear()
        self.removed.clear()
        return added, removed
