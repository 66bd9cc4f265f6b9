"""The load generator's latency histogram: bucket bounds, percentiles, merging."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from ferrymq.loadgen.histogram import Histogram, bucket, bucket_value


@given(st.integers(min_value=0, max_value=10**9))
def test_histogram_bucket_bounds(us: int) -> None:
    b = bucket(us)
    low = bucket_value(b)
    assert low <= us
    assert bucket(low) == b
    assert us - low <= max(1, us // 256)  # under 0.4 % wide


def test_histogram_percentiles_and_merge() -> None:
    a, b = Histogram(), Histogram()
    for us in range(1, 1001):
        a.add(us)  # 1 us .. 1 ms
    for _ in range(10):
        b.add(250_000)  # ten slow ones
    a.merge(Histogram.from_dict(b.to_dict()))
    assert a.count == 1010
    assert a.percentile(50) == 0.505
    assert 249.0 < a.percentile(99.5) <= 250.0
    assert a.summary()["max"] == 250.0
