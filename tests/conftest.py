"""Settings for the whole suite.

Hypothesis' per-example deadline is off everywhere: the suite runs on shared 2-core CI
machines, where a 200 ms deadline fails on a scheduling hiccup, not on a bug. Speed is
measured by the benchmarks (``bench/``), never by tests.
"""

from hypothesis import settings

settings.register_profile("ferrymq", deadline=None)
settings.load_profile("ferrymq")
