"""Retained messages, and the topic tree that finds them by wildcard filter.

``TopicTree`` maps topic names to values and answers "which stored topics does
this filter match" by walking only the branches the filter can reach, so a
subscribe to ``sensors/+/temp`` does not scan every retained topic. Removing a
topic prunes the nodes it leaves empty, so memory follows the live topic set
rather than the history of churn. The router reuses it to index its match cache.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Generic, TypeVar

from ferrymq.model.message import Message

V = TypeVar("V")


class _Node(Generic[V]):
    __slots__ = ("children", "topic", "value")

    def __init__(self) -> None:
        # None until the node gets a child: most nodes are leaves, and an empty
        # dict per leaf would double the objects the tree (and the GC) carries.
        self.children: dict[str, _Node[V]] | None = None
        self.value: V | None = None
        self.topic = ""


class TopicTree(Generic[V]):
    """Values keyed by topic name, with wildcard lookup.

    ``by_topic`` is the flat topic -> value dict kept alongside the tree for
    O(1) exact lookups; read it, never rebind or mutate it from outside.
    Values must not be None (None marks an empty node).
    """

    __slots__ = ("_root", "by_topic")

    def __init__(self) -> None:
        self._root: _Node[V] = _Node()
        self.by_topic: dict[str, V] = {}

    def __len__(self) -> int:
        return len(self.by_topic)

    def __iter__(self) -> Iterator[V]:
        return iter(list(self.by_topic.values()))

    def get(self, topic: str) -> V | None:
        return self.by_topic.get(topic)

    def insert(self, topic: str, value: V, levels: list[str] | None = None) -> V | None:
        """Store ``value`` under ``topic`` and return the value it replaced.

        ``levels`` may pass ``topic.split("/")`` when the caller already has it.
        """
        node = self._root
        for level in topic.split("/") if levels is None else levels:
            children = node.children
            if children is None:
                child = _Node()
                node.children = {level: child}
            else:
                child = children.get(level)
                if child is None:
                    child = children[level] = _Node()
            node = child
        old = node.value
        node.value = value
        node.topic = topic
        self.by_topic[topic] = value
        return old

    def remove(self, topic: str) -> V | None:
        """Drop ``topic`` and prune the branch it leaves empty."""
        old = self.by_topic.pop(topic, None)
        if old is None:
            return None
        node = self._root
        path: list[tuple[_Node[V], str]] = []
        for level in topic.split("/"):
            path.append((node, level))
            node = node.children[level]  # type: ignore[index]
        node.value = None
        while path and node.value is None and not node.children:
            parent, level = path.pop()
            children = parent.children
            del children[level]  # type: ignore[union-attr]
            if not children:
                parent.children = None
            node = parent
        return old

    def clear(self) -> None:
        self._root = _Node()
        self.by_topic.clear()

    def match(self, topic_filter: str) -> list[V]:
        """Values of every stored topic the plain filter matches ($-rule included)."""
        if topic_filter == "#":
            # The whole tree minus $ topics: the flat dict is the cheapest walk.
            return [v for t, v in self.by_topic.items() if t[:1] != "$"]
        if "+" not in topic_filter and "#" not in topic_filter:
            value = self.by_topic.get(topic_filter)
            return [] if value is None else [value]
        nodes: list[_Node[V]] = []
        _collect(self._root, topic_filter.split("/"), 0, nodes)
        return [n.value for n in nodes]  # type: ignore[misc]

    def pop_matching(self, topic_filter: str) -> int:
        """Remove every topic the plain filter matches; return how many went."""
        if "+" not in topic_filter and "#" not in topic_filter:
            return 0 if self.remove(topic_filter) is None else 1
        nodes: list[_Node[V]] = []
        _collect(self._root, topic_filter.split("/"), 0, nodes)
        for node in nodes:
            self.remove(node.topic)
        return len(nodes)


def _collect(node: _Node[V], levels: list[str], i: int, out: list[_Node[V]]) -> None:
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
            stack = [c for k, c in children.items() if k[:1] != "$"]
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
            if i or key[:1] != "$":
                _collect(child, levels, i + 1, out)
    else:
        child = children.get(level)
        if child is not None:
            _collect(child, levels, i + 1, out)


class RetainedStore:
    """Retained messages by topic, in a trie so a wildcard subscribe scans only what it can match.

    ``max_messages`` caps the number of distinct topics (0 = unlimited): a new
    topic beyond the cap is refused, replacing an existing one never is.
    Expired messages are dropped lazily, when a match meets them.
    """

    __slots__ = ("_expiring", "_tree", "max_messages")

    def __init__(self, max_messages: int = 0) -> None:
        self.max_messages = max_messages
        self._tree: TopicTree[Message] = TopicTree()
        # How many stored messages carry an expiry; while zero, match() skips the expiry pass.
        self._expiring = 0

    def __len__(self) -> int:
        return len(self._tree.by_topic)

    def __iter__(self) -> Iterator[Message]:
        return iter(self._tree)

    def get(self, topic: str) -> Message | None:
        return self._tree.by_topic.get(topic)

    def set(self, msg: Message) -> bool:
        """Store or replace ``msg`` under its topic; an empty payload deletes it.

        Returns False when the store is full and the topic is new.
        """
        if not msg.payload:
            self.delete(msg.topic)
            return True
        tree = self._tree
        if (
            self.max_messages
            and len(tree.by_topic) >= self.max_messages
            and msg.topic not in tree.by_topic
        ):
            return False
        old = tree.insert(msg.topic, msg)
        if old is not None and old.expiry_at:
            self._expiring -= 1
        if msg.expiry_at:
            self._expiring += 1
        return True

    def delete(self, topic: str) -> Message | None:
        old = self._tree.remove(topic)
        if old is not None and old.expiry_at:
            self._expiring -= 1
        return old

    def match(self, topic_filter: str, now: float) -> list[Message]:
        """Live retained messages matching the plain filter; expired ones are removed.

        ``now`` is ``time.monotonic()``.
        """
        found = self._tree.match(topic_filter)
        if not self._expiring:
            return found
        live: list[Message] = []
        expired: list[Message] = []
        for msg in found:
            if msg.expiry_at and now >= msg.expiry_at:
                expired.append(msg)
            else:
                live.append(msg)
        for msg in expired:
            self.delete(msg.topic)
        return live
