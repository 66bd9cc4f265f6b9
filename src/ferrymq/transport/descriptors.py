"""The process's descriptor table, grown before the connections that fill it need the room.

Linux keeps a process's open files in one table, which it doubles (64, 128, ... slots)
when a new descriptor does not fit. In a process of more than one thread (the store's
writer) each doubling first waits for an RCU grace period (``synchronize_rcu`` in the
kernel's ``expand_fdtable``), 10-30 ms on a 2-vCPU VM, inside the ``accept4`` that
needed the room: the event loop stands still meanwhile and every connection arriving
waits for its CONNACK. On the way to 10,000 connections a scheduler trace caught six of
these, each holding up 10-30 CONNECTs: S4's connect latency p99 (Mosquitto, one thread,
never waits).

So the table is grown ahead: at start (``reserve``, called while the process has one
thread, when growing is a plain copy) to ``START_SLOTS``, then, whenever an accepted
descriptor reaches half the table (``accepted``), on a short-lived thread of its own
to ``GROWTH`` times the size, while the loop goes on accepting into the room left. A
table is grown by duplicating a descriptor to just below the new size
(``fcntl(F_DUPFD)``: the lowest free number from there, so nothing open is touched)
and closing the copy; a table never shrinks. The size is bounded by the soft
``RLIMIT_NOFILE``, beyond which no descriptor can exist. The kernel spends about 8
bytes a slot on it, outside the process's RSS: 32 KiB at start.
"""

from __future__ import annotations

import logging
import os
import resource
import threading

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: nothing to grow
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger("ferrymq.listeners")

START_SLOTS = 4096
GROWTH = 4
_NEVER = 1 << 62


class Table:
    """What is known of this process's table: room for ``slots`` descriptors at least."""

    __slots__ = ("slots", "grow_at")

    def __init__(self) -> None:
        self.slots = 0
        self.grow_at = _NEVER  # an accepted descriptor from here on grows the table

    def reserve(self, slots: int) -> int:
        """Grow the table to ``slots`` now (bounded by the limit); the room there is."""
        target = min(slots, _limit())
        if target > self.slots:
            self._grow(target)
        return self.slots

    def accepted(self, fd: int) -> None:
        """``fd`` was just accepted: past half the table, grow it on a thread of its own."""
        if fd < self.grow_at:
            return
        self.grow_at = _NEVER  # until the thread is done
        target = min(self.slots * GROWTH, _limit())
        if target > self.slots:
            threading.Thread(
                target=self._grow, args=(target,), name="ferrymq-fdtable", daemon=True
            ).start()

    def _grow(self, target: int) -> None:
        """Make room for ``target`` descriptors: a descriptor duplicated to ``target - 1``."""
        try:
            fd = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
            try:
                os.close(fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, target - 1))
            finally:
                os.close(fd)
        except (OSError, AttributeError) as exc:  # AttributeError: no fcntl here
            # Left to the kernel, which grows the table when it must, inside an accept.
            log.debug("descriptor table not grown to %d: %s", target, exc)
            self.grow_at = _NEVER
            return
        self.slots = max(self.slots, target)
        self.grow_at = self.slots // 2 if self.slots < _limit() else _NEVER


def _limit() -> int:
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return soft if soft != resource.RLIM_INFINITY else 1 << 20


TABLE = Table()
