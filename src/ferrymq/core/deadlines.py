"""Coarse deadlines for many connections: one event-loop timer per slot, not per client.

Every connection has one deadline (the connect timeout, then 1.5 x keep alive,
then the linger after closing; ``mqtt.connection.ServerConnection.deadline``).
An event-loop timer for each costs about 350 bytes per idle connection under
uvloop (the handle, its libuv timer, a context), more than the connection's
own protocol state. Instead each deadline is rounded up to the next multiple
of ``RESOLUTION`` and the connection joins that slot; one loop timer per
occupied slot calls every connection in it. Ten thousand clients that
connected within ten seconds share about forty timers, and each costs its
slot an entry of about 40 bytes.

A deadline fires up to ``RESOLUTION`` late, never early (the machine checks
the time itself and moves its deadline on when the timer came too soon);
keep alive and the connect timeout are whole seconds, so a quarter of a
second is well within what clients can tell apart. Removing a connection
from its slot is one dict deletion, so a closed connection is not kept alive by
a timer that would fire minutes later.
"""

from __future__ import annotations

import asyncio
import math
import time
from typing import Protocol


class Due(Protocol):
    """What a slot calls: a connection whose deadline came. ``slot`` is one that ``add``
    returned before, which the connection may have left since (another connection's
    callback in the same slot can close it), so it compares."""

    def deadline_due(self, slot: Slot) -> None: ...


# Seconds per slot: how late a deadline may fire.
RESOLUTION = 0.25


class Slot(dict["Due", None]):
    """The connections due at ``when`` (a dict used as a set; see Broker.connections).
    A connection holds its slot itself: no number of its own, no look-up to leave."""

    __slots__ = ("when",)

    def __init__(self, when: float) -> None:
        super().__init__()
        self.when = when


class Deadlines:
    """The slots by number (``when`` / RESOLUTION) and their loop timers."""

    __slots__ = ("loop", "slots")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.slots: dict[int, Slot] = {}

    def add(self, item: Due, when: float) -> Slot:
        """Call ``item.deadline_due(slot)`` at or up to RESOLUTION after ``when`` (the
        monotonic clock); returns the slot to ``remove`` it from."""
        key = math.ceil(when / RESOLUTION)
        slot = self.slots.get(key)
        if slot is None:
            slot = self.slots[key] = Slot(key * RESOLUTION)
            delay = slot.when - time.monotonic()
            self.loop.call_later(delay if delay > 0.0 else 0.0, self._fire, key)
        slot[item] = None
        return slot

    @staticmethod
    def remove(item: Due, slot: Slot) -> None:
        slot.pop(item, None)

    def _fire(self, key: int) -> None:
        slot = self.slots.pop(key, None)
        if not slot:
            return
        for item in list(slot):  # a callback may remove another item of this slot
            item.deadline_due(slot)

    def __len__(self) -> int:
        """Deadlines waiting."""
        return sum(len(slot) for slot in self.slots.values())
