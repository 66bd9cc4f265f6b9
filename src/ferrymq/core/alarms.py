"""Alarms: conditions an operator should see, raised and cleared by the broker itself.

As EMQX 4.4's ``emqx_alarm``: an alarm is activated once by name (a second
activation is ignored), moves to the history when deactivated, and the
history is bounded (``alarm_size_limit``) and forgets entries older than
``alarm_validity_period``. Times are epoch microseconds, as EMQX reports them.

The checks run from the broker's one-second housekeeping, every
``alarm_check_interval`` seconds; none is on the message path:

- ``high_system_memory_usage``: the machine's memory in use above
  ``alarm_sysmem_high_watermark`` percent;
- ``high_process_memory_usage``: the broker's resident memory above
  ``alarm_procmem_high_watermark`` percent of the machine's memory;
- ``too_many_connections``: connections above ``alarm_connections_high_watermark``
  percent of ``max_connections`` (``too_many_connections/<listener>`` for a
  listener's own ``max_connections``);
- ``too_many_open_files``: open file descriptors above
  ``alarm_fds_high_watermark`` percent of the process limit (each
  connection holds one; EMQX's ``too_many_processes`` watches its equivalent).

A watermark of 0 turns its check off. An alarm clears when its figure is
back under the watermark. Each change is logged and published, as EMQX
does, to ``$SYS/brokers/{node}/alarms/activate`` or ``.../deactivate``
(QoS 0, not retained) with the alarm as JSON.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ferrymq.core import system

if TYPE_CHECKING:
    from ferrymq.core.broker import Broker
    from ferrymq.core.interfaces import ListenerInfo

log = logging.getLogger("ferrymq.alarms")


def _now_us() -> int:
    return time.time_ns() // 1000


@dataclass(slots=True)
class Alarm:
    name: str
    message: str
    details: dict[str, Any] = field(default_factory=dict)
    activate_at: int = 0
    deactivate_at: int | None = None  # None while active ("infinity" in EMQX)

    def as_dict(self, now_us: int) -> dict[str, Any]:
        end = self.deactivate_at
        return {
            "name": self.name,
            "message": self.message,
            "details": self.details,
            "activate_at": self.activate_at,
            "deactivate_at": "infinity" if end is None else end,
            "activated": end is None,
            "duration": (now_us if end is None else end) - self.activate_at,
        }


class Alarms:
    """The active alarms and the history of deactivated ones.

    ``on_change(event, alarm)`` is called with ``"activate"`` or ``"deactivate"``.
    """

    def __init__(
        self,
        size_limit: int = 1000,
        validity_period: float = 86400.0,
        on_change: Callable[[str, Alarm], None] | None = None,
    ) -> None:
        self.active: dict[str, Alarm] = {}
        self.history: deque[Alarm] = deque(maxlen=size_limit or None)
        self.validity_us = int(validity_period * 1_000_000)
        self.on_change = on_change

    def activate(self, name: str, message: str, details: dict[str, Any] | None = None) -> bool:
        """Raise ``name``; False when it is active already."""
        if name in self.active:
            return False
        alarm = self.active[name] = Alarm(name, message, details or {}, _now_us())
        log.warning("alarm %s activated: %s", name, message)
        if self.on_change is not None:
            self.on_change("activate", alarm)
        return True

    def deactivate(self, name: str) -> bool:
        """Clear ``name`` into the history; False when it is not active."""
        alarm = self.active.pop(name, None)
        if alarm is None:
            return False
        alarm.deactivate_at = _now_us()
        self.history.append(alarm)
        log.warning("alarm %s deactivated", name)
        if self.on_change is not None:
            self.on_change("deactivate", alarm)
        return True

    def clear_history(self) -> None:
        self.history.clear()

    def listed(self, which: str = "all") -> list[dict[str, Any]]:
        """``all``, ``activated`` or ``deactivated`` alarms, newest first."""
        now = _now_us()
        self._forget_old(now)
        chosen: list[Alarm] = []
        if which in ("all", "activated"):
            chosen += sorted(self.active.values(), key=lambda a: -a.activate_at)
        if which in ("all", "deactivated"):
            chosen += reversed(self.history)
        return [a.as_dict(now) for a in chosen]

    def _forget_old(self, now_us: int) -> None:
        history = self.history
        while history and now_us - (history[0].deactivate_at or now_us) > self.validity_us:
            history.popleft()

    def set(self, name: str, on: bool, message: str, details: dict[str, Any]) -> None:
        if on:
            self.activate(name, message, details)
        else:
            self.deactivate(name)


@dataclass(frozen=True, slots=True)
class _Figures:
    memory: system.Memory
    open_fds: int
    max_fds: int


def _measure() -> _Figures:
    return _Figures(system.memory(), system.open_fds(), system.max_fds())


class AlarmChecks:
    """The broker's own alarm conditions, evaluated every ``alarm_check_interval`` seconds."""

    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        s = broker.settings
        self.alarms = Alarms(s.alarm_size_limit, s.alarm_validity_period, self._announce)
        # The node's listeners, handed over once they are open (server.py): each
        # listener's own max_connections has its alarm.
        self.listeners: ListenerInfo | None = None
        self._next = 0.0
        self._measuring = False

    def tick(self, now: float) -> None:
        """Called every second with ``time.monotonic()`` on the event loop.

        The machine figures are read in a worker thread (listing the open
        descriptors took 30 ms for 20,000 of them on a 2-core machine), then
        applied back on the loop, which alone touches the alarms.
        """
        if now < self._next or self._measuring:
            return
        self._next = now + self.broker.settings.alarm_check_interval
        self._measuring = True
        future = self.broker.loop.run_in_executor(None, _measure)
        future.add_done_callback(self._measured)

    def _measured(self, future: asyncio.Future[_Figures]) -> None:
        self._measuring = False
        if future.cancelled():
            return
        exc = future.exception()
        if exc is not None:
            log.error("alarm check failed: %r", exc)
            return
        self.apply(future.result())

    def check(self) -> None:
        """Measure and apply now, in the calling thread."""
        self.apply(_measure())

    def apply(self, figures: _Figures) -> None:
        s = self.broker.settings
        self._memory(figures.memory)
        self._connections()
        if s.alarm_fds_high_watermark:
            self._usage(
                "too_many_open_files",
                figures.open_fds,
                figures.max_fds,
                s.alarm_fds_high_watermark,
                "open files",
            )

    def _announce(self, event: str, alarm: Alarm) -> None:
        """EMQX's alarm messages: ``$SYS/brokers/{node}/alarms/activate|deactivate``."""
        topic = f"$SYS/brokers/{self.broker.settings.node_name}/alarms/{event}"
        payload = json.dumps(alarm.as_dict(_now_us()), separators=(",", ":")).encode()
        self.broker.publish_sys([(topic, payload)], retain=False)

    def _memory(self, mem: system.Memory) -> None:
        if not mem.total:
            return
        s = self.broker.settings
        for name, what, used, hw in (
            ("high_system_memory_usage", "System", mem.used, s.alarm_sysmem_high_watermark),
            ("high_process_memory_usage", "Process", mem.rss, s.alarm_procmem_high_watermark),
        ):
            if not hw:
                continue
            usage = round(used * 100 / mem.total, 2)
            self.alarms.set(
                name,
                usage > hw,
                f"{what} memory usage is higher than {hw:g}%",
                {"usage": usage, "high_watermark": hw, "used": used, "total": mem.total},
            )

    def _connections(self) -> None:
        broker = self.broker
        hw = broker.settings.alarm_connections_high_watermark
        if not hw:
            return
        self._usage(
            "too_many_connections",
            broker.online_count(),
            broker.settings.max_connections,
            hw,
            "connections",
        )
        listeners = self.listeners
        for item in listeners.describe() if listeners is not None else ():
            name = "too_many_connections/" + item["identifier"].removeprefix("mqtt:")
            self._usage(name, item["current_conns"], item["max_conns"], hw, "connections")

    def _usage(self, name: str, used: int, limit: int, hw: float, what: str) -> None:
        if not limit:
            self.alarms.deactivate(name)
            return
        usage = round(used * 100 / limit, 2)
        self.alarms.set(
            name,
            usage > hw,
            f"{usage:g}% of the {limit} {what} allowed are in use",
            {"usage": usage, "high_watermark": hw, "current": used, "max": limit},
        )
