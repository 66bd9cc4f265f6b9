"""Topic name/filter validation and matching, checked against an independent reference."""

from __future__ import annotations

import re

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from ferrymq.mqtt.topics import (
    TopicError,
    filter_covers,
    filters_intersect,
    parse_shared,
    topic_matches,
    validate_topic_filter,
    validate_topic_name,
)

# -- reference implementation (regex based, deliberately unlike topics.py) -----


def ref_matches(topic_filter: str, topic: str) -> bool:
    """Translate the filter to a regex; apply the $-rule separately."""
    if topic.startswith("$") and topic_filter[0] in "+#":
        return False
    levels = topic_filter.split("/")
    multi = levels[-1] == "#"
    if multi:
        levels = levels[:-1]
    pattern = "/".join("[^/]*" if lv == "+" else re.escape(lv) for lv in levels)
    if multi:
        pattern = pattern + "(/.*)?" if levels else ".*"
    return re.fullmatch(pattern, topic, re.DOTALL) is not None


def ref_witness(a: str, b: str) -> str:
    """A topic both filters match if any topic does (built level by level)."""
    x, y = a.split("/"), b.split("/")
    out: list[str] = []
    for i in range(max(len(x), len(y))):
        xl = x[i] if i < len(x) else None
        yl = y[i] if i < len(y) else None
        if xl == "#" or yl == "#":
            rest = y[i:] if xl == "#" else x[i:]
            out.extend("w" if lv == "+" else lv for lv in rest if lv != "#")
            if "#" in rest:
                out.append("w")  # both end in '#': one more level keeps the topic non-empty
            break
        if xl is None or yl is None:
            break
        out.append(yl if xl == "+" and yl != "+" else ("w" if xl == "+" else xl))
    return "/".join(out)


# -- generators over a small alphabet, so collisions (and $ topics) are common --

TOPIC_LEVEL = st.sampled_from(["a", "b", "", "$s", "$"])
FILTER_LEVEL = st.sampled_from(["a", "b", "", "$s", "+"])


@st.composite
def topics(draw: st.DrawFn) -> str:
    topic = "/".join(draw(st.lists(TOPIC_LEVEL, min_size=1, max_size=4)))
    return topic or "a"


@st.composite
def filters(draw: st.DrawFn) -> str:
    levels = draw(st.lists(FILTER_LEVEL, min_size=0, max_size=3))
    if not levels or draw(st.booleans()):
        levels.append("#")
    return "/".join(levels) or "#"


# -- validation ------------------------------------------------------------------

VALID_NAMES = ["a", "a/b", "/", "/a", "a/", "a//b", "$SYS/uptime", " ", "ü/é/漢", "a" * 100]
INVALID_NAMES = ["", "+", "#", "a/+", "a/#", "a+", "a#b", "a\x00b"]


@pytest.mark.parametrize("name", VALID_NAMES)
def test_valid_topic_names(name: str) -> None:
    validate_topic_name(name)


@pytest.mark.parametrize("name", INVALID_NAMES)
def test_invalid_topic_names(name: str) -> None:
    with pytest.raises(TopicError):
        validate_topic_name(name)


def test_topic_name_limits() -> None:
    validate_topic_name("a/b/c", max_levels=3)
    with pytest.raises(TopicError):
        validate_topic_name("a/b/c/d", max_levels=3)
    validate_topic_name("abcd", max_length=4)
    with pytest.raises(TopicError):
        validate_topic_name("abcde", max_length=4)


VALID_FILTERS = [
    "#",
    "+",
    "a",
    "/",
    "a/+",
    "a/#",
    "+/+/#",
    "/#",
    "+/",
    "a//+",
    "$SYS/#",
    "$SYS/+/x",
    "$share/g/a/#",
    "$share/g/#",
    "$share/g/+",
    "$share/g/$SYS/#",
    "$queue/a/+",
    "$queue/#",
    "$share",
]
INVALID_FILTERS = [
    "",
    "a#",
    "#a",
    "a/#/b",
    "#/a",
    "#/#",
    "a+",
    "a/b+",
    "+a/b",
    "a\x00",
    "$share/g",
    "$share/g/",
    "$share//a",
    "$share/g+/a",
    "$share/g#/a",
    "$share/g/a#",
    "$share/g/#/a",
    "$queue/",
    "$queue/a/#/b",
]


@pytest.mark.parametrize("topic_filter", VALID_FILTERS)
def test_valid_topic_filters(topic_filter: str) -> None:
    validate_topic_filter(topic_filter)


@pytest.mark.parametrize("topic_filter", INVALID_FILTERS)
def test_invalid_topic_filters(topic_filter: str) -> None:
    with pytest.raises(TopicError):
        validate_topic_filter(topic_filter)


def test_topic_filter_limits() -> None:
    validate_topic_filter("a/+/#", max_levels=3)
    with pytest.raises(TopicError):
        validate_topic_filter("a/+/b/#", max_levels=3)
    with pytest.raises(TopicError):
        validate_topic_filter("a" * 10, max_length=9)


@pytest.mark.parametrize(
    ("topic_filter", "expected"),
    [
        ("a/b", (None, "a/b")),
        ("$share/g/a/b", ("g", "a/b")),
        ("$share/g/#", ("g", "#")),
        ("$share/grp/$SYS/x", ("grp", "$SYS/x")),
        ("$queue/a/+", ("$queue", "a/+")),
        ("$SYS/a", (None, "$SYS/a")),
        ("$shared/g/a", (None, "$shared/g/a")),
    ],
)
def test_parse_shared(topic_filter: str, expected: tuple[str | None, str]) -> None:
    assert parse_shared(topic_filter) == expected


@pytest.mark.parametrize("bad", ["$share/g", "$share//a", "$share/g/", "$share/+/a", "$queue/"])
def test_parse_shared_rejects_malformed(bad: str) -> None:
    with pytest.raises(TopicError):
        parse_shared(bad)


# -- matching --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("topic_filter", "topic", "expected"),
    [
        ("a/b", "a/b", True),
        ("a/b", "a/c", False),
        ("a/+", "a/b", True),
        ("a/+", "a", False),
        ("a/+", "a/", True),
        ("a/+", "a/b/c", False),
        ("a/#", "a", True),
        ("a/#", "a/b/c", True),
        ("a/#", "ab", False),
        ("#", "a/b", True),
        ("#", "/", True),
        ("+/+", "/", True),
        ("/+", "/a", True),
        ("+", "/a", False),
        ("#", "$SYS/x", False),
        ("+/x", "$SYS/x", False),
        ("+", "$", False),
        ("$SYS/#", "$SYS/x", True),
        ("$SYS/#", "$SYS", True),
        ("$SYS/+", "$SYS/x", True),
        ("a/$b", "a/$b", True),
        ("a/+", "a/$b", True),
    ],
)
def test_topic_matches_table(topic_filter: str, topic: str, expected: bool) -> None:
    assert topic_matches(topic_filter, topic) is expected
    assert ref_matches(topic_filter, topic) is expected


@given(filters(), topics())
def test_topic_matches_agrees_with_reference(topic_filter: str, topic: str) -> None:
    assert topic_matches(topic_filter, topic) == ref_matches(topic_filter, topic)


@given(topics())
def test_topic_matches_itself(topic: str) -> None:
    assert topic_matches(topic, topic)


# -- covers / intersects ---------------------------------------------------------


def test_covers_api_examples() -> None:
    assert filter_covers("a/+", "a/b")
    assert filter_covers("a/+", "a/+")
    assert not filter_covers("a/+", "a/#")
    assert filter_covers("#", "a/#")
    assert filter_covers("a/#", "a")
    assert filter_covers("a/#", "a/+/c")
    assert not filter_covers("#", "$SYS/#")
    assert not filter_covers("+/x", "$SYS/x")
    assert not filter_covers("a/b", "a/+")
    assert not filter_covers("a/+/c", "a/+")
    assert filter_covers("$SYS/#", "$SYS/+")


@given(filters(), filters(), topics())
def test_covers_is_sound(outer: str, inner: str, topic: str) -> None:
    if filter_covers(outer, inner) and ref_matches(inner, topic):
        assert ref_matches(outer, topic)


@given(filters())
def test_covers_is_reflexive(topic_filter: str) -> None:
    assert filter_covers(topic_filter, topic_filter)


def test_intersect_examples() -> None:
    assert filters_intersect("a/+", "+/b")
    assert filters_intersect("a/#", "a")
    assert filters_intersect("#", "+/+/+")
    assert not filters_intersect("a/+", "a")
    assert not filters_intersect("a/b", "a/c")
    assert not filters_intersect("#", "$SYS/#")
    assert not filters_intersect("+/x", "$SYS/x")
    assert filters_intersect("$SYS/#", "$SYS/+")


@given(filters(), filters(), topics())
def test_intersect_when_a_topic_matches_both(a: str, b: str, topic: str) -> None:
    if ref_matches(a, topic) and ref_matches(b, topic):
        assert filters_intersect(a, b)
        assert filters_intersect(b, a)


@given(filters(), filters())
def test_intersect_is_exact(a: str, b: str) -> None:
    witness = ref_witness(a, b)
    # An empty witness ("/#" and "+" share only the empty topic, which is not a
    # valid name): filters_intersect may answer True there, which is the safe side.
    assume(witness != "")
    expected = ref_matches(a, witness) and ref_matches(b, witness)
    assert filters_intersect(a, b) == expected
