"""SUBACKs held until every live node has applied the route changes they follow.

A SUBSCRIBE that gives this node a route it did not have (a filter's first
local subscriber, a shared group's first local member) changes the node's
route set; its SUBACK leaves once the batched route write holding that
change has been executed by Redis *and* every other live node has applied
the change-stream entry that write added, so a client that publishes on
any node after the SUBACK finds the route there, however far behind that
node's loop was. Each node, after applying a batch of entries holding
route changes of others, appends one ``applied`` entry (its name, the last
entry id it applied) to the same change stream; the waiting node reads it
with everything else it tails (no polling, no extra connection). A node
that is down, or joins later, takes a snapshot at its resync and is not
waited for. A SUBACK is never held for long: it leaves after ``bound``
seconds whatever Redis or the others do (counted in
``cluster.suback.bound``), at once when the node is not connected, and on an
outage every held one leaves.

Rules kept here:
- route changes are numbered (``serial``); a held SUBACK waits for the write
  that took in its number (``flushed``), then for the live nodes to report
  that write's entry id (or a later one) applied;
- one client's SUBACKs leave in the order of its SUBSCRIBEs: one made while
  an earlier one of the same client waits, waits behind it, route or not;
- a SUBSCRIBE that adds no route but uses one another subscriber added less
  than ``bound`` seconds ago, not yet known to be on every live node
  (``joined``), waits too, behind the SUBACKs held for it: so does a second
  member of a shared group whose first member's count is still on its way;
- numbers, entry ids and deadlines only grow along the queue, so what leaves
  is always its head: one timer, for the head's deadline.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable

log = logging.getLogger(__name__)

#: Longest a SUBACK waits for its route to reach every node.
SUBACK_BOUND = 1.0

#: A change-stream entry id, comparable: (milliseconds, sequence).
EntryId = tuple[int, int]

_NOTHING: EntryId = (0, 0)


def entry_id(raw: str | bytes) -> EntryId:
    """``b"1700000000000-3"`` as (1700000000000, 3)."""
    text = raw.decode() if isinstance(raw, bytes) else raw
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)


class _Held:
    """One held SUBACK."""

    __slots__ = ("client", "deadline", "done", "entry", "serial")

    def __init__(
        self, serial: int, deadline: float, client: object, done: Callable[[], None]
    ) -> None:
        self.serial = serial  # the route change it waits for
        self.deadline = deadline
        self.client = client
        self.done = done  # sends it
        self.entry: EntryId | None = None  # the entry the others must apply (once written)


class SubackGate:
    """The held SUBACKs of one node, in order."""

    __slots__ = (
        "_applied",
        "_assigned",
        "_clients",
        "_last_entry",
        "_queue",
        "_recent",
        "_recent_order",
        "_settled",
        "_timer",
        "_wanted",
        "bound",
        "flushed",
        "live",
        "metrics",
        "serial",
    )

    def __init__(self, bound: float = SUBACK_BOUND) -> None:
        self.bound = bound
        self.serial = 0  # route changes made so far
        self.flushed = 0  # route changes Redis has
        #: Where ``cluster.suback.bound`` (SUBACKs that left on the bound) is counted.
        self.metrics: dict[str, int] = {"cluster.suback.bound": 0}
        self.live: set[str] = set()  # the other nodes waited for
        self._applied: dict[str, EntryId] = {}  # node -> last entry it reported applied
        self._last_entry: EntryId | None = None  # the entry of the latest write
        self._queue: deque[_Held] = deque()
        self._assigned = 0  # the queue's first items whose write is done
        self._clients: dict[object, int] = {}  # client -> its SUBACKs held
        self._timer: asyncio.TimerHandle | None = None
        #: Routes added lately (route or group key -> its change's number), and in the
        #: order they were added with their deadlines, to forget them after ``bound``.
        self._recent: dict[str, int] = {}
        self._recent_order: deque[tuple[float, str, int]] = deque()
        self._settled = 0  # every change up to this number is on every live node
        self._wanted = False  # the SUBSCRIBE under way uses a route still on its way

    def __len__(self) -> int:
        return len(self._queue)

    def changed(self, route: str | None = None) -> None:
        """A route change that a SUBACK must wait for was made (adding ``route``: a
        filter or a shared group's key, which later subscribers may wait for too)."""
        self.serial += 1
        if route is not None:
            now = time.monotonic()
            self._forget(now)
            self._recent[route] = self.serial
            self._recent_order.append((now + self.bound, route, self.serial))

    def joined(self, route: str) -> None:
        """A SUBSCRIBE uses ``route``, which it did not add: if another subscriber added
        it lately and it may not be on every node yet, the SUBACK ``hold`` is asked for
        next waits for it."""
        serial = self._recent.get(route)
        if serial is not None and serial > self._settled:
            self._forget(time.monotonic())
            self._wanted = route in self._recent

    def _forget(self, now: float) -> None:
        """Routes added more than ``bound`` ago: their SUBACKs have left, so no later
        SUBACK waits for them."""
        order, recent = self._recent_order, self._recent
        while order and order[0][0] <= now:
            _, route, serial = order.popleft()
            if recent.get(route) == serial:
                del recent[route]

    def hold(self, client: object, done: Callable[[], None]) -> bool:
        """Hold ``done`` (the SUBACK of ``client``) until the changes made so far are on
        every live node; False when nothing needs waiting for (call it now)."""
        wanted, self._wanted = self._wanted, False
        if self.serial <= self.flushed and client not in self._clients and not wanted:
            return False
        loop = asyncio.get_running_loop()
        held = _Held(self.serial, loop.time() + self.bound, client, done)
        if held.serial <= self.flushed and self._assigned == len(self._queue):
            held.entry = self._last_entry
            self._assigned += 1
        self._queue.append(held)
        self._clients[client] = self._clients.get(client, 0) + 1
        if self._timer is None:
            self._timer = loop.call_at(self._queue[0].deadline, self._expired)
        return True

    def written(self, serial: int, entry: EntryId | None = None) -> None:
        """The route changes up to ``serial`` are in Redis, in change-stream entry
        ``entry`` (None: nothing was written, nothing for the others to apply)."""
        if serial > self.flushed:
            self.flushed = serial
        self._last_entry = entry
        queue = self._queue
        while self._assigned < len(queue) and queue[self._assigned].serial <= serial:
            queue[self._assigned].entry = entry
            self._assigned += 1
        self._release(self._ready)

    def applied(self, node: str, entry: EntryId) -> None:
        """``node`` has applied the change stream up to ``entry`` (so it is live: a node
        that joined since the last membership read is waited for from now on)."""
        self.live.add(node)
        if entry > self._applied.get(node, _NOTHING):
            self._applied[node] = entry
            if self._queue:
                self._release(self._ready)

    def set_live(self, nodes: Iterable[str]) -> None:
        """The other nodes whose heartbeat is current: the ones a SUBACK waits for."""
        live = set(nodes)
        if live != self.live:
            self.live = live
            for gone in self._applied.keys() - live:
                del self._applied[gone]
            if self._queue:
                self._release(self._ready)

    def release_all(self) -> None:
        """The connection to Redis is lost: nothing is held any longer."""
        self.flushed = self.serial
        self._assigned = len(self._queue)
        self._settled = self.serial
        self._recent.clear()
        self._recent_order.clear()
        self._release(lambda _head: True)

    def _ready(self, head: _Held) -> bool:
        if self._assigned == 0:
            return False  # its write has not returned yet
        entry = head.entry
        applied = self._applied
        if entry is None or all(applied.get(node, _NOTHING) >= entry for node in self.live):
            if head.serial > self._settled:
                self._settled = head.serial
            return True
        return False

    def _expired(self) -> None:
        self._timer = None
        now = asyncio.get_running_loop().time()
        left = len(self._queue)
        self._release(lambda head: head.deadline <= now)
        left -= len(self._queue)
        if left:
            self.metrics["cluster.suback.bound"] += left
            log.debug("cluster: %d SUBACKs left on the %.1f s bound", left, self.bound)

    def _release(self, due: Callable[[_Held], bool]) -> None:
        queue, clients = self._queue, self._clients
        while queue and due(queue[0]):
            held = queue.popleft()
            if self._assigned:
                self._assigned -= 1
            client = held.client
            left = clients[client] - 1
            if left:
                clients[client] = left
            else:
                del clients[client]
            held.done()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if queue:
            self._timer = asyncio.get_running_loop().call_at(queue[0].deadline, self._expired)
