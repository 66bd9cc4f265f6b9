"""Topic names and topic filters: validation, matching, shared-subscription syntax.

Rules kept here (MQTT 3.1.1 §4.7, MQTT 5 §4.7-4.8):
- names and filters are at least one character, UTF-8, no U+0000;
- names contain no ``+`` or ``#``;
- in filters ``+`` occupies a whole level and ``#`` a whole, last level;
- filters starting with a wildcard do not match names starting with ``$``
  (``trie.hidden_from_wildcards`` decides which; the trie applies it at scale,
  the pairwise helpers below ask it too);
- ``$share/{group}/{filter}`` and ``$queue/{filter}`` name shared subscriptions.
"""

from __future__ import annotations

from functools import lru_cache

from ferrymq.mqtt.trie import hidden_from_wildcards


class TopicError(ValueError):
    """A topic name or filter breaks the rules above."""


def validate_topic_name(topic: str, max_levels: int = 128, max_length: int = 65535) -> None:
    """Raise TopicError unless ``topic`` is a valid topic name for PUBLISH."""
    if not topic:
        raise TopicError("topic name is empty")
    if len(topic) > max_length:
        raise TopicError("topic name too long")
    if "+" in topic or "#" in topic:
        raise TopicError("wildcards are not allowed in a topic name")
    if "\x00" in topic:
        raise TopicError("topic contains U+0000")
    if topic.count("/") >= max_levels:
        raise TopicError("topic has too many levels")


def validate_topic_filter(
    topic_filter: str, max_levels: int = 128, max_length: int = 65535
) -> None:
    """Raise TopicError unless ``topic_filter`` (shared or not) is a valid filter."""
    if not topic_filter:
        raise TopicError("topic filter is empty")
    if len(topic_filter) > max_length:
        raise TopicError("topic filter too long")
    if "\x00" in topic_filter:
        raise TopicError("topic filter contains U+0000")
    _group, plain = parse_shared(topic_filter)
    levels = plain.split("/")
    if len(levels) > max_levels:
        raise TopicError("topic filter has too many levels")
    last = len(levels) - 1
    for i, level in enumerate(levels):
        if level == "#":
            if i != last:
                raise TopicError("'#' must be the last level")
        elif level == "+":
            continue
        elif "#" in level or "+" in level:
            raise TopicError("a wildcard must occupy a whole level")


def parse_shared(topic_filter: str) -> tuple[str | None, str]:
    """Split a shared filter into (group, filter); (None, filter) when not shared.

    ``$queue/f`` is the group ``$queue``. Raises TopicError for a malformed
    ``$share`` prefix (no group, a group with wildcards, or no filter).
    """
    if topic_filter.startswith("$share/"):
        rest = topic_filter[7:]
        group, sep, plain = rest.partition("/")
        if not sep or not group or not plain:
            raise TopicError("shared subscription needs $share/{group}/{filter}")
        if "+" in group or "#" in group:
            raise TopicError("shared subscription group may not contain wildcards")
        return group, plain
    if topic_filter.startswith("$queue/"):
        plain = topic_filter[7:]
        if not plain:
            raise TopicError("$queue subscription needs a filter")
        return "$queue", plain
    return None, topic_filter


def is_wildcard(topic_filter: str) -> bool:
    return "+" in topic_filter or "#" in topic_filter


@lru_cache(maxsize=65536)
def _split(topic: str) -> tuple[str, ...]:
    return tuple(topic.split("/"))


def topic_matches(topic_filter: str, topic: str) -> bool:
    """True when the (non-shared) filter matches the topic name."""
    if topic_filter == topic:
        return True
    if not is_wildcard(topic_filter):
        return False
    if topic_filter[0] in "+#" and hidden_from_wildcards(topic):
        return False
    f_levels = _split(topic_filter)
    t_levels = _split(topic)
    for i, f in enumerate(f_levels):
        if f == "#":
            return True
        if i >= len(t_levels):
            return False
        if f != "+" and f != t_levels[i]:
            return False
    return len(f_levels) == len(t_levels)


def filter_covers(outer: str, inner: str) -> bool:
    """True when every topic that ``inner`` can match is also matched by ``outer``.

    ``a/+`` covers ``a/b`` and ``a/+`` but not ``a/#``; ``#`` covers everything
    except filters that can only match ``$`` topics.
    """
    o = _split(outer)
    n = _split(inner)
    if o[0] in ("+", "#") and hidden_from_wildcards(n[0]):
        return False
    for i, level in enumerate(o):
        if level == "#":
            return True
        if i >= len(n):
            return False
        inner_level = n[i]
        if inner_level == "#":
            return False
        if level == "+":
            continue
        if inner_level == "+" or inner_level != level:
            return False
    return len(o) == len(n)


def filters_intersect(a: str, b: str) -> bool:
    """True when some topic name is matched by both filters."""
    x = _split(a)
    y = _split(b)
    x_dollar = hidden_from_wildcards(x[0])
    y_dollar = hidden_from_wildcards(y[0])
    # A leading wildcard never matches a $ topic, so it cannot meet a filter
    # that only matches $ topics.
    if (x[0] in ("+", "#") and y_dollar) or (y[0] in ("+", "#") and x_dollar):
        return False
    for i in range(max(len(x), len(y))):
        xl = x[i] if i < len(x) else None
        yl = y[i] if i < len(y) else None
        if xl == "#" or yl == "#":
            return True
        if xl is None or yl is None:
            return False
        if xl == "+" or yl == "+" or xl == yl:
            continue
        return False
    return True
