"""The topic trie against the pairwise rules of mqtt/topics.py, in both directions."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from ferrymq.mqtt.topics import filters_intersect, topic_matches
from ferrymq.mqtt.trie import TopicTrie

NAME_LEVEL = st.sampled_from(["a", "b", "", "$s"])
FILTER_LEVEL = st.sampled_from(["a", "b", "", "$s", "+"])


@st.composite
def names(draw: st.DrawFn) -> str:
    return "/".join(draw(st.lists(NAME_LEVEL, min_size=1, max_size=4)))


@st.composite
def filters(draw: st.DrawFn) -> str:
    levels = draw(st.lists(FILTER_LEVEL, min_size=0, max_size=4))
    if not levels or draw(st.booleans()):
        levels.append("#")
    return "/".join(levels)


fast = settings(max_examples=300, deadline=None)


@given(st.lists(filters(), max_size=12), names())
@fast
def test_filters_matching_a_name(stored: list[str], name: str) -> None:
    trie: TopicTrie[str] = TopicTrie()
    for f in stored:
        trie.insert(f, f)
    found = sorted(trie.filters_matching(name.split("/")))
    assert found == sorted({f for f in stored if topic_matches(f, name)})


@given(st.lists(names(), max_size=12), filters())
@fast
def test_names_matched_and_popped_by_a_filter(stored: list[str], topic_filter: str) -> None:
    tree: TopicTrie[str] = TopicTrie()
    for name in stored:
        tree.insert(name, name)
    expected = sorted({n for n in stored if topic_matches(topic_filter, n)})
    assert sorted(tree.names_matched_by(topic_filter)) == expected
    assert tree.pop_matching(topic_filter) == len(expected)
    assert sorted(tree) == sorted(set(stored) - set(expected))


@given(st.lists(filters(), max_size=12), filters())
@fast
def test_intersects(stored: list[str], topic_filter: str) -> None:
    trie: TopicTrie[str] = TopicTrie()
    for f in stored:
        trie.insert(f, f)
    assert trie.intersects(topic_filter) == any(filters_intersect(f, topic_filter) for f in stored)


@given(st.lists(filters(), max_size=12))
@fast
def test_remove_prunes_back_to_an_empty_root(stored: list[str]) -> None:
    trie: TopicTrie[str] = TopicTrie()
    for f in stored:
        trie.insert(f, f)
    assert len(trie) == len(set(stored))
    assert sorted(trie.values()) == sorted(set(stored))
    for f in stored:
        trie.remove(f)
        assert trie.get(f) is None
    assert len(trie) == 0
    assert trie._root.empty()


def test_dollar_names_escape_leading_wildcards_only() -> None:
    trie: TopicTrie[str] = TopicTrie()
    for f in ["#", "+/x", "$SYS/#", "$SYS/+"]:
        trie.insert(f, f)
    assert sorted(trie.filters_matching(["$SYS", "x"])) == ["$SYS/#", "$SYS/+"]
    assert sorted(trie.filters_matching(["a", "x"])) == ["#", "+/x"]
    tree: TopicTrie[str] = TopicTrie()
    for name in ["$SYS/x", "a/x"]:
        tree.insert(name, name)
    assert tree.names_matched_by("#") == ["a/x"]
    assert tree.names_matched_by("+/x") == ["a/x"]
    assert tree.names_matched_by("$SYS/#") == ["$SYS/x"]
