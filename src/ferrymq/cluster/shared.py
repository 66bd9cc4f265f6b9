"""Shared subscription groups cluster-wide: who has members, and which node serves a message.

No I/O, only bookkeeping. ``SharedRoutes`` knows, per shared group (a group
name and a plain filter), how many members each node has, this node
included (its own counts come straight from its router, the others' from the
change stream). The publishing node picks one node per matching group
(``choose``) and forwards the message there with the groups that node must
serve; the receiving node gives it to one local member of those groups only.

Rules kept here:
- a group's key is its filter as a client subscribes to it (``$share/g/a/b``,
  ``$queue/a/b``), which is also its route name in Redis;
- the strategies, chosen over the members cluster-wide: ``random`` (every
  member equally likely, whichever node holds it), ``round_robin`` (a counter
  per group on each publishing node walks the members cluster-wide, so each
  node gets its share of messages in turn), ``hash_clientid`` (one publisher
  always lands on the same node, and there on the same member), ``sticky``
  (the publishing node sticks to one node while it has members; that node
  sticks to one member);
- a topic's matching groups are cached per topic name; the cache holds the
  live ``Group`` objects, so a member count that changes invalidates nothing,
  only a group appearing or vanishing for a filter does;
- whether a remote member is online is not known here (the local pick on the
  serving node prefers online members).
"""

from __future__ import annotations

import random
import zlib
from collections.abc import Iterable, Mapping

from ferrymq.cluster.routes import drop_cached
from ferrymq.mqtt.topics import parse_shared
from ferrymq.mqtt.trie import TopicTrie

_NONE: tuple[Group, ...] = ()


def group_key(group: str, plain_filter: str) -> str:
    """The filter a client subscribes to for ``group`` on ``plain_filter``."""
    if group == "$queue":
        return "$queue/" + plain_filter
    return f"$share/{group}/{plain_filter}"


def is_shared(topic_filter: str) -> bool:
    return topic_filter.startswith(("$share/", "$queue/"))


class Group:
    """One shared group cluster-wide: its member count per node and the choice state."""

    __slots__ = ("counts", "filter", "key", "name", "next", "sticky", "strategy")

    def __init__(self, key: str, strategy: str) -> None:
        name, plain = parse_shared(key)
        assert name is not None
        self.key = key
        self.name = name
        self.filter = plain
        self.counts: dict[str, int] = {}  # node -> members there
        self.strategy = strategy
        self.next = 0
        self.sticky: str | None = None

    def __repr__(self) -> str:
        return f"Group({self.key!r}, {self.counts!r})"

    def choose(self, publisher: str, skip: str | None = None) -> str | None:
        """The node that serves the next message of ``publisher`` (never ``skip``); None
        when no node has members."""
        counts = self.counts
        if skip is not None and skip in counts:
            counts = {node: n for node, n in counts.items() if node != skip}
        total = sum(counts.values())
        if total <= 0:
            return None
        strategy = self.strategy
        if strategy == "sticky":
            sticky = self.sticky
            if sticky is not None and counts.get(sticky):
                return sticky
            index = random.randrange(total)
        elif strategy == "round_robin":
            index = self.next % total
            self.next = index + 1
        elif strategy == "hash_clientid":
            index = zlib.crc32(publisher.encode()) % total
        else:
            index = random.randrange(total)
        for node, n in counts.items():
            if index < n:
                if strategy == "sticky":
                    self.sticky = node
                return node
            index -= n
        return None  # not reached: the counts add up to total


class SharedRoutes:
    """Every node's shared-group member counts, matched per topic in a topic trie."""

    __slots__ = ("_cache", "_cached", "_trie", "by_node", "own", "strategy")

    def __init__(self, own: str, strategy: str = "round_robin") -> None:
        self.own = own
        self.strategy = strategy
        self._trie: TopicTrie[dict[str, Group]] = TopicTrie()  # plain filter -> key -> Group
        #: node -> group key -> members; empty while no node has a shared group (one
        #: truth test on the publish path), never rebound.
        self.by_node: dict[str, dict[str, int]] = {}
        self._cache: TopicTrie[tuple[Group, ...]] = TopicTrie()
        self._cached = self._cache.by_key

    def __len__(self) -> int:
        """Groups with members somewhere."""
        return sum(len(groups) for groups in self._trie.values())

    def counts_of(self, node: str) -> dict[str, int]:
        """``{group key: members}`` of ``node``."""
        return dict(self.by_node.get(node, ()))

    def get(self, key: str) -> Group | None:
        _name, plain = parse_shared(key)
        groups = self._trie.get(plain)
        return None if groups is None else groups.get(key)

    def set(self, node: str, key: str, count: int) -> None:
        """``node`` has ``count`` members of the group ``key`` (0: none any more)."""
        _name, plain = parse_shared(key)
        mine = self.by_node.get(node)
        if count <= 0:
            if mine is None or mine.pop(key, None) is None:
                return
            if not mine:
                del self.by_node[node]
            groups = self._trie.get(plain)
            group = None if groups is None else groups.get(key)
            if group is None:
                return
            group.counts.pop(node, None)
            if not group.counts:
                del groups[key]  # type: ignore[union-attr]
                if not groups:
                    self._trie.remove(plain)
                self._invalidate(plain)
            return
        if mine is None:
            mine = self.by_node[node] = {}
        mine[key] = count
        groups = self._trie.get(plain)
        if groups is None:
            groups = {}
            self._trie.insert(plain, groups)
        group = groups.get(key)
        if group is None:
            group = groups[key] = Group(key, self.strategy)
            self._invalidate(plain)
        group.counts[node] = count

    def drop_node(self, node: str) -> int:
        """Forget every member of ``node`` (it is down or left); how many groups it had."""
        keys = list(self.by_node.get(node, ()))
        for key in keys:
            self.set(node, key, 0)
        return len(keys)

    def replace_node(self, node: str, counts: Mapping[str, int]) -> None:
        """``node``'s whole set of groups (its resync)."""
        for key in set(self.by_node.get(node, ())) - set(counts):
            self.set(node, key, 0)
        for key, count in counts.items():
            self.set(node, key, count)

    def replace(self, snapshot: Mapping[str, Iterable[tuple[str, int]]]) -> None:
        """Start over from ``{group key: [(node, members)]}`` (a full resync); this node's
        own counts are kept (they are its router's, always current)."""
        own = self.counts_of(self.own)
        self._trie.clear()
        self.by_node.clear()
        self._cache.clear()
        for key, members in snapshot.items():
            for node, count in members:
                if node != self.own:
                    self.set(node, key, count)
        for key, count in own.items():
            self.set(self.own, key, count)

    def groups_for(self, topic: str) -> tuple[Group, ...]:
        """The groups whose filter matches the topic name ``topic``."""
        hit = self._cached.get(topic)
        if hit is not None:
            return hit
        levels = topic.split("/")
        found: list[Group] = []
        for groups in self._trie.filters_matching(levels):
            found.extend(groups.values())
        result = tuple(found) if found else _NONE
        if len(self._cached) >= 100_000:
            self._cache.clear()
        self._cache.insert(topic, result, levels)
        return result

    def _invalidate(self, plain_filter: str) -> None:
        drop_cached(self._cache, plain_filter)
