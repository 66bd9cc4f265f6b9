"""SUBACKs held until the route changes they follow are in Redis.

A SUBSCRIBE that gives this node a route it did not have (a filter's first
local subscriber, a shared group's first local member) changes the node's
route set; its SUBACK leaves once the batched route write holding that
change has been executed by Redis, so a client that publishes on another
node after the SUBACK finds the route there (the others read the same
change-stream entry that write added). A SUBACK is never held for long: it
leaves after ``bound`` seconds whatever Redis does, at once when the node is
not connected, and on an outage every held one leaves.

Rules kept here:
- route changes are numbered (``serial``); a held SUBACK waits for the write
  that took in its number (``flushed``);
- one client's SUBACKs leave in the order of its SUBSCRIBEs: one made while
  an earlier one of the same client waits, waits behind it, route or not;
- numbers and deadlines only grow along the queue, so what leaves is always
  its head: one timer, for the head's deadline.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable

#: Longest a SUBACK waits for its route to reach Redis.
SUBACK_BOUND = 1.0

#: One held SUBACK: (route change it waits for, deadline, client, send it).
_Held = tuple[int, float, object, Callable[[], None]]


class SubackGate:
    """The held SUBACKs of one node, in order."""

    __slots__ = ("_clients", "_queue", "_timer", "bound", "flushed", "serial")

    def __init__(self, bound: float = SUBACK_BOUND) -> None:
        self.bound = bound
        self.serial = 0  # route changes made so far
        self.flushed = 0  # route changes Redis has
        self._queue: deque[_Held] = deque()
        self._clients: dict[object, int] = {}  # client -> its SUBACKs held
        self._timer: asyncio.TimerHandle | None = None

    def __len__(self) -> int:
        return len(self._queue)

    def changed(self) -> None:
        """A route change that a SUBACK must wait for was made."""
        self.serial += 1

    def hold(self, client: object, done: Callable[[], None]) -> bool:
        """Hold ``done`` (the SUBACK of ``client``) until the changes made so far are in
        Redis; False when nothing needs waiting for (call it now)."""
        if self.serial <= self.flushed and client not in self._clients:
            return False
        loop = asyncio.get_running_loop()
        self._queue.append((self.serial, loop.time() + self.bound, client, done))
        self._clients[client] = self._clients.get(client, 0) + 1
        if self._timer is None:
            self._timer = loop.call_at(self._queue[0][1], self._expired)
        return True

    def written(self, serial: int) -> None:
        """The route changes up to ``serial`` are in Redis."""
        if serial > self.flushed:
            self.flushed = serial
        self._release(lambda head: head[0] <= self.flushed)

    def release_all(self) -> None:
        """The connection to Redis is lost: nothing is held any longer."""
        self.flushed = self.serial
        self._release(lambda _head: True)

    def _expired(self) -> None:
        self._timer = None
        now = asyncio.get_running_loop().time()
        self._release(lambda head: head[1] <= now)

    def _release(self, due: Callable[[_Held], bool]) -> None:
        queue, clients = self._queue, self._clients
        while queue and due(queue[0]):
            _serial, _deadline, client, done = queue.popleft()
            left = clients[client] - 1
            if left:
                clients[client] = left
            else:
                del clients[client]
            done()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if queue:
            self._timer = asyncio.get_running_loop().call_at(queue[0][1], self._expired)
