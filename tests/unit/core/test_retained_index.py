"""The retained-message store and the topic tree behind it."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from ferrymq.core.retained import RetainedStore, TopicTree
from ferrymq.model.message import Message
from ferrymq.mqtt.topics import topic_matches

TOPIC_LEVEL = st.sampled_from(["a", "b", "", "$s"])
FILTER_LEVEL = st.sampled_from(["a", "b", "", "$s", "+"])


@st.composite
def topics(draw: st.DrawFn) -> str:
    return "/".join(draw(st.lists(TOPIC_LEVEL, min_size=1, max_size=4))) or "a"


@st.composite
def plain_filters(draw: st.DrawFn) -> str:
    levels = draw(st.lists(FILTER_LEVEL, min_size=0, max_size=4))
    if not levels or draw(st.booleans()):
        levels.append("#")
    return "/".join(levels) or "#"


def msg(topic: str, payload: bytes = b"x", expiry_at: float = 0.0) -> Message:
    return Message(topic, payload, qos=1, retain=True, expiry_at=expiry_at)


def topics_of(found: list[Message]) -> list[str]:
    return sorted(m.topic for m in found)


def count_nodes(tree: TopicTree[Message]) -> int:
    stack, n = [tree._root], 0
    while stack:
        node = stack.pop()
        n += 1
        if node.children:
            stack.extend(node.children.values())
    return n


def test_set_get_replace() -> None:
    store = RetainedStore()
    first, second = msg("a/b", b"1"), msg("a/b", b"2")
    assert store.set(first)
    assert store.get("a/b") is first
    assert store.set(second)
    assert store.get("a/b") is second
    assert len(store) == 1
    assert list(store) == [second]
    assert store.get("a") is None


def test_empty_payload_deletes() -> None:
    store = RetainedStore()
    store.set(msg("a/b"))
    store.set(msg("a/c"))
    assert store.set(msg("a/b", b""))
    assert store.get("a/b") is None
    assert topics_of(list(store)) == ["a/c"]
    assert store.set(msg("never/stored", b""))  # deleting an absent topic is fine
    assert len(store) == 1


def test_delete() -> None:
    store = RetainedStore()
    m = msg("a")
    store.set(m)
    assert store.delete("a") is m
    assert store.delete("a") is None
    assert len(store) == 0


def test_wildcard_match() -> None:
    store = RetainedStore()
    for t in ["a", "a/b", "a/c", "a/b/c", "b/b", "/x", "$SYS/u"]:
        store.set(msg(t))
    assert topics_of(store.match("a/+", 0.0)) == ["a/b", "a/c"]
    assert topics_of(store.match("a/#", 0.0)) == ["a", "a/b", "a/b/c", "a/c"]
    assert topics_of(store.match("+/b", 0.0)) == ["a/b", "b/b"]
    assert topics_of(store.match("+/+/c", 0.0)) == ["a/b/c"]
    assert topics_of(store.match("#", 0.0)) == ["/x", "a", "a/b", "a/b/c", "a/c", "b/b"]
    assert topics_of(store.match("a/b", 0.0)) == ["a/b"]
    assert store.match("a/z", 0.0) == []
    assert store.match("z/#", 0.0) == []


def test_dollar_rule() -> None:
    store = RetainedStore()
    store.set(msg("$SYS/broker/uptime"))
    store.set(msg("x"))
    assert topics_of(store.match("#", 0.0)) == ["x"]
    assert store.match("+/broker/uptime", 0.0) == []
    assert store.match("+/#", 0.0) == [store.get("x")]
    assert topics_of(store.match("$SYS/#", 0.0)) == ["$SYS/broker/uptime"]
    assert topics_of(store.match("$SYS/+/uptime", 0.0)) == ["$SYS/broker/uptime"]


@settings(max_examples=200)
@given(st.lists(topics(), max_size=25), plain_filters(), st.lists(topics(), max_size=10))
def test_match_agrees_with_brute_force(names: list[str], f: str, removed: list[str]) -> None:
    store = RetainedStore()
    for t in names:
        store.set(msg(t))
    for t in removed:
        store.delete(t)
    live = {t for t in names if t not in removed}
    assert topics_of(store.match(f, 0.0)) == sorted(t for t in live if topic_matches(f, t))
    assert len(store) == len(live)


def test_expiry_removes_lazily() -> None:
    store = RetainedStore()
    now = 1000.0
    store.set(msg("a/short", expiry_at=now + 5))
    store.set(msg("a/long", expiry_at=now + 50))
    store.set(msg("a/forever"))
    assert topics_of(store.match("a/+", now)) == ["a/forever", "a/long", "a/short"]
    assert topics_of(store.match("a/+", now + 5)) == ["a/forever", "a/long"]
    assert store.get("a/short") is None
    assert len(store) == 2
    assert topics_of(store.match("a/long", now + 60)) == []
    assert topics_of(list(store)) == ["a/forever"]


def test_replacing_an_expiring_message_with_a_permanent_one() -> None:
    store = RetainedStore()
    store.set(msg("a", expiry_at=10.0))
    store.set(msg("a"))
    assert topics_of(store.match("#", 100.0)) == ["a"]
    store.set(msg("a", expiry_at=10.0))
    assert store.match("#", 100.0) == []
    assert len(store) == 0


def test_max_messages() -> None:
    store = RetainedStore(max_messages=2)
    assert store.set(msg("a"))
    assert store.set(msg("b"))
    assert not store.set(msg("c"))
    assert store.get("c") is None
    assert store.set(msg("a", b"new"))  # replacing is always allowed
    assert store.get("a").payload == b"new"  # type: ignore[union-attr]
    store.set(msg("b", b""))
    assert store.set(msg("c"))
    assert topics_of(list(store)) == ["a", "c"]


def test_delete_prunes_empty_nodes() -> None:
    store = RetainedStore()
    store.set(msg("keep/me"))
    baseline = count_nodes(store._tree)
    for round_ in range(3):
        for i in range(200):
            store.set(msg(f"churn/{round_}/{i}/leaf"))
        assert count_nodes(store._tree) > baseline
        for i in range(200):
            store.delete(f"churn/{round_}/{i}/leaf")
        assert count_nodes(store._tree) == baseline
    store.set(msg("a/b/c"))
    store.set(msg("a"))
    store.delete("a/b/c")
    assert topics_of(store.match("a/#", 0.0)) == ["a"]
    store.delete("a")
    store.delete("keep/me")
    assert count_nodes(store._tree) == 1


def test_expiry_prunes_too() -> None:
    store = RetainedStore()
    for i in range(50):
        store.set(msg(f"x/{i}/y", expiry_at=1.0))
    assert store.match("x/#", 2.0) == []
    assert count_nodes(store._tree) == 1


def test_topic_tree_pop_matching() -> None:
    tree: TopicTree[str] = TopicTree()
    for t in ["a", "a/b", "a/c/d", "b/b", "$s/b"]:
        tree.insert(t, t)
    assert tree.pop_matching("+/b") == 2
    assert sorted(tree) == ["$s/b", "a", "a/c/d"]
    assert tree.pop_matching("a/#") == 2
    assert sorted(tree) == ["$s/b"]
    assert tree.pop_matching("#") == 0
    assert tree.pop_matching("$s/b") == 1
    assert len(tree) == 0
    assert not tree._root.children
