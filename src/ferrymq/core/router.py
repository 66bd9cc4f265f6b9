"""The subscription router: a topic trie, a match cache and shared subscription groups.

Rules this module keeps:
- the trie is keyed by filter level; '+' and '#' children live in their own
  slots, so matching a topic walks at most (literal + '+') branches per level
  plus one '#' look-up, never the whole subscription set;
- a node holds non-shared subscriptions by client id and shared groups by
  group name, so (client_id, topic_filter) is unique and add() replaces;
- match results are cached per topic name; the cache is itself a topic tree so
  (un)subscribing to a filter drops only the cached topics that filter matches;
- a client whose non-shared subscriptions overlap on a topic gets one copy
  (MQTT 5 3.3.4, 3.1.1 3.3.5): each cached entry holds the per-client view
  (``Overlap``: the highest QoS, every identifier), built once per topic;
- nodes left empty by remove() are pruned, so churn does not grow memory;
- filters are assumed valid (the broker validates them before they get here).
"""

from __future__ import annotations

import random
import zlib
from collections.abc import Callable, Iterator

from ferrymq.core.retained import TopicTree
from ferrymq.model.subscription import Subscription
from ferrymq.mqtt.topics import parse_shared

STRATEGIES = ("round_robin", "random", "sticky", "hash_clientid")

Available = Callable[[Subscription], bool]
MatchResult = tuple[list[Subscription], list["SharedGroup"]]
# (one target per client, shared groups, every matching subscription)
Targets = tuple[list["Subscription | Overlap"], list["SharedGroup"], list[Subscription]]


class Overlap:
    """One client's subscriptions that all match a topic, as one delivery target.

    It reads like a Subscription to the broker: the highest granted QoS, every
    subscription identifier, retain as published when any of them asks for it.
    ``no_local`` is set when any of them has it; ``local`` is then the target for
    the client's own messages (the others only), or None when all are no local.
    """

    __slots__ = (
        "acl_gen",
        "client_id",
        "ids",
        "local",
        "members",
        "no_local",
        "qos",
        "retain_as_published",
        "session",
    )

    def __init__(self, members: list[Subscription]) -> None:
        first = members[0]
        self.members = members
        self.client_id = first.client_id
        self.session = first.session
        self.qos = max(m.qos for m in members)
        self.ids = tuple(m.identifier for m in members if m.identifier) or None
        self.retain_as_published = any(m.retain_as_published for m in members)
        self.no_local = any(m.no_local for m in members)
        self.acl_gen = -1  # per-message ACL check state, see Broker.acl_guard
        self.local: Subscription | Overlap | None = None
        if self.no_local:
            others = [m for m in members if not m.no_local]
            if others:
                self.local = others[0] if len(others) == 1 else Overlap(others)

    def __repr__(self) -> str:
        return f"Overlap(client_id={self.client_id!r}, members={len(self.members)})"


def _per_client(subs: list[Subscription]) -> list[Subscription | Overlap]:
    """``subs`` with each client's overlapping subscriptions folded into one Overlap."""
    if len(subs) < 2 or len({s.client_id for s in subs}) == len(subs):
        return subs  # type: ignore[return-value]  # no overlap: the same list, no copy
    by_client: dict[str, list[Subscription]] = {}
    for sub in subs:
        by_client.setdefault(sub.client_id, []).append(sub)
    return [m[0] if len(m) == 1 else Overlap(m) for m in by_client.values()]


class SharedGroup:
    """The members of one ``$share/{name}/{filter}`` group; one of them gets each message."""

    __slots__ = ("_next", "_pos", "_sticky", "_strategy", "filter", "members", "name")

    def __init__(self, name: str, topic_filter: str, strategy: str = "round_robin") -> None:
        if strategy not in STRATEGIES:
            raise ValueError(f"unknown shared subscription strategy {strategy!r}")
        self.name = name
        self.filter = topic_filter
        self.members: list[Subscription] = []
        self._strategy = strategy
        self._pos: dict[str, int] = {}  # client_id -> index in members
        self._next = 0
        self._sticky: Subscription | None = None

    def __len__(self) -> int:
        return len(self.members)

    def __repr__(self) -> str:
        return f"SharedGroup(name={self.name!r}, filter={self.filter!r}, members={len(self)})"

    def get(self, client_id: str) -> Subscription | None:
        i = self._pos.get(client_id)
        return None if i is None else self.members[i]

    def put(self, sub: Subscription) -> Subscription | None:
        """Add ``sub``, replacing (in place) the member with the same client id."""
        i = self._pos.get(sub.client_id)
        if i is None:
            self._pos[sub.client_id] = len(self.members)
            self.members.append(sub)
            return None
        old = self.members[i]
        self.members[i] = sub
        if self._sticky is old:
            self._sticky = sub
        return old

    def discard(self, client_id: str) -> Subscription | None:
        """Remove the member with ``client_id``; O(1) by moving the last member into its slot."""
        i = self._pos.pop(client_id, None)
        if i is None:
            return None
        members = self.members
        old = members[i]
        last = members.pop()
        if i < len(members):
            members[i] = last
            self._pos[last.client_id] = i
        if self._sticky is old:
            self._sticky = None
        return old

    def pick(self, publisher_id: str, available: Available) -> Subscription | None:
        """Choose the member that gets the next message, preferring available ones.

        When no member is available one is returned anyway, so an offline
        persistent session still queues the message; None only when empty.
        """
        members = self.members
        n = len(members)
        if n == 0:
            return None
        strategy = self._strategy
        if strategy == "sticky":
            sticky = self._sticky
            if sticky is not None and available(sticky):
                return sticky
            start = random.randrange(n)
        elif strategy == "round_robin":
            start = self._next % n
        elif strategy == "hash_clientid":
            start = zlib.crc32(publisher_id.encode()) % n
        else:
            start = random.randrange(n)
        for k in range(n):
            i = (start + k) % n
            sub = members[i]
            if available(sub):
                break
        else:
            i = start
            sub = members[i]
        if strategy == "round_robin":
            self._next = i + 1
        elif strategy == "sticky":
            self._sticky = sub
        return sub


class _Node:
    __slots__ = ("children", "groups", "hash", "plus", "subs")

    def __init__(self) -> None:
        self.children: dict[str, _Node] = {}
        self.plus: _Node | None = None
        self.hash: _Node | None = None
        self.subs: dict[str, Subscription] | None = None
        self.groups: dict[str, SharedGroup] | None = None

    def empty(self) -> bool:
        return not (self.children or self.plus or self.hash or self.subs or self.groups)


# Shared by every result that has no subscriptions or no groups: the common
# "nobody listens" and "no shared groups" answers then cost no allocation.
_NO_SUBS: list[Subscription] = []
_NO_GROUPS: list[SharedGroup] = []
_EMPTY: MatchResult = (_NO_SUBS, _NO_GROUPS)
_NO_TARGETS: Targets = (_NO_SUBS, _NO_GROUPS, _NO_SUBS)  # type: ignore[assignment]


class Router:
    """Maps topic names to the subscriptions (and shared groups) that should receive them."""

    __slots__ = (
        "_cache",
        "_cache_size",
        "_cached",
        "_count",
        "_root",
        "routes",
        "shared",
        "shared_strategy",
    )

    def __init__(self, shared_strategy: str = "round_robin", cache_size: int = 100_000) -> None:
        if shared_strategy not in STRATEGIES:
            raise ValueError(f"unknown shared subscription strategy {shared_strategy!r}")
        self.shared_strategy = shared_strategy
        self._root = _Node()
        self._count = 0
        # Distinct plain filters with at least one subscription (EMQX's routes and
        # topics), and shared-group members among the subscriptions; kept as
        # (un)subscribe goes so that stats never walk the trie.
        self.routes = 0
        self.shared = 0
        self._cache_size = cache_size
        self._cache: TopicTree[Targets] = TopicTree()
        self._cached = self._cache.by_topic  # the flat dict, for the warm path

    def __len__(self) -> int:
        return self._count

    # -- updates -----------------------------------------------------------------

    def add(self, sub: Subscription) -> Subscription | None:
        """Install ``sub``; return the subscription it replaced (same client id and filter)."""
        node = self._root
        for level in sub.filter.split("/"):
            if level == "+":
                nxt = node.plus
                if nxt is None:
                    nxt = node.plus = _Node()
            elif level == "#":
                nxt = node.hash
                if nxt is None:
                    nxt = node.hash = _Node()
            else:
                nxt = node.children.get(level)
                if nxt is None:
                    nxt = node.children[level] = _Node()
            node = nxt
        if node.subs is None and node.groups is None:
            self.routes += 1
        group_name = sub.share_group
        if group_name is None:
            subs = node.subs
            if subs is None:
                subs = node.subs = {}
            old = subs.get(sub.client_id)
            subs[sub.client_id] = sub
            self._invalidate(sub.filter)
        else:
            groups = node.groups
            if groups is None:
                groups = node.groups = {}
            group = groups.get(group_name)
            if group is None:
                group = groups[group_name] = SharedGroup(
                    group_name, sub.filter, self.shared_strategy
                )
                # Only a new group changes match results; members live inside the group.
                self._invalidate(sub.filter)
            old = group.put(sub)
            if old is None:
                self.shared += 1
        if old is None:
            self._count += 1
        return old

    def remove(self, client_id: str, topic_filter: str) -> Subscription | None:
        """Uninstall the subscription; ``topic_filter`` as the client sent it."""
        group_name, plain = parse_shared(topic_filter)
        path: list[tuple[_Node, str]] = []
        node = self._find(plain, path)
        if node is None:
            return None
        if group_name is None:
            if not node.subs:
                return None
            old = node.subs.pop(client_id, None)
            if old is None:
                return None
            if not node.subs:
                node.subs = None
            self._invalidate(plain)
        else:
            group = node.groups.get(group_name) if node.groups else None
            if group is None:
                return None
            old = group.discard(client_id)
            if old is None:
                return None
            self.shared -= 1
            if not group.members:
                del node.groups[group_name]  # type: ignore[union-attr]
                if not node.groups:
                    node.groups = None
                self._invalidate(plain)
        self._count -= 1
        if node.subs is None and node.groups is None:
            self.routes -= 1
        self._prune(node, path)
        return old

    @staticmethod
    def _prune(node: _Node, path: list[tuple[_Node, str]]) -> None:
        while path and node.empty():
            parent, level = path.pop()
            if level == "+":
                parent.plus = None
            elif level == "#":
                parent.hash = None
            else:
                del parent.children[level]
            node = parent

    def _invalidate(self, plain_filter: str) -> None:
        """Drop the cached results of every topic ``plain_filter`` matches."""
        if not self._cached:
            return
        if plain_filter == "#":
            self._cache.clear()
        else:
            self._cache.pop_matching(plain_filter)

    # -- lookups -----------------------------------------------------------------

    def targets(self, topic: str) -> Targets:
        """Where a message to ``topic`` goes: one target per client (a Subscription, or an
        Overlap of its matching subscriptions), the shared groups, and every matching
        non-shared subscription.

        The lists belong to the router (and its cache): callers must not mutate them.
        """
        hit = self._cached.get(topic)
        if hit is not None:
            return hit
        levels = topic.split("/")
        subs, groups = self._walk(levels, topic[:1] == "$")
        if subs or groups:
            result: Targets = (_per_client(subs) if subs else subs, groups, subs)
        else:
            result = _NO_TARGETS
        if self._cache_size > 0:
            if len(self._cached) >= self._cache_size:
                self._cache.clear()
            self._cache.insert(topic, result, levels)
        return result

    def match(self, topic: str) -> MatchResult:
        """Non-shared subscriptions and shared groups whose filter matches ``topic``."""
        _, groups, subs = self.targets(topic)
        return subs, groups

    def _walk(self, levels: list[str], dollar: bool) -> MatchResult:
        subs: list[Subscription] = []
        groups: list[SharedGroup] = []
        n = len(levels)
        if dollar:
            # Filters starting with a wildcard never match $ topics: skip the root's + and #.
            first = self._root.children.get(levels[0])
            if first is None:
                return _EMPTY
            stack = [(first, 1)]
        else:
            stack = [(self._root, 0)]
        while stack:
            node, i = stack.pop()
            h = node.hash
            if h is not None:
                if h.subs:
                    subs.extend(h.subs.values())
                if h.groups:
                    groups.extend(h.groups.values())
            if i == n:
                if node.subs:
                    subs.extend(node.subs.values())
                if node.groups:
                    groups.extend(node.groups.values())
                continue
            child = node.children.get(levels[i])
            if child is not None:
                stack.append((child, i + 1))
            if node.plus is not None:
                stack.append((node.plus, i + 1))
        if not groups:
            return (subs, _NO_GROUPS) if subs else _EMPTY
        return subs or _NO_SUBS, groups

    def _find(self, plain: str, path: list[tuple[_Node, str]] | None = None) -> _Node | None:
        """The trie node of a plain filter, if it exists; ``path`` collects (parent, level)."""
        node: _Node | None = self._root
        for level in plain.split("/"):
            if path is not None:
                path.append((node, level))  # type: ignore[arg-type]
            if level == "+":
                node = node.plus  # type: ignore[union-attr]
            elif level == "#":
                node = node.hash  # type: ignore[union-attr]
            else:
                node = node.children.get(level)  # type: ignore[union-attr]
            if node is None:
                return None
        return node

    def has_route(self, plain_filter: str) -> bool:
        """Whether some subscription uses exactly this plain filter."""
        node = self._find(plain_filter)
        return node is not None and bool(node.subs or node.groups)

    def route_filters(self) -> list[str]:
        """The distinct plain filters in use, sorted (for listing routes)."""
        return sorted({sub.filter for sub in self.filters()})

    def filters(self) -> Iterator[Subscription]:
        """Every installed subscription, shared members included (for listing)."""
        stack = [self._root]
        while stack:
            node = stack.pop()
            if node.subs:
                yield from list(node.subs.values())
            if node.groups:
                for group in list(node.groups.values()):
                    yield from list(group.members)
            stack.extend(node.children.values())
            if node.plus is not None:
                stack.append(node.plus)
            if node.hash is not None:
                stack.append(node.hash)
