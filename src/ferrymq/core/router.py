"""The subscription router: a topic trie, a match cache and shared subscription groups.

Rules this module keeps:
- filters sit in the shared topic trie (``mqtt/trie.py``, which also keeps the
  ``$`` rule), so matching a topic walks at most (literal + '+') branches per
  level plus one '#' look-up, never the whole subscription set;
- each filter's trie value is a ``_Route`` holding its non-shared
  subscriptions by client id and its shared groups by group name, so
  (client_id, topic_filter) is unique and add() replaces;
- match results are cached per topic name; the cache is itself a topic tree so
  (un)subscribing to a filter drops only the cached topics that filter matches;
  topics nobody listens to are cached apart, in a flat set (a tenth of a trie
  entry's memory: retained or telemetry topics without subscribers are many),
  which only a filter new to the router can invalidate, so it is cleared then;
- a client whose non-shared subscriptions overlap on a topic gets one copy
  (MQTT 5 3.3.4, 3.1.1 3.3.5): each cached entry holds the per-client view
  (``Overlap``: the highest QoS, every identifier), built once per topic;
- a route left empty by remove() leaves the trie, which prunes its nodes, so
  churn does not grow memory;
- filters are assumed valid (the broker validates them before they get here).
"""

from __future__ import annotations

from binascii import crc32  # zlib's CRC-32, without loading zlib
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, cast

from mypy_extensions import mypyc_attr

from ferrymq.model.subscription import Subscription
from ferrymq.mqtt.topics import parse_shared
from ferrymq.mqtt.trie import TopicTrie

if TYPE_CHECKING:
    from ferrymq.mqtt.trie import _Node

STRATEGIES = ("round_robin", "random", "sticky", "hash_clientid")

Available = Callable[[Subscription], bool]
MatchResult = tuple[list[Subscription], list["SharedGroup"]]


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
        return _targets(subs)  # no overlap: the same list, no copy
    by_client: dict[str, list[Subscription]] = {}
    for sub in subs:
        by_client.setdefault(sub.client_id, []).append(sub)
    return [m[0] if len(m) == 1 else Overlap(m) for m in by_client.values()]


_randrange: Callable[[int], int] | None = None  # random.randrange, once a draw needed it


def _random_index(n: int) -> int:
    """A random index below ``n``. ``random`` (with ``_sha512`` and ``bisect``) is imported at
    the first draw, and kept: a broker without random or sticky groups never loads it, and
    a message to such a group pays no import statement."""
    global _randrange
    if _randrange is None:
        import random

        _randrange = random.randrange
    return _randrange(n)


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
            start = _random_index(n)
        elif strategy == "round_robin":
            start = self._next % n
        elif strategy == "hash_clientid":
            start = crc32(publisher_id.encode()) % n
        else:
            start = _random_index(n)
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


class _Route:
    """What one plain filter routes to: non-shared subscriptions and shared groups."""

    __slots__ = ("groups", "subs")

    def __init__(self) -> None:
        self.subs: dict[str, Subscription] | None = None
        self.groups: dict[str, SharedGroup] | None = None


class Targets:
    """Where a message to one topic goes, built once per topic and cached: one target per
    client (``per_client``: a Subscription, or an Overlap of its matching subscriptions),
    the shared ``groups`` and every matching non-shared subscription (``subs``).

    An object rather than a tuple: compiled code unboxes a fixed tuple and would build a
    new one on every return. The lists belong to the router: callers never mutate them.
    """

    __slots__ = ("groups", "per_client", "subs")

    def __init__(
        self,
        per_client: list[Subscription | Overlap],
        groups: list[SharedGroup],
        subs: list[Subscription],
    ) -> None:
        self.per_client = per_client
        self.groups = groups
        self.subs = subs


def _targets(subs: list[Subscription]) -> list[Subscription | Overlap]:
    """``subs`` as the per-client list: right when no client has two of them (one only)."""
    return cast("list[Subscription | Overlap]", subs)


# Shared by every result that has no subscriptions or no groups: the common
# "nobody listens" and "no shared groups" answers then cost no allocation.
_NO_SUBS: list[Subscription] = []
_NO_GROUPS: list[SharedGroup] = []
_NO_TARGETS = Targets(_targets(_NO_SUBS), _NO_GROUPS, _NO_SUBS)
# Topics remembered as matching no filter, at most (then forgotten at once). A topic that
# comes back often stays cheap; one-off topics (a load of retained messages nobody
# subscribes to: 100,000 would hold 4 MB of set) cost one trie walk each, as without it.
_MISSES_MAX = 16_384


# ClusterBroker and ClusterRouter (cluster/) extend it in interpreted code.
@mypyc_attr(allow_interpreted_subclasses=True)
class Router:
    """Maps topic names to the subscriptions (and shared groups) that should receive them."""

    __slots__ = (
        "_cache",
        "_cache_size",
        "_cached",
        "_count",
        "_misses",
        "_routes",
        "shared",
        "shared_strategy",
    )

    def __init__(self, shared_strategy: str = "round_robin", cache_size: int = 100_000) -> None:
        if shared_strategy not in STRATEGIES:
            raise ValueError(f"unknown shared subscription strategy {shared_strategy!r}")
        self.shared_strategy = shared_strategy
        self._routes: TopicTrie[_Route] = TopicTrie()
        self._count = 0
        # Shared-group members among the subscriptions, kept as (un)subscribe
        # goes so that stats never walk the trie.
        self.shared = 0
        self._cache_size = cache_size
        self._cache: TopicTrie[Targets] = TopicTrie()
        self._cached = self._cache.by_key  # the flat dict, for the warm path
        self._misses: set[str] = set()  # topics that match no filter at all

    def __len__(self) -> int:
        return self._count

    @property
    def routes(self) -> int:
        """Distinct plain filters with at least one subscription (EMQX's routes and topics)."""
        return len(self._routes)

    @property
    def _root(self) -> _Node:
        """The trie's root node (what tests inspect to see pruning)."""
        return self._routes._root

    # -- updates -----------------------------------------------------------------

    def add(self, sub: Subscription) -> Subscription | None:
        """Install ``sub``; return the subscription it replaced (same client id and filter)."""
        route = self._routes.get(sub.filter)
        if route is None:
            route = _Route()
            self._routes.insert(sub.filter, route)
            if self._misses:
                self._misses.clear()  # the new filter may match some of them
        group_name = sub.share_group
        if group_name is None:
            subs = route.subs
            if subs is None:
                subs = route.subs = {}
            old = subs.get(sub.client_id)
            subs[sub.client_id] = sub
            self._invalidate(sub.filter)
        else:
            groups = route.groups
            if groups is None:
                groups = route.groups = {}
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
        route = self._routes.get(plain)
        if route is None:
            return None
        if group_name is None:
            if not route.subs:
                return None
            old = route.subs.pop(client_id, None)
            if old is None:
                return None
            if not route.subs:
                route.subs = None
            self._invalidate(plain)
        else:
            group = route.groups.get(group_name) if route.groups else None
            if group is None:
                return None
            old = group.discard(client_id)
            if old is None:
                return None
            self.shared -= 1
            if not group.members:
                del route.groups[group_name]  # type: ignore[union-attr]
                if not route.groups:
                    route.groups = None
                self._invalidate(plain)
        self._count -= 1
        if route.subs is None and route.groups is None:
            self._routes.remove(plain)
        return old

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
        """Where a message to ``topic`` goes (``Targets``; the router's, not to mutate)."""
        hit = self._cached.get(topic)
        if hit is not None:
            return hit
        misses = self._misses
        if topic in misses or not self._routes.by_key:  # (no filter at all: nothing to walk)
            return _NO_TARGETS
        levels = topic.split("/")
        subs: list[Subscription] = []
        groups: list[SharedGroup] | None = None
        for route in self._routes.filters_matching(levels):
            if route.subs:
                subs.extend(route.subs.values())
            if route.groups:
                if groups is None:
                    groups = []
                groups.extend(route.groups.values())
        if subs:
            # One subscription cannot overlap: skip the call on the common case.
            per_client = _targets(subs) if len(subs) == 1 else _per_client(subs)
            result = Targets(per_client, groups or _NO_GROUPS, subs)
        elif groups:
            result = Targets(_targets(_NO_SUBS), groups, _NO_SUBS)
        else:
            if self._cache_size > 0:
                if len(misses) >= min(self._cache_size, _MISSES_MAX):
                    misses.clear()
                misses.add(topic)
            return _NO_TARGETS
        if self._cache_size > 0:
            if len(self._cached) >= self._cache_size:
                self._cache.clear()
            self._cache.insert(topic, result, levels)
        return result

    def match(self, topic: str) -> MatchResult:
        """Non-shared subscriptions and shared groups whose filter matches ``topic``."""
        targets = self.targets(topic)
        return targets.subs, targets.groups

    def has_route(self, plain_filter: str) -> bool:
        """Whether some subscription uses exactly this plain filter."""
        return self._routes.get(plain_filter) is not None

    def route_filters(self) -> list[str]:
        """The distinct plain filters in use, sorted (for listing routes)."""
        return sorted({sub.filter for sub in self.filters()})

    def filters(self) -> Iterator[Subscription]:
        """Every installed subscription, shared members included (for listing)."""
        for route in self._routes.values():
            if route.subs:
                yield from list(route.subs.values())
            if route.groups:
                for group in list(route.groups.values()):
                    yield from list(group.members)
