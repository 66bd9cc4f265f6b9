"""The topic trie: values stored under topic filters or topic names, found by MQTT matching.

One trie serves the three places that match topics: the router (filters
stored, a topic name asked: ``filters_matching``), the retained index and the
router's match cache (names stored, a filter asked: ``names_matched_by``), and
the ACL (rule filters stored, a topic name or a requested filter read as a name
asked, and ``intersects`` for "can any stored filter meet this one").

Rules this module keeps:
- a key is split on ``/``; a ``+`` level lives in a node's ``plus`` slot, a
  ``#`` level in its ``hash`` slot and every other level in ``children`` (None
  until the node gets one: most nodes are leaves), so matching a name walks at
  most (literal + ``+``) branches per level plus one ``#`` look-up, never the
  whole key set;
- the ``$`` rule (MQTT 5 §4.7.2, 3.1.1 §4.7.2): a filter whose first level is
  a wildcard does not match a name whose first level starts with ``$``. It is
  kept here and only here, at the root of each query (``hidden_from_wildcards``
  says which names it hides; ``mqtt/topics.py`` asks it too; the two hottest
  queries inline its one expression, and say so);
- a name's ``+`` or ``#`` level, when a caller asks with one (the ACL reads a
  requested filter as a name, as EMQX does), is a plain word: it matches a
  stored ``+`` (any word) or the stored ``+`` / ``#`` level itself, nothing more;
- the name-side queries see literal levels only: they are for tries of names;
- a level kept as a child's key is interned: levels repeat across keys
  (``sensors/<id>/temp``: every ``temp`` one string), so 100,000 retained
  topics under 1,000 distinct last levels keep 1,000 level strings, not 100,000;
- values are never None (None marks a node that holds no key); ``remove``
  prunes the nodes it leaves empty, so memory follows the live key set rather
  than the history of churn.
"""

from __future__ import annotations

from collections.abc import Iterator
from sys import intern
from typing import Any, Generic, TypeVar

V = TypeVar("V")


def hidden_from_wildcards(name: str) -> bool:
    """The ``$`` rule: whether a filter starting with a wildcard cannot match ``name``
    (a topic name, or its first level)."""
    return name[:1] == "$"


class _Node:
    """Not ``Generic``: compiled, a generic class gets a ``__dict__`` and a weak reference
    slot, 16 bytes more for each of the 100,000 nodes of as many retained topics."""

    __slots__ = ("children", "hash", "key", "plus", "value")

    def __init__(self) -> None:
        self.children: dict[str, _Node] | None = None
        self.plus: _Node | None = None
        self.hash: _Node | None = None
        self.value: Any = None  # a V, or None
        self.key = ""  # the key stored here, while ``value`` is set

    def empty(self) -> bool:
        return self.value is None and not self.children and self.plus is None and self.hash is None


class TopicTrie(Generic[V]):
    """Values keyed by topic filter or topic name (one value per key).

    ``by_key`` is the flat key -> value dict kept beside the trie for O(1)
    exact look-ups (the router's warm path reads it directly); read it, never
    rebind or mutate it from outside.
    """

    __slots__ = ("_root", "by_key")

    def __init__(self) -> None:
        self._root: _Node = _Node()
        self.by_key: dict[str, V] = {}

    def __len__(self) -> int:
        return len(self.by_key)

    def __iter__(self) -> Iterator[V]:
        """The stored values, as a snapshot."""
        return iter(list(self.by_key.values()))

    def clear(self) -> None:
        self._root = _Node()
        self.by_key.clear()

    # -- by key ------------------------------------------------------------------

    def get(self, key: str) -> V | None:
        """The value stored under exactly ``key`` (no matching)."""
        return self.by_key.get(key)

    def insert(self, key: str, value: V, levels: list[str] | None = None) -> V | None:
        """Store ``value`` under ``key`` and return the value it replaced.

        ``levels`` may pass ``key.split("/")`` when the caller already has it.
        """
        node = self._root
        for level in key.split("/") if levels is None else levels:
            if level == "+":
                child = node.plus
                if child is None:
                    child = node.plus = _Node()
            elif level == "#":
                child = node.hash
                if child is None:
                    child = node.hash = _Node()
            else:
                children = node.children
                if children is None:
                    child = _Node()
                    node.children = {intern(level): child}
                else:
                    child = children.get(level)
                    if child is None:
                        child = children[intern(level)] = _Node()
            node = child
        old = node.value
        node.value = value
        node.key = key
        self.by_key[key] = value
        return old

    def remove(self, key: str) -> V | None:
        """Drop ``key``, prune the branch it leaves empty, return its value."""
        old = self.by_key.pop(key, None)
        if old is None:
            return None
        node = self._root
        path: list[tuple[_Node, str]] = []
        for level in key.split("/"):  # the key is stored, so every node on its way exists
            path.append((node, level))
            if level == "+":
                node = node.plus  # type: ignore[assignment]
            elif level == "#":
                node = node.hash  # type: ignore[assignment]
            else:
                node = node.children[level]  # type: ignore[index]
        node.value = None
        node.key = ""
        while path and node.empty():
            parent, level = path.pop()
            if level == "+":
                parent.plus = None
            elif level == "#":
                parent.hash = None
            else:
                children = parent.children
                del children[level]  # type: ignore[union-attr]
                if not children:
                    parent.children = None
            node = parent
        return old

    def pop_matching(self, topic_filter: str) -> int:
        """Remove every stored name the plain filter matches; return how many went."""
        if "+" not in topic_filter and "#" not in topic_filter:
            return 0 if self.remove(topic_filter) is None else 1
        nodes: list[_Node] = []
        _collect(self._root, topic_filter.split("/"), 0, nodes)
        for node in nodes:
            self.remove(node.key)
        return len(nodes)

    def values(self) -> Iterator[V]:
        """Every stored value, depth first (a snapshot of each node as it is reached)."""
        stack = [self._root]
        while stack:
            node = stack.pop()
            if node.value is not None:
                yield node.value
            if node.children:
                stack.extend(node.children.values())
            if node.plus is not None:
                stack.append(node.plus)
            if node.hash is not None:
                stack.append(node.hash)

    # -- stored filters, a name asked ------------------------------------------------

    def filters_matching(self, levels: list[str]) -> list[V]:
        """Values of the stored filters that match the name split into ``levels``."""
        out: list[V] = []
        n = len(levels)
        if levels[0][:1] == "$":  # hidden_from_wildcards, inlined: the router's uncached path
            # The $ rule: skip the root's + and #, start below the literal first level.
            children = self._root.children
            first = None if children is None else children.get(levels[0])
            if first is None:
                return out
            stack = [(first, 1)]
        else:
            stack = [(self._root, 0)]
        while stack:
            node, i = stack.pop()
            rest = node.hash
            if rest is not None and rest.value is not None:
                out.append(rest.value)
            if i == n:
                if node.value is not None:
                    out.append(node.value)
                continue
            children = node.children
            if children is not None:
                child = children.get(levels[i])
                if child is not None:
                    stack.append((child, i + 1))
            if node.plus is not None:
                stack.append((node.plus, i + 1))
        return out

    def intersects(self, topic_filter: str) -> bool:
        """Whether some stored filter matches a name that ``topic_filter`` matches too."""
        levels = topic_filter.split("/")
        n = len(levels)
        dollar = hidden_from_wildcards(levels[0])
        stack = [(self._root, 0)]
        while stack:
            node, i = stack.pop()
            at_root = i == 0
            wild = not (at_root and dollar)  # may a stored wildcard take this level?
            if wild and node.hash is not None:
                return True
            if i == n:
                if node.value is not None:
                    return True
                continue
            level = levels[i]
            children = node.children
            if level == "#":
                # Meets every key going on from here; at the root, none that is hidden.
                if not at_root or node.plus is not None:
                    return True
                if children and any(not hidden_from_wildcards(key) for key in children):
                    return True
                continue
            if level == "+":
                if children:
                    for key, child in children.items():
                        if not (at_root and hidden_from_wildcards(key)):
                            stack.append((child, i + 1))
                if node.plus is not None:
                    stack.append((node.plus, i + 1))
                continue
            if children:
                exact = children.get(level)
                if exact is not None:
                    stack.append((exact, i + 1))
            if wild and node.plus is not None:
                stack.append((node.plus, i + 1))
        return False

    # -- stored names, a filter asked ------------------------------------------------

    def names_matched_by(self, topic_filter: str) -> list[V]:
        """Values of the stored names that the plain ``topic_filter`` matches."""
        if topic_filter == "#":
            # Every name the $ rule leaves: the flat dict is the cheapest walk
            # (hidden_from_wildcards inlined: a call per name doubles the time).
            return [v for k, v in self.by_key.items() if k[:1] != "$"]
        if "+" not in topic_filter and "#" not in topic_filter:
            value = self.by_key.get(topic_filter)
            return [] if value is None else [value]
        nodes: list[_Node] = []
        _collect(self._root, topic_filter.split("/"), 0, nodes)
        return [node.value for node in nodes]  # type: ignore[misc]


def _collect(node: _Node, levels: list[str], i: int, out: list[_Node]) -> None:
    """Append the value-holding nodes under ``node`` that ``levels[i:]`` matches."""
    if i == len(levels):
        if node.value is not None:
            out.append(node)
        return
    children = node.children
    level = levels[i]
    if level == "#":
        # '#' also matches the parent level itself: "a/#" matches "a".
        if i:
            stack = [node]
        elif children:
            stack = [c for k, c in children.items() if not hidden_from_wildcards(k)]
        else:
            return
        append = out.append
        while stack:
            n = stack.pop()
            if n.value is not None:
                append(n)
            if n.children:
                stack.extend(n.children.values())
    elif not children:
        return
    elif level == "+":
        for key, child in children.items():
            if i or not hidden_from_wildcards(key):
                _collect(child, levels, i + 1, out)
    else:
        exact = children.get(level)
        if exact is not None:
            _collect(exact, levels, i + 1, out)
