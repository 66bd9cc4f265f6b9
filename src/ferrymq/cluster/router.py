"""The local ``Router`` of a clustered node: it also says when a filter gains its first
local non-shared subscriber and loses its last, which is when the node's cluster route
changes, when one joins a filter that has others (its SUBACK may wait for their route),
and how many members each local shared group has after every change.

Routes are per plain filter for non-shared subscriptions, as EMQX's are: the
other nodes forward a message here when any of them may want it, and the
local router decides who gets it. A shared group is not a plain route: its
member count per node goes to ``cluster/shared.py``, so that a message is
given to one member cluster-wide, on the node its publisher's node picks.
"""

from __future__ import annotations

from collections.abc import Callable

from ferrymq.cluster.shared import group_key
from ferrymq.core.router import Router
from ferrymq.model.subscription import Subscription


class ClusterRouter(Router):
    """``Router`` plus ``on_first(filter)`` / ``on_join(filter)`` / ``on_last(filter)``
    and ``on_share(group key, members)`` calls."""

    __slots__ = ("on_first", "on_join", "on_last", "on_share")

    def __init__(
        self,
        shared_strategy: str,
        on_first: Callable[[str], None],
        on_last: Callable[[str], None],
        on_share: Callable[[str, int], None],
        on_join: Callable[[str], None] = lambda _filter: None,
    ) -> None:
        super().__init__(shared_strategy)
        self.on_first = on_first
        self.on_join = on_join
        self.on_last = on_last
        self.on_share = on_share

    def add(self, sub: Subscription) -> Subscription | None:
        group = sub.share_group
        if group is not None:
            old = super().add(sub)
            if old is None:
                self.on_share(group_key(group, sub.filter), self.members(group, sub.filter))
            return old
        first = not self.has_plain(sub.filter)
        old = super().add(sub)
        if first:
            self.on_first(sub.filter)
        elif old is None:
            self.on_join(sub.filter)
        return old

    def remove(self, client_id: str, topic_filter: str) -> Subscription | None:
        old = super().remove(client_id, topic_filter)
        if old is None:
            return None
        group = old.share_group
        if group is not None:
            self.on_share(group_key(group, old.filter), self.members(group, old.filter))
        elif not self.has_plain(old.filter):
            self.on_last(old.filter)
        return old

    def has_plain(self, plain_filter: str) -> bool:
        """Whether a non-shared subscription uses exactly this filter."""
        route = self._routes.get(plain_filter)
        return route is not None and bool(route.subs)

    def members(self, group: str, plain_filter: str) -> int:
        """The local members of the shared group ``group`` on ``plain_filter``."""
        route = self._routes.get(plain_filter)
        found = None if route is None or not route.groups else route.groups.get(group)
        return 0 if found is None else len(found)
