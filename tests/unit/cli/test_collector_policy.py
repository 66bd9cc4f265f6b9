"""``server._tune_gc``: survivors of a young pass leave the collector, young cycles do not."""

from __future__ import annotations

import asyncio
import gc
import weakref
from collections.abc import Iterator

import pytest

from ferrymq import server


class Node:
    def __init__(self) -> None:
        self.other: Node | None = None


@pytest.fixture
def tuned() -> Iterator[asyncio.AbstractEventLoop]:
    """The broker's collector policy in this process, undone afterwards."""
    thresholds = gc.get_threshold()
    loop = asyncio.new_event_loop()
    server._tune_gc(loop)
    try:
        yield loop
    finally:
        gc.callbacks.remove(server._freeze_survivors)
        gc.unfreeze()
        gc.set_threshold(*thresholds)
        loop.close()


def test_what_survives_a_young_pass_is_frozen_out_of_the_next_ones(tuned):
    frozen = gc.get_freeze_count()
    kept = [[i] for i in range(3 * server.YOUNG_THRESHOLD)]  # enough to start young passes
    assert gc.get_freeze_count() >= frozen + server.YOUNG_THRESHOLD
    assert gc.get_count()[0] < server.YOUNG_THRESHOLD + 10
    del kept


def test_a_cycle_dropped_while_young_is_still_collected(tuned):
    a, b = Node(), Node()
    a.other, b.other = b, a
    gone = weakref.ref(a)
    del a, b
    junk = [[i] for i in range(3 * server.YOUNG_THRESHOLD)]  # a young pass runs meanwhile
    assert gone() is None
    del junk


def test_the_full_pass_collects_cycles_among_frozen_objects(tuned):
    a, b = Node(), Node()
    a.other, b.other = b, a
    gone = weakref.ref(a)
    gc.freeze()  # as if they had survived a young pass
    del a, b
    assert gone() is not None  # frozen: no young pass looks at them
    server._collect_everything(tuned)
    assert gone() is None
