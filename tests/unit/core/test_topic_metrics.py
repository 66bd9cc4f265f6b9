"""Topic metrics in memory: registration rules, the quota, counts and rates."""

from __future__ import annotations

import pytest

from ferrymq.core.topic_metrics import MAX_TOPICS, TopicMetrics, TopicMetricsError


def test_registration_quota_and_rates() -> None:
    tm = TopicMetrics()
    for i in range(MAX_TOPICS):
        tm.register(f"t/{i}")
    with pytest.raises(TopicMetricsError):
        tm.register("one/more")
    with pytest.raises(TopicMetricsError):
        tm.register("t/0")
    counters = tm.watched["t/0"]
    start = 1000.0
    tm._last_tick = start
    counters.counts[0] = 10
    tm.tick(start + 1.0)
    assert counters.rates[0] == pytest.approx(2.0)  # 10/s folded into a 5 s average
    tm.tick(start + 2.0)
    assert counters.rates[0] == pytest.approx(1.6)
