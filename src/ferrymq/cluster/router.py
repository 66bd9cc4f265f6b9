"""The local ``Router`` of a clustered node: it also says when a filter gains its first
local subscriber and loses its last, which is when the node's cluster route changes.

Routes are per plain filter (``$share/g/a/b`` routes as ``a/b``), as EMQX's
are: the other nodes forward a message here when any local subscription,
shared or not, may want it, and the local router decides who gets it.
"""

from __future__ import annotations

from collections.abc import Callable

from ferrymq.core.router import Router
from ferrymq.model.subscription import Subscription


class ClusterRouter(Router):
    """``Router`` plus ``on_first(filter)`` / ``on_last(filter)`` calls."""

    __slots__ = ("on_first", "on_last")

    def __init__(
        self,
        shared_strategy: str,
        on_first: Callable[[str], None],
        on_last: Callable[[str], None],
    ) -> None:
        super().__init__(shared_strategy)
        self.on_first = on_first
        self.on_last = on_last

    def add(self, sub: Subscription) -> Subscription | None:
        first = not self.has_route(sub.filter)
        old = super().add(sub)
        if first:
            self.on_first(sub.filter)
        return old

    def remove(self, client_id: str, topic_filter: str) -> Subscription | None:
        old = super().remove(client_id, topic_filter)
        if old is not None and not self.has_route(old.filter):
            self.on_last(old.filter)
        return old
