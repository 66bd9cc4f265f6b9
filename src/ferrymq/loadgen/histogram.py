"""A sparse log-linear latency histogram in microseconds, cheap to update and to merge.

Values below 1,024 µs get exact buckets; above, each power of two is cut in
512 buckets, so a bucket's width is under 0.2 % of its value. Workers send
their buckets to the parent once a second as a plain dict, which merges them.
"""

from __future__ import annotations

_SUB = 512  # buckets per power of two above the exact range
_EXACT = 2 * _SUB


def bucket(us: int) -> int:
    """Bucket index of a value in microseconds (negative values count as 0)."""
    if us < _EXACT:
        return us if us > 0 else 0
    shift = us.bit_length() - 10
    return _EXACT + (shift - 1) * _SUB + ((us >> shift) - _SUB)


def bucket_value(index: int) -> int:
    """The lowest value in microseconds that falls into bucket ``index``."""
    if index < _EXACT:
        return index
    shift, rest = divmod(index - _EXACT, _SUB)
    return (_SUB + rest) << (shift + 1)


class Histogram:
    """Counts per bucket plus exact count, sum and maximum."""

    __slots__ = ("buckets", "count", "max_us", "total_us")

    def __init__(self) -> None:
        self.buckets: dict[int, int] = {}
        self.count = 0
        self.total_us = 0
        self.max_us = 0

    def add(self, us: int) -> None:
        b = bucket(us)
        buckets = self.buckets
        buckets[b] = buckets.get(b, 0) + 1
        self.count += 1
        self.total_us += us
        if us > self.max_us:
            self.max_us = us

    def merge(self, other: Histogram) -> None:
        buckets = self.buckets
        for b, n in other.buckets.items():
            buckets[b] = buckets.get(b, 0) + n
        self.count += other.count
        self.total_us += other.total_us
        self.max_us = max(self.max_us, other.max_us)

    def to_dict(self) -> dict[str, object]:
        return {"b": self.buckets, "n": self.count, "s": self.total_us, "m": self.max_us}

    @classmethod
    def from_dict(cls, d: dict[str, object]) -> Histogram:
        h = cls()
        h.buckets = dict(d["b"])  # type: ignore[call-overload]
        h.count = int(d["n"])  # type: ignore[call-overload]
        h.total_us = int(d["s"])  # type: ignore[call-overload]
        h.max_us = int(d["m"])  # type: ignore[call-overload]
        return h

    def percentile(self, p: float) -> float:
        """The value in milliseconds at or below which ``p`` percent of the samples fall."""
        if not self.count:
            return 0.0
        rank = max(1, round(self.count * p / 100.0))
        seen = 0
        for b in sorted(self.buckets):
            seen += self.buckets[b]
            if seen >= rank:
                return min(bucket_value(b), self.max_us) / 1000.0
        return self.max_us / 1000.0

    def mean(self) -> float:
        return self.total_us / self.count / 1000.0 if self.count else 0.0

    def summary(self) -> dict[str, float]:
        """Milliseconds: p50, p90, p99, p99.9, max, mean, and the sample count."""
        return {
            "p50": self.percentile(50),
            "p90": self.percentile(90),
            "p99": self.percentile(99),
            "p999": self.percentile(99.9),
            "max": self.max_us / 1000.0,
            "mean": round(self.mean(), 3),
            "n": self.count,
        }
