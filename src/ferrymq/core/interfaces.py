"""The typed seams of the core: what it needs from a transport and a clock.

The core is written against these protocols, not against asyncio or a socket,
so that tests drive it in memory (a list for a transport, a number for the
clock) and later backends plug in without touching the connection code.
"""

from __future__ import annotations

from typing import Any, Protocol


class Transport(Protocol):
    """The subset of ``asyncio.Transport`` a connection uses (TCP, TLS, WebSocket)."""

    def write(self, data: bytes) -> None: ...

    def close(self) -> None: ...

    def abort(self) -> None: ...

    def is_closing(self) -> bool: ...

    def can_write_eof(self) -> bool: ...

    def write_eof(self) -> None: ...

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...

    def get_extra_info(self, name: str, default: Any = None) -> Any: ...


class Clock(Protocol):
    """Monotonic seconds (``time.monotonic``): deadlines, keep alive, expiry."""

    def __call__(self) -> float: ...


class ListenerInfo(Protocol):
    """The node's MQTT listeners as the core's alarms and the API read them.

    ``describe`` gives one dict per listener in EMQX 4's ``/listeners`` shape
    (``identifier``, ``current_conns``, ``max_conns``, ...). The transport's
    ``ListenerManager`` is one; the core never imports the transport.
    """

    def describe(self) -> list[dict[str, Any]]: ...
