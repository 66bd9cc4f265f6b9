"""The shared deadline slots (core/deadlines.py) on the real event loop.

Many connections share one loop timer per slot; a deadline never fires before
its time, and a connection that left its slot (closed, or moved on) is neither
called nor kept.
"""

from __future__ import annotations

import asyncio
import time

from ferrymq.core.deadlines import RESOLUTION, Deadlines, Slot


class Waiter:
    """Records when its slot called it, as a connection would act on it."""

    def __init__(self, deadlines: Deadlines) -> None:
        self.deadlines = deadlines
        self.slot: Slot | None = None
        self.due_at: float | None = None
        self.calls = 0

    def wait_until(self, when: float) -> None:
        self.slot = self.deadlines.add(self, when)

    def deadline_due(self, slot: Slot) -> None:
        if slot is not self.slot:
            return
        self.calls += 1
        self.due_at = time.monotonic()


async def until(check: object, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


async def test_many_deadlines_share_a_few_timers_and_never_fire_early() -> None:
    loop = asyncio.get_running_loop()
    deadlines = Deadlines(loop)
    start = time.monotonic()
    waiters = [Waiter(deadlines) for _ in range(200)]
    wanted = [start + 0.3 + (i % 4) * 0.1 for i in range(200)]
    for waiter, when in zip(waiters, wanted, strict=True):
        waiter.wait_until(when)
    # 200 deadlines within 0.3 s fall into at most three slots.
    assert len(deadlines.slots) <= 3
    assert len(deadlines) == 200
    await until(lambda: all(w.calls for w in waiters))
    for waiter, when in zip(waiters, wanted, strict=True):
        assert waiter.calls == 1
        assert waiter.due_at is not None and waiter.due_at >= when - 0.002
    assert len(deadlines) == 0 and not deadlines.slots


async def test_a_removed_deadline_is_not_called_and_not_kept() -> None:
    deadlines = Deadlines(asyncio.get_running_loop())
    gone, kept = Waiter(deadlines), Waiter(deadlines)
    when = time.monotonic() + 0.05
    gone.wait_until(when)
    kept.wait_until(when)
    assert gone.slot is not None
    deadlines.remove(gone, gone.slot)
    assert len(deadlines) == 1  # the slot holds no reference to what left it
    await until(lambda: kept.calls == 1)
    await asyncio.sleep(2 * RESOLUTION)
    assert gone.calls == 0
