"""The subscription router: matching vs brute force, replace/remove, cache, shared groups."""

from __future__ import annotations

import zlib
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from ferrymq.core.router import Overlap, Router, SharedGroup
from ferrymq.model.subscription import Subscription
from ferrymq.mqtt.topics import topic_matches

TOPIC_LEVEL = st.sampled_from(["a", "b", "", "$s"])
FILTER_LEVEL = st.sampled_from(["a", "b", "", "$s", "+"])
CLIENTS = st.sampled_from(["c1", "c2", "c3"])


@st.composite
def topics(draw: st.DrawFn) -> str:
    return "/".join(draw(st.lists(TOPIC_LEVEL, min_size=1, max_size=4))) or "a"


@st.composite
def plain_filters(draw: st.DrawFn) -> str:
    levels = draw(st.lists(FILTER_LEVEL, min_size=0, max_size=3))
    if not levels or draw(st.booleans()):
        levels.append("#")
    return "/".join(levels) or "#"


@st.composite
def client_filters(draw: st.DrawFn) -> str:
    """A filter as a client sends it: plain, $share/{g}/..., or $queue/..."""
    plain = draw(plain_filters())
    prefix = draw(st.sampled_from(["", "", "$share/g1/", "$share/g2/", "$queue/"]))
    return prefix + plain


def sub(client_id: str, topic_filter: str, qos: int = 0) -> Subscription:
    return Subscription(client_id, None, topic_filter, qos)


def always(_: Subscription) -> bool:
    return True


def ids(subs: list[Subscription]) -> list[str]:
    return sorted(s.client_id for s in subs)


# -- Subscription ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("topic_filter", "group", "plain"),
    [("a/b", None, "a/b"), ("$share/g/a/#", "g", "a/#"), ("$queue/a/+", "$queue", "a/+")],
)
def test_subscription_parses_shared(topic_filter: str, group: str | None, plain: str) -> None:
    s = Subscription("c", object(), topic_filter, 2, no_local=True, identifier=7)
    assert (s.share_group, s.filter, s.topic_filter) == (group, plain, topic_filter)
    assert (s.qos, s.no_local, s.identifier, s.retain_handling) == (2, True, 7, 0)


# -- matching vs brute force ---------------------------------------------------------


def brute_force(
    installed: dict[tuple[str, str], Subscription], topic: str
) -> tuple[set[int], set[tuple[str, str]]]:
    subs = {
        id(s)
        for s in installed.values()
        if s.share_group is None and topic_matches(s.filter, topic)
    }
    groups = {
        (s.share_group, s.filter)
        for s in installed.values()
        if s.share_group is not None and topic_matches(s.filter, topic)
    }
    return subs, groups


def check(router: Router, installed: dict[tuple[str, str], Subscription], topic: str) -> None:
    subs, groups = router.match(topic)
    want_subs, want_groups = brute_force(installed, topic)
    assert sorted(id(s) for s in subs) == sorted(want_subs)
    assert len(groups) == len(want_groups)
    assert {(g.name, g.filter) for g in groups} == want_groups
    for g in groups:
        assert {id(m) for m in g.members} == {
            id(s) for s in installed.values() if s.share_group == g.name and s.filter == g.filter
        }
    # One delivery target per client, standing for all of its matching subscriptions.
    targets = router.targets(topic).per_client
    assert sorted(t.client_id for t in targets) == sorted({s.client_id for s in subs})
    for t in targets:
        mine = [s for s in subs if s.client_id == t.client_id]
        members = t.members if isinstance(t, Overlap) else [t]
        assert sorted(map(id, members)) == sorted(map(id, mine))
        assert t.qos == max(s.qos for s in mine)


@settings(max_examples=200)
@given(st.lists(st.tuples(CLIENTS, client_filters()), max_size=30), st.lists(topics(), max_size=10))
def test_match_agrees_with_brute_force(entries: list[tuple[str, str]], names: list[str]) -> None:
    router = Router()
    installed: dict[tuple[str, str], Subscription] = {}
    for client_id, topic_filter in entries:
        s = sub(client_id, topic_filter)
        router.add(s)
        installed[client_id, topic_filter] = s
    assert len(router) == len(installed)
    for topic in names:
        check(router, installed, topic)
        check(router, installed, topic)  # again, from the cache


class RouterMachine(RuleBasedStateMachine):
    """Interleave add, remove and match so stale cache entries would show up."""

    def __init__(self) -> None:
        super().__init__()
        self.router = Router(cache_size=4)  # small, so clearing when full is exercised too
        self.model: dict[tuple[str, str], Subscription] = {}

    @rule(client_id=CLIENTS, topic_filter=client_filters(), qos=st.integers(0, 2))
    def add(self, client_id: str, topic_filter: str, qos: int) -> None:
        s = sub(client_id, topic_filter, qos)
        old = self.router.add(s)
        assert old is self.model.get((client_id, topic_filter))
        self.model[client_id, topic_filter] = s

    @rule(client_id=CLIENTS, topic_filter=client_filters())
    def remove(self, client_id: str, topic_filter: str) -> None:
        old = self.router.remove(client_id, topic_filter)
        assert old is self.model.pop((client_id, topic_filter), None)

    @rule(topic=topics())
    def match(self, topic: str) -> None:
        check(self.router, self.model, topic)

    @invariant()
    def counts(self) -> None:
        assert len(self.router) == len(self.model)
        assert {id(s) for s in self.router.filters()} == {id(s) for s in self.model.values()}


TestRouterMachine = RouterMachine.TestCase
TestRouterMachine.settings = settings(max_examples=100, stateful_step_count=40)


# -- replace, remove, cache ---------------------------------------------------------------


def test_add_replaces_same_client_and_filter() -> None:
    router = Router()
    first = sub("c", "a/+", 0)
    assert router.add(first) is None
    second = sub("c", "a/+", 2)
    assert router.add(second) is first
    assert len(router) == 1
    assert router.match("a/b")[0] == [second]
    # Another client, or another filter of the same client, is a separate subscription.
    assert router.add(sub("d", "a/+")) is None
    assert router.add(sub("c", "a/#")) is None
    assert len(router) == 3


def test_replace_shared_member_keeps_one_member() -> None:
    router = Router()
    first = sub("c", "$share/g/a")
    router.add(first)
    second = sub("c", "$share/g/a", 1)
    assert router.add(second) is first
    (group,) = router.match("a")[1]
    assert group.members == [second]
    assert len(router) == 1


def test_remove() -> None:
    router = Router()
    s = sub("c", "a/#")
    shared = sub("c", "$share/g/a/#")
    router.add(s)
    router.add(shared)
    assert router.remove("c", "a/b") is None
    assert router.remove("x", "a/#") is None
    assert router.remove("c", "$share/other/a/#") is None
    assert router.remove("c", "a/#") is s
    assert router.remove("c", "a/#") is None
    subs, groups = router.match("a/b")
    assert subs == [] and [g.name for g in groups] == ["g"]
    assert router.remove("c", "$share/g/a/#") is shared
    assert router.match("a/b") == ([], [])
    assert len(router) == 0


def test_remove_prunes_the_trie() -> None:
    router = Router()
    filters = ["a/b/c", "a/+/c", "a/#", "+/+", "#", "$share/g/x/y", "$queue/x/#"]
    for f in filters:
        router.add(sub("c", f))
    for f in filters:
        assert router.remove("c", f) is not None
    root = router._root
    assert root.empty()
    assert not root.children and root.plus is None and root.hash is None


def test_cache_sees_later_subscribe_and_unsubscribe() -> None:
    router = Router()
    assert router.match("a/b") == ([], [])
    s1 = sub("c1", "a/+")
    router.add(s1)
    assert router.match("a/b")[0] == [s1]
    s2 = sub("c2", "a/b")
    router.add(s2)
    assert ids(router.match("a/b")[0]) == ["c1", "c2"]
    router.add(sub("c3", "$share/g/#"))
    assert [g.name for g in router.match("a/b")[1]] == ["g"]
    router.remove("c1", "a/+")
    assert router.match("a/b")[0] == [s2]
    router.remove("c3", "$share/g/#")
    assert router.match("a/b")[1] == []


def test_cache_drops_only_affected_topics() -> None:
    router = Router()
    router.add(sub("c", "x/#"))
    hit_a = router.targets("a/1")
    hit_x = router.targets("x/1")
    router.add(sub("d", "a/+"))
    assert router.targets("x/1") is hit_x  # untouched entry still cached
    assert router.targets("a/1") is not hit_a
    assert ids(router.match("a/1")[0]) == ["d"]


def test_overlapping_subscriptions_make_one_target() -> None:
    router = Router()
    plus = Subscription("c", None, "a/+", 0, identifier=7, retain_as_published=True)
    hash_ = Subscription("c", None, "a/#", 2, identifier=9, no_local=True)
    plain = Subscription("c", None, "a/b", 1)
    other = sub("d", "a/b")
    for s in (plus, hash_, plain, other):
        router.add(s)
    found = router.targets("a/b")
    targets, groups, subs = found.per_client, found.groups, found.subs
    assert (len(subs), groups) == (4, [])
    (mine,) = [t for t in targets if t.client_id == "c"]
    assert [t for t in targets if t.client_id == "d"] == [other]
    assert isinstance(mine, Overlap)
    assert (mine.qos, sorted(mine.ids), mine.retain_as_published, mine.no_local) == (
        2,
        [7, 9],
        True,
        True,
    )
    # Its own messages: only the subscriptions without no local count.
    local = mine.local
    assert isinstance(local, Overlap)
    assert (local.qos, local.ids, local.no_local) == (1, (7,), False)
    assert router.targets("a/b") is router.targets("a/b")  # built once, then cached
    (both,) = router.targets("a/c").per_client
    assert isinstance(both, Overlap)
    assert sorted(map(id, both.members)) == sorted(map(id, [plus, hash_]))
    router.remove("c", "a/+")
    router.remove("c", "a/b")
    (alone,) = [t for t in router.targets("a/b").per_client if t.client_id == "c"]
    assert alone is hash_ and alone.local is None and alone.ids == (9,)


def test_cache_is_bounded() -> None:
    router = Router(cache_size=10)
    router.add(sub("c", "#"))
    for i in range(25):
        assert ids(router.match(f"t/{i}")[0]) == ["c"]
        assert len(router._cached) <= 10


def test_topics_nobody_listens_to_are_cached_apart_until_a_new_filter() -> None:
    router = Router()
    router.add(sub("c", "a/#"))
    assert router.match("b/1") == ([], [])
    assert "b/1" not in router._cached  # no trie entry for a topic without subscribers
    router.add(sub("d", "a/#"))  # a filter the router has: "b/1" still matches nothing
    assert router.match("b/1") == ([], [])
    router.add(sub("e", "b/+"))
    assert ids(router.match("b/1")[0]) == ["e"]


def test_no_cache() -> None:
    router = Router(cache_size=0)
    router.add(sub("c", "a"))
    assert ids(router.match("a")[0]) == ["c"]
    assert len(router._cached) == 0


# -- $-rule -----------------------------------------------------------------------------------


def test_dollar_topics_skip_leading_wildcards() -> None:
    router = Router()
    for f in ["#", "+/x", "+/+", "$SYS/#", "$SYS/+", "$SYS/x", "$share/g/#", "$share/h/$SYS/#"]:
        router.add(sub(f, f))
    subs, groups = router.match("$SYS/x")
    assert ids(subs) == ["$SYS/#", "$SYS/+", "$SYS/x"]
    assert [g.name for g in groups] == ["h"]
    subs, groups = router.match("a/x")
    assert ids(subs) == ["#", "+/+", "+/x"]
    assert [g.name for g in groups] == ["g"]
    assert router.match("$nothing") == ([], [])


# -- shared groups ----------------------------------------------------------------------------


def group_of(strategy: str, *clients: str) -> tuple[Router, SharedGroup]:
    router = Router(shared_strategy=strategy)
    for c in clients:
        router.add(sub(c, "$share/g/t/#"))
    (group,) = router.match("t/1")[1]
    return router, group


def test_round_robin_cycles_members() -> None:
    _, group = group_of("round_robin", "a", "b", "c")
    picks = [group.pick("p", always).client_id for _ in range(9)]
    assert picks[:3] == picks[3:6] == picks[6:]
    assert sorted(picks[:3]) == ["a", "b", "c"]


def test_round_robin_skips_unavailable() -> None:
    _, group = group_of("round_robin", "a", "b", "c")
    online = {"a", "c"}
    picks = Counter(group.pick("p", lambda s: s.client_id in online).client_id for _ in range(10))
    assert picks == Counter({"a": 5, "c": 5})


def test_hash_clientid_is_stable_per_publisher() -> None:
    _, group = group_of("hash_clientid", *[f"m{i}" for i in range(8)])
    chosen = {}
    for publisher in [f"pub{i}" for i in range(50)]:
        picks = {group.pick(publisher, always).client_id for _ in range(5)}
        assert len(picks) == 1
        (chosen[publisher],) = picks
        expected = group.members[zlib.crc32(publisher.encode()) % len(group.members)]
        assert chosen[publisher] == expected.client_id
    assert len(set(chosen.values())) > 1


def test_sticky_sticks_until_unavailable_or_removed() -> None:
    router, group = group_of("sticky", "a", "b", "c")
    first = group.pick("p", always).client_id
    assert all(group.pick("q", always).client_id == first for _ in range(20))
    second = group.pick("p", lambda s: s.client_id != first).client_id
    assert second != first
    # Sticks to the new member even once the first is back.
    assert all(group.pick("p", always).client_id == second for _ in range(20))
    router.remove(second, "$share/g/t/#")
    third = group.pick("p", always).client_id
    assert third != second
    assert all(group.pick("p", always).client_id == third for _ in range(20))


def test_random_prefers_available() -> None:
    _, group = group_of("random", "a", "b", "c", "d")
    picks = {group.pick("p", lambda s: s.client_id in {"b", "d"}).client_id for _ in range(200)}
    assert picks == {"b", "d"}


@pytest.mark.parametrize("strategy", ["round_robin", "random", "sticky", "hash_clientid"])
def test_pick_availability(strategy: str) -> None:
    router, group = group_of(strategy, "a", "b", "c")
    for _ in range(20):
        assert group.pick("p", lambda s: s.client_id == "b").client_id == "b"
    # Nobody online: still one member, so a persistent session can queue the message.
    assert group.pick("p", lambda s: False) in group.members
    for c in "abc":
        router.remove(c, "$share/g/t/#")
    assert group.pick("p", always) is None
    assert router.match("t/1") == ([], [])


def test_groups_are_per_name_and_filter() -> None:
    router = Router()
    router.add(sub("a", "$share/g/t/+"))
    router.add(sub("b", "$share/h/t/+"))
    router.add(sub("c", "$share/g/t/#"))
    router.add(sub("d", "$queue/t/+"))
    groups = router.match("t/1")[1]
    assert sorted((g.name, g.filter, len(g)) for g in groups) == [
        ("$queue", "t/+", 1),
        ("g", "t/#", 1),
        ("g", "t/+", 1),
        ("h", "t/+", 1),
    ]


def test_group_member_removal_keeps_the_rest() -> None:
    router, group = group_of("round_robin", *"abcde")
    router.remove("b", "$share/g/t/#")
    router.remove("e", "$share/g/t/#")
    assert sorted(m.client_id for m in group.members) == ["a", "c", "d"]
    assert {group.get(c).client_id for c in "acd"} == {"a", "c", "d"}  # type: ignore[union-attr]
    assert group.get("b") is None
    assert sorted(group.pick("p", always).client_id for _ in range(3)) == ["a", "c", "d"]


def test_unknown_strategy_is_rejected() -> None:
    with pytest.raises(ValueError):
        Router(shared_strategy="nope")
