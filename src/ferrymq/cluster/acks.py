"""PUBACKs and PUBRECs held until what they confirm is in Redis (and in the store).

A QoS 1/2 message that a clustered node forwards to other nodes is in no
one's hands but this node's until the ``XADD`` of the batch carrying it has
returned: a node killed in between would lose a message its publisher saw
acknowledged. So its PUBACK / PUBREC waits for that send (numbered by
``Outbox.sends``); with ``durability = "acked"`` an acknowledgement also
waits for the store batch holding what it confirms, as on a standalone node.

Rules kept here:
- a hold is a ticket naming the store batch and the send it needs (0: none);
  one that needs nothing already done gets no ticket (its acknowledgement
  leaves at once);
- tickets leave in the order they were given, so a client's acknowledgements
  keep their order (``Client.release_acks`` takes every group up to a ticket);
- consecutive holds with the same needs share one ticket: the acknowledgements
  of one event-loop turn wait for one send;
- on an outage every send counts as done (``forwarded`` with the last
  number): what waited only for Redis leaves, the broker keeps serving its
  clients, and what did not reach Redis is counted in
  ``cluster.forward.paused``; a store batch is still waited for.
"""

from __future__ import annotations

from collections import deque

#: One held group: (ticket, store batch it needs, send it needs).
_Held = tuple[int, int, int]


class AckGate:
    """The tickets of one node's held acknowledgements, in order."""

    __slots__ = ("_queue", "sent", "stored", "ticket")

    def __init__(self) -> None:
        self.ticket = 0  # tickets given so far
        self.stored = 0  # store batches committed
        self.sent = 0  # forwarding sends Redis has executed
        self._queue: deque[_Held] = deque()

    def __len__(self) -> int:
        return len(self._queue)

    def hold(self, batch: int, send: int) -> int:
        """The ticket an acknowledgement waits for: store ``batch`` committed and forwarding
        send ``send`` executed; 0 when both are done already (send it now)."""
        if batch <= self.stored and send <= self.sent:
            return 0
        queue = self._queue
        if queue:
            last = queue[-1]
            if last[1] == batch and last[2] == send:
                return last[0]
        self.ticket += 1
        queue.append((self.ticket, batch, send))
        return self.ticket

    def committed(self, batch: int) -> int:
        """Store batch ``batch`` (and every one before it) committed: the last ticket that
        may leave now (0: none)."""
        if batch > self.stored:
            self.stored = batch
        return self._due()

    def forwarded(self, send: int) -> int:
        """Forwarding send ``send`` (and every one before it) is in Redis, or given up: the
        last ticket that may leave now (0: none)."""
        if send > self.sent:
            self.sent = send
        return self._due()

    def _due(self) -> int:
        queue = self._queue
        stored, sent = self.stored, self.sent
        due = 0
        while queue and queue[0][1] <= stored and queue[0][2] <= sent:
            due = queue.popleft()[0]
        return due
