"""Back-pressure between nodes: a receiving node reads no faster than it dispatches, and
the nodes sending to it feel when it falls behind.

Rules kept here (the bounds, and why each has its size, are in docs/cluster.md, "The
message path and its acknowledgements"):
- QoS 1/2, receiving (``DispatchGate``): the stream reader stops dispatching a batch at
  the message that brought a local online subscriber's session queue to ``high`` (half of
  ``max_mqueue_len``) and goes on once every such queue is down to ``low`` (a quarter),
  so a cross-node message never pushes another out of a queue; the unread entries stay
  in the node's stream in Redis. A subscriber whose queue has not got shorter for
  ``STALL`` seconds stops holding the reader (until its queue drains to ``low``): one
  client that stopped reading must not stop a node's whole QoS 1/2 inbox;
- QoS 1/2, sending (``Destinations``): the length of a destination's stream is read with
  the sends to it (at most every ``CHECK_EVERY`` seconds per node); from ``INBOX_HIGH``
  entries the node is full, and the PUBACKs / PUBRECs of this node's forwarded messages
  wait until every full destination is down to ``INBOX_LOW`` (read every
  ``CHECK_EVERY`` meanwhile) or is down: its publishers' inflight windows then stop them;
- QoS 0, receiving (``Backlog0``): the pub/sub connection is read as soon as bytes
  arrive; what the node has not dispatched yet waits here, at most ``BACKLOG0_BYTES``,
  the oldest batches dropped past it and counted (``cluster.dropped.queue_full``), as a
  slow subscriber's own queue drops. From ``BEHIND0_HIGH`` bytes held the node says it
  is behind (a key expiring ``BEHIND0_TTL`` after it was last set, set again while it
  stays behind), down to ``BEHIND0_LOW``;
- QoS 0, sending (``Destinations.behind``): whether a destination says it is behind is
  read with the sends to it (at most every ``CHECK_EVERY``); meanwhile the publishers
  whose QoS 0 messages go to it are paused (``core/flow.py``, each behind node its own
  ``outbox.Backlog``), until it is no longer behind, goes down, its key expires (it died)
  or Redis is gone; ``Flow``'s own bound (a second) applies too. Nothing else waits: the
  node's other publishers and its local deliveries go on.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from ferrymq.cluster.codec import count_frames
from ferrymq.cluster.outbox import Backlog

if TYPE_CHECKING:
    from ferrymq.core.router import Targets
    from ferrymq.core.session import Session

#: Seconds an inbox reader dispatches before the loop's other work (other inboxes, the
#: clients) runs: short against the latency it adds, long against one turn of the loop.
SLICE = 0.005
#: The QoS 0 inbox's slice. Its reader gets one socket read (at most 256 KiB) per turn of
#: the loop, so the slice bounds how fast it drains the pub/sub connection: about 50 MB/s
#: at 5 ms, which a sender's burst can pass, and Redis then closes the connection once its
#: output buffer passes ``client-output-buffer-limit pubsub`` (the back-pressure test's
#: flood, at 4 MB: in 2 of 6 runs at 5 ms, in none of 12 at 1 ms). 1 ms costs a loop turn
#: more per millisecond of dispatch.
SLICE0 = 0.001
#: Messages an inbox reader dispatches between two looks at the clock and at the queues.
LOOK_EVERY = 16
#: Seconds a subscriber's queue may stay as long as it was before it stops holding the
#: QoS 1/2 reader: as long as the standalone broker pauses a publisher for one.
STALL = 1.0
#: Seconds between two looks at whether the queues the reader waits for have drained.
DISPATCH_POLL = 0.005
#: Entries of a node's QoS 1/2 stream from which the nodes sending to it hold their
#: publishers' acknowledgements, and down to which they hold them.
INBOX_HIGH = 1_000
INBOX_LOW = 500
#: Seconds between two reads of a destination's stream length.
CHECK_EVERY = 0.01
#: Bytes of QoS 0 batches read and not yet dispatched, past which the oldest are dropped:
#: room for what the senders still send after the node said it is behind. A sender
#: learns it with its next send and pauses its publishers in the loop turn after; under
#: load one turn's batch is 3-6 MB (20 publishers' reads), and at 4 MiB one such batch
#: past the mark already dropped the one before it.
BACKLOG0_BYTES = 16 << 20
#: Bytes of that backlog (with the batch being dispatched) from which a node says it is
#: behind, and down to which it says so once that batch is done.
BEHIND0_HIGH = 2 << 20
BEHIND0_LOW = 1 << 20
#: Seconds a node's "behind" key lives after it was last set (set again every quarter of
#: it while the node stays behind): a node that died pauses no one for longer.
BEHIND0_TTL = 0.5

#: Dispatches messages from an index until a ``time.monotonic`` time (or a full local
#: queue): the index it reached (``ClusterBroker.dispatch_remote``).
Dispatch = Callable[[list[Any], Any, int, float], int]


async def dispatch_sliced(
    dispatch: Dispatch,
    messages: list[Any],
    served: Any,
    until: float,
    gate: DispatchGate | None = None,
    slice_s: float = SLICE,
) -> float:
    """Dispatch all of one batch, ``slice_s`` seconds at a time, letting the loop's other
    work run between slices, and every ``DISPATCH_POLL`` while ``gate`` (the one
    ``dispatch`` consults) waits for full queues; the end of the slice under way after it."""
    clock = time.monotonic
    done = dispatch(messages, served, 0, until)
    while done < len(messages):
        await asyncio.sleep(DISPATCH_POLL if gate else 0)
        until = clock() + slice_s
        done = dispatch(messages, served, done, until)
    if clock() >= until:
        await asyncio.sleep(0)
        until = clock() + slice_s
    return until


class DispatchGate:
    """The local subscribers the QoS 1/2 inbox reader waits for."""

    __slots__ = ("_stalled", "_waiting", "every", "high", "low")

    def __init__(self, max_mqueue_len: int) -> None:
        # The reader looks every few messages (``ClusterBroker.dispatch_remote``), so a
        # queue may pass ``high`` by that many: half the queue stays free for them and for
        # what the node's own publishers add.
        self.high = max(1, max_mqueue_len // 2)
        self.low = max_mqueue_len // 4
        #: Messages dispatched between two looks: at most half the room left above ``high``.
        self.every = max(1, min(LOOK_EVERY, (max_mqueue_len - self.high) // 2))
        #: Waited for: session -> (its queue's length when last shorter, since when).
        self._waiting: dict[Session, tuple[int, float]] = {}
        self._stalled: set[Session] = set()  # not waited for until they drain to ``low``

    def __bool__(self) -> bool:
        return bool(self._waiting)

    def check(self, topics: list[str], targets: Callable[[str], Targets], now: float) -> bool:
        """Whether the session of a subscriber of one of ``topics`` (just dispatched; the
        list is emptied) is full: the reader then stops before the next message.
        ``targets`` is the router's look-up."""
        high = self.high
        waiting = self._waiting
        for topic in set(topics):
            for target in targets(topic).per_client:
                session: Session = target.session  # type: ignore[assignment]
                if session.client is None or session in waiting:
                    continue
                queued = len(session.queue)
                if queued < high:
                    continue
                stalled = self._stalled
                if session in stalled:
                    if queued > self.low:
                        continue
                    stalled.discard(session)
                waiting[session] = (queued, now)
        topics.clear()
        return bool(waiting)

    def ready(self, now: float) -> bool:
        """Whether the reader may go on: every queue it waited for drained to ``low``, or
        its client left, or it stalled (no shorter for ``STALL`` seconds)."""
        waiting = self._waiting
        low = self.low
        for session, (queued, since) in list(waiting.items()):
            length = len(session.queue)
            if session.client is None or length <= low:
                del waiting[session]
            elif length < queued:
                waiting[session] = (length, now)
            elif now - since >= STALL:
                del waiting[session]
                self._stalled.add(session)
        if self._stalled:
            self._stalled = {s for s in self._stalled if s.client is not None}
        return not waiting


class Destinations:
    """What a sending node knows of its destinations' QoS 1/2 streams, and of whether
    they are behind with their QoS 0 inbox."""

    __slots__ = ("_checked", "_checked0", "behind", "full", "release")

    def __init__(self) -> None:
        #: Nodes whose stream was at ``INBOX_HIGH`` and has not been down to ``INBOX_LOW``.
        self.full: set[str] = set()
        self._checked: dict[str, float] = {}  # node -> when its length was last read
        #: Nodes that said they are behind -> the publishers paused for them.
        self.behind: dict[str, Backlog] = {}
        self._checked0: dict[str, float] = {}  # node -> when its QoS 0 flag was last read
        #: Resumes the publishers of a ``Backlog`` (``Flow.release_publishers``).
        self.release: Callable[[Backlog], None] = _release_none

    def to_check(self, nodes: Iterable[str], now: float) -> list[str]:
        """Of ``nodes`` (a send's QoS 1/2 destinations), those whose length to read with it."""
        checked = self._checked
        due = [n for n in nodes if now - checked.get(n, 0.0) >= CHECK_EVERY or n in self.full]
        for node in due:
            checked[node] = now
        return due

    def measured(self, node: str, length: int) -> None:
        """``node``'s stream holds ``length`` entries."""
        if length >= INBOX_HIGH:
            self.full.add(node)
        elif length <= INBOX_LOW:
            self.full.discard(node)

    def to_check0(self, nodes: Iterable[str], now: float) -> list[str]:
        """Of ``nodes`` (a send's QoS 0 destinations), those whose flag to read with it."""
        checked = self._checked0
        due = [n for n in nodes if now - checked.get(n, 0.0) >= CHECK_EVERY]
        for node in due:
            checked[node] = now
        return due

    def said(self, node: str, behind: bool) -> None:
        """``node`` is (or is no longer) behind with its QoS 0 inbox."""
        if behind:
            if node not in self.behind:
                self.behind[node] = Backlog()
        else:
            held = self.behind.pop(node, None)
            if held is not None:
                self.release(held)

    def forget(self, node: str) -> None:
        """``node`` is down (or left): nothing waits for it."""
        self.full.discard(node)
        self._checked.pop(node, None)
        self._checked0.pop(node, None)
        self.said(node, False)

    def clear(self) -> None:
        """Redis is out of reach: acknowledgements and publishers wait for nothing."""
        self.full.clear()
        self._checked.clear()
        self._checked0.clear()
        for node in list(self.behind):
            self.said(node, False)


def _release_none(_held: Backlog) -> None:
    """``Destinations.release`` until a broker is attached: no publisher to resume."""


class Backlog0:
    """QoS 0 batches read from the pub/sub connection and not yet dispatched, bounded;
    ``say(True)`` once it holds ``high`` bytes (with the batch being dispatched: under
    load one batch is what the sender took in a turn, megabytes), ``say(False)`` once
    that batch is done and the rest is back to ``low``."""

    __slots__ = ("_batches", "behind", "dispatching", "high", "limit", "low", "say", "size")

    def __init__(
        self,
        limit: int = BACKLOG0_BYTES,
        say: Callable[[bool], None] | None = None,
        high: int = BEHIND0_HIGH,
        low: int = BEHIND0_LOW,
    ) -> None:
        self._batches: deque[bytes] = deque()
        self.size = 0  # bytes held
        self.limit = limit
        self.say = say
        self.high, self.low = high, low
        self.behind = False
        self.dispatching = 0  # bytes of the batch taken and not yet dispatched (``done``)

    def __bool__(self) -> bool:
        return bool(self._batches)

    def put(self, batch: bytes) -> int:
        """Keep ``batch``; the messages dropped to make room for it (the oldest first)."""
        batches = self._batches
        batches.append(batch)
        self.size += len(batch)
        if self.size + self.dispatching >= self.high and not self.behind:
            self._say(True)
        dropped = 0
        while self.size > self.limit and len(batches) > 1:
            old = batches.popleft()
            self.size -= len(old)
            dropped += count_frames(old)
        return dropped

    def take(self) -> bytes:
        """The oldest batch, to dispatch (then ``done``)."""
        batch = self._batches.popleft()
        self.size -= len(batch)
        self.dispatching = len(batch)
        return batch

    def done(self) -> None:
        """The batch last taken is dispatched."""
        self.dispatching = 0
        if self.behind and self.size <= self.low:
            self._say(False)

    def clear(self) -> int:
        """Forget every batch held (the connection is gone); the messages they held."""
        dropped = sum(count_frames(batch) for batch in self._batches)
        self._batches.clear()
        self.size = self.dispatching = 0
        if self.behind:
            self._say(False)
        return dropped

    def _say(self, behind: bool) -> None:
        self.behind = behind
        if self.say is not None:
            self.say(behind)
