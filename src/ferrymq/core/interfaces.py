"""The typed seams of the core: what it needs from a transport, a route table, listeners.

The core is written against these protocols, not against asyncio, a socket or
one data structure, so that tests drive it in memory (a list for a transport)
and later backends plug in without touching the connection code: a cluster's
route table (which nodes subscribe to what) stands in for the local ``Router``
through ``RouteTable`` (``Broker(..., router=table)``), another store for
``SqliteStore`` through ``Store`` (storage/store.py, beside its implementation).

Time needs no protocol: the connection machine is handed ``now`` with every
call, and the core reads the monotonic clock that the event loop's timers use,
which in-memory tests move forward.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from ferrymq.core.router import MatchResult, Targets
    from ferrymq.model.message import Message
    from ferrymq.model.subscription import Subscription


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


class RouteTable(Protocol):
    """Where messages go: what the broker, ``$SYS`` stats and the API use of ``Router``.

    ``targets`` is on the message path (once per PUBLISH); its lists belong to the
    table and are never mutated by the caller.
    """

    #: Shared-group members among the subscriptions.
    shared: int

    @property
    def routes(self) -> int:
        """Distinct plain filters in use (read-only)."""

    def __len__(self) -> int: ...

    def add(self, sub: Subscription) -> Subscription | None:
        """Install ``sub``; the subscription it replaced (same client id and filter)."""

    def remove(self, client_id: str, topic_filter: str) -> Subscription | None: ...

    def targets(self, topic: str) -> Targets:
        """One target per client, the shared groups, every matching plain subscription."""

    def match(self, topic: str) -> MatchResult: ...

    def has_route(self, plain_filter: str) -> bool: ...

    def route_filters(self) -> list[str]: ...

    def filters(self) -> Iterator[Subscription]: ...


class Forwarding(Protocol):
    """A cluster node's outbox (``cluster/outbox.py``) as ``Broker.publish`` puts into it:
    core does not import cluster, whose outbox is compiled beside it."""

    #: (message, node) pairs waiting; past ``high`` publishers may be paused.
    messages: int
    high: int

    def put(self, msg: Message, nodes: tuple[str, ...]) -> None: ...


class ListenerInfo(Protocol):
    """The node's MQTT listeners as the core's alarms and the API read them.

    ``describe`` gives one dict per listener in EMQX 4's ``/listeners`` shape
    (``identifier``, ``current_conns``, ``max_conns``, ...). The transport's
    ``ListenerManager`` is one; the core never imports the transport.
    """

    def describe(self) -> list[dict[str, Any]]: ...
