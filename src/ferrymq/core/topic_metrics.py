"""Per-topic message counters (EMQX's topic metrics) for the topic names an operator registers.

The broker holds ``watched`` (topic name -> counters) and checks it once per
publish: while nothing is registered that is one falsy test, and a topic
that is not registered costs one dict look-up. Rates are EMQX's: every second
the increase of each counter is folded into a moving average over five
seconds (``rate = (rate * 4 + per_second) / 5``).
"""

from __future__ import annotations

import time
from typing import Any

MAX_TOPICS = 512  # as EMQX 4.4

# Index of each counter in TopicCounters.counts.
IN, OUT, DROPPED = 0, 1, 2
QOS_IN = (3, 5, 7)
QOS_OUT = (4, 6, 8)
NAMES = (
    "messages.in",
    "messages.out",
    "messages.dropped",
    "messages.qos0.in",
    "messages.qos0.out",
    "messages.qos1.in",
    "messages.qos1.out",
    "messages.qos2.in",
    "messages.qos2.out",
)
_WINDOW = 5


class TopicMetricsError(ValueError):
    """A registration that cannot be made (already there, too many topics)."""


class TopicCounters:
    __slots__ = ("counts", "created_at", "last", "rates")

    def __init__(self) -> None:
        self.counts = [0] * len(NAMES)
        self.last = [0] * len(NAMES)
        self.rates = [0.0] * len(NAMES)
        self.created_at = time.time()

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for i, name in enumerate(NAMES):
            out[name + ".count"] = self.counts[i]
            out[name + ".rate"] = round(self.rates[i], 2)
        return out


class TopicMetrics:
    """The registered topics of one broker and their counters."""

    def __init__(self) -> None:
        self.watched: dict[str, TopicCounters] = {}
        self._last_tick = time.monotonic()

    def register(self, topic: str) -> TopicCounters:
        if topic in self.watched:
            raise TopicMetricsError(f"topic metrics for {topic!r} exist already")
        if len(self.watched) >= MAX_TOPICS:
            raise TopicMetricsError(f"at most {MAX_TOPICS} topics can have metrics")
        counters = self.watched[topic] = TopicCounters()
        return counters

    def unregister(self, topic: str) -> bool:
        return self.watched.pop(topic, None) is not None

    def unregister_all(self) -> None:
        self.watched.clear()

    def tick(self, now: float) -> None:
        """Update the rates; ``now`` is ``time.monotonic()``."""
        elapsed = now - self._last_tick
        self._last_tick = now
        if elapsed <= 0:
            return
        for c in self.watched.values():
            counts, last, rates = c.counts, c.last, c.rates
            for i, value in enumerate(counts):
                rates[i] = (rates[i] * (_WINDOW - 1) + (value - last[i]) / elapsed) / _WINDOW
                last[i] = value
