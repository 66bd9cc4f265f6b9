"""Retained messages, indexed by topic in the shared topic trie.

``RetainedStore`` keeps one message per topic name in a ``TopicTrie``, which
answers "which stored topics does this filter match" by walking only the
branches the filter can reach (the ``$`` rule included, see ``mqtt/trie.py``),
so a subscribe to ``sensors/+/temp`` does not scan every retained topic.
Removing a topic prunes the nodes it leaves empty, so memory follows the live
topic set rather than the history of churn.
"""

from __future__ import annotations

from collections.abc import Iterator

from ferrymq.model.message import Message
from ferrymq.mqtt.trie import TopicTrie

TopicTree = TopicTrie  # the name this module gave its trie before there was one for all


class RetainedStore:
    """Retained messages by topic, in a trie so a wildcard subscribe scans only what it can match.

    ``max_messages`` caps the number of distinct topics (0 = unlimited): a new
    topic beyond the cap is refused, replacing an existing one never is.
    Expired messages are dropped lazily, when a match meets them.
    """

    __slots__ = ("_expiring", "_tree", "max_messages")

    def __init__(self, max_messages: int = 0) -> None:
        self.max_messages = max_messages
        self._tree: TopicTrie[Message] = TopicTrie()
        # How many stored messages carry an expiry; while zero, match() skips the expiry pass.
        self._expiring = 0

    def __len__(self) -> int:
        return len(self._tree.by_key)

    def __iter__(self) -> Iterator[Message]:
        return iter(self._tree)

    def get(self, topic: str) -> Message | None:
        return self._tree.by_key.get(topic)

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
            and len(tree.by_key) >= self.max_messages
            and msg.topic not in tree.by_key
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
        found = self._tree.names_matched_by(topic_filter)
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
