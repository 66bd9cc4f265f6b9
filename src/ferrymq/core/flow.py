"""Back-pressure, in one place: when bytes are written, and when publishers are slowed.

Rules kept here:
- outgoing bytes are written once per event-loop iteration: a connection with
  something to send marks itself dirty (``mark_dirty``) and one callback flushes
  every dirty connection at the end of the iteration; while the broker keeps up
  (``write_at_once``: CPU to spare at the last load probe, and few sockets ready
  at the last poll) every read's writes leave right after it instead, so a
  message does not wait for the other reads of the same poll (the latency tail
  at moderate rates);
- a slow subscriber costs only itself: while its socket is backed up
  (``pause_writing``) its deliveries wait in its own bounded session queue;
- publishers are slowed (TCP back-pressure: their reading is paused) only while
  the broker as a whole is short of CPU (``saturated``): then a publisher
  feeding a backed-up subscriber (socket paused, or its queue at ``queue_high``:
  one inflight window while the broker's own CPU is the limit, half the queue
  limit otherwise) waits until that subscriber drains (socket writable and queue
  at most ``queue_low``): its reading is paused, and once that subscriber's queue
  is half full the rest of the read being routed is held too
  (``ServerConnection.on_hold``) and routed first when it resumes, so one large
  read cannot overflow a queue; for at most ``_MAX_PAUSE`` seconds, after which the
  subscriber is marked ``slow`` and only queues and drops; every pause ends as
  soon as the broker has CPU to spare again, except one for a target whose shortage
  is not this broker's CPU (``block(..., elsewhere=True)``: another node behind, in
  cluster mode), which its owner ends, or ``_MAX_PAUSE`` does.

The per-connection state (``write_paused``, ``read_paused``, ``blocked``,
``paused_by``, ``paused_since``, ``slow``) lives in ``Client`` slots, where the
message path reads it without a call; only this module changes it (and the
connection's own ``pause_writing`` sets ``write_paused``).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from ferrymq.core.client import Client

_MAX_PAUSE = 1.0
# A read that brings INPUT_BACKLOG packets or more pins the connection's kernel receive
# buffer (SO_RCVBUF) to _INPUT_BUFFER: Linux doubles it to 128 KiB, the size it gives a
# new connection; much smaller would throttle the publisher to a few segments per round
# trip even when the broker has caught up.
INPUT_BACKLOG = 1024
_INPUT_BUFFER = 64 * 1024
# Load probe, every _PROBE seconds. A process that spent _BUSY or more of the last
# interval on the CPU counts as saturated for the next _HOLD seconds, and as CPU-bound
# (the tight queue thresholds) once it has been so busy for _SUSTAINED seconds on end:
# a catch-up burst after a stall is not an overload. An event loop
# running more than _LAG_HIGH behind the probe is saturated at once (one long
# iteration: a burst from many publishers, or a process starved of CPU by others)
# and for _LAG_HOLD seconds after; long enough for backed-up subscribers to drain
# before their publishers are read again, short enough not to stall anyone.
_PROBE = 0.05
_BUSY = 0.85
_HOLD = 1.0
_SUSTAINED = 0.5
_LAG_HIGH = 0.05
_LAG_HOLD = 0.25
# A poll that finds at most FEW_READY sockets ready shows the broker keeping up with its
# input (see ``Flow.polled``). A few, not one: what adds to the tail at moderate rates
# is a message whose delivery waits while two or three other reads of the same poll
# are handled. A fan-in then costs at most this many writes where one would do.
FEW_READY = 4
_NEVER = float("inf")


class Holder(Protocol):
    """What publishers wait for: a backed-up subscriber (a ``Client``) or cluster mode's
    outbox (``cluster/outbox.py``), typed by what this module reads of it."""

    blocked: list[Client] | tuple[()]
    slow: bool


class Flow:
    """Write scheduling and publisher pauses of one broker."""

    def __init__(
        self, loop: asyncio.AbstractEventLoop, max_mqueue_len: int, max_inflight: int
    ) -> None:
        self.loop = loop
        self._dirty: list[Client] = []
        self._flush_scheduled = False
        #: Publishers whose reading is paused.
        self.paused: set[Client] = set()
        #: Targets short of something other than this broker's CPU (``block``).
        self._elsewhere: set[Holder] = set()
        # A subscriber whose queue reaches queue_high (QoS 1/2 messages wait for acks
        # there) pauses its publishers while the broker is saturated; at queue_low they
        # resume. While the broker's own CPU is the limit its throughput is set by it, so
        # a longer queue would add only waiting: one inflight window queued keeps the
        # subscriber busy while it acknowledges the last (``_tight``). When the broker
        # counts as saturated only because its loop lags (starved of CPU by others, or
        # one long iteration), half the queue limit (``_loose``) lets a subscriber's own
        # short stall be absorbed by its queue rather than pause everyone's publishers.
        high = max(1, min(max_mqueue_len // 2, max_inflight))
        self._tight = (high, high // 2)
        self._loose = (max(1, max_mqueue_len // 2), max_mqueue_len // 4)
        self.queue_high, self.queue_low = self._loose
        self._hold_at = max(1, max_mqueue_len // 2)
        self._cpu_bound_until = 0.0
        self._busy_since = _NEVER  # start of the current run of busy probe intervals
        self._load_probe: asyncio.TimerHandle | None = None
        self._probe_due = float("inf")
        self._busy_until = 0.0
        #: The broker keeps up: a read's writes are flushed right after it
        #: (``Client.data_received``), not at the end of the iteration. Under load the
        #: end-of-iteration flush saves system calls (one write per connection however
        #: many reads fed it); while the broker keeps up a write per read costs no more
        #: than CPU that is idle anyway. Set from ``_spare`` (not saturated at the last
        #: load probe) and the last poll's ready count (``polled``).
        self.write_at_once = True
        #: Inside a read whose writes leave right after it (``Client.data_received``
        #: while ``write_at_once``): the read flushes, so a write schedules nothing.
        self.in_read_flush = False
        self._spare = True
        self.cpu_mark = (time.monotonic(), time.process_time())

    # --- writing ------------------------------------------------------------

    def mark_dirty(self, client: Client) -> None:
        """``client`` has bytes to write: flush it at the end of this iteration, or at the
        end of the read being handled (``in_read_flush``), which needs no callback: at a
        moderate rate every read is an iteration of its own, and one per read found
        nothing left to flush."""
        self._dirty.append(client)
        if not self._flush_scheduled and not self.in_read_flush:
            self._flush_scheduled = True
            self.loop.call_soon(self.flush)

    def flush(self) -> None:
        self._flush_scheduled = False
        dirty = self._dirty
        if not dirty:
            return
        self._dirty = []
        for client in dirty:
            client.flush()

    def polled(self, ready: int) -> None:
        """A listener's poll found ``ready`` sockets with something to do (the transport
        of our own reports it once per poll; the event loop's transports do not). Many
        at once mean input is waiting for the broker, whatever the CPU probe says (a
        process starved of CPU by others looks idle to it): write once per iteration."""
        self.write_at_once = self._spare and ready <= FEW_READY

    # --- a publisher's socket -----------------------------------------------

    def bound_input(self, client: Client) -> None:
        """One read from ``client`` brought ``INPUT_BACKLOG`` packets or more: that many
        were waiting in the kernel for the broker to read them.

        Linux sizes a receive buffer for bytes per round trip; a broker that falls behind
        reads in large gulps, so autotuning grows it, to megabytes per connection, and
        under overload the messages of small packets wait there (20 publishers of 64-byte
        messages held 21 MB, 1.4 s of input). Pinned to Linux's initial size, the
        standing queue stays at the publisher, held back by TCP, and a message waits
        about as long as the broker needs to route what is ahead of it. Large packets
        never come this many to a read, so their connections keep the autotuned buffer
        sized for their bytes.
        """
        sock = client.transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):  # a socket already closed
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _INPUT_BUFFER)

    # --- a subscriber's socket ----------------------------------------------

    def pause_writing(self, client: Client) -> None:
        """The socket of ``client`` is backed up: deliveries queue in its session."""
        client.write_paused = True

    def resume_writing(self, client: Client) -> None:
        """The socket of ``client`` takes bytes again: drain its queue, and once it is
        short enough, resume the publishers it held up."""
        client.write_paused = False
        client.slow = False
        session = client.session
        if session is not None and session.client is client and session.queue:
            session.drain()
        if not client.write_paused and (session is None or len(session.queue) <= self.queue_low):
            self.release_publishers(client)

    def acked(self, client: Client, queued: int) -> None:
        """An acknowledgement freed a slot of ``client``, which holds up publishers
        (``client.blocked``) and has ``queued`` messages left in its session queue."""
        if queued <= self.queue_low:
            client.slow = False
            if not client.write_paused:
                self.release_publishers(client)

    # --- publishers -----------------------------------------------------------

    def block(
        self, origin: Client, target: Holder, queued: int = 0, elsewhere: bool = False
    ) -> None:
        """``origin`` published to the backed-up ``target`` while the broker is saturated
        (or, ``elsewhere``, while ``target`` is short of another process' CPU: spare CPU
        here does not end that pause): stop reading ``origin`` until ``target`` drains,
        and once the queue of ``target`` (``queued`` messages) is half full, or for a
        target elsewhere, stop routing the rest of the read that brought the message too."""
        if target.slow or target is origin:
            return
        if elsewhere:
            self._elsewhere.add(target)
        if queued >= self._hold_at or elsewhere:
            # One read (up to 1,700 small messages) could overflow the queue: the rest
            # waits unrouted. Only then, or for a target elsewhere (every publisher
            # resumed at once would bring it a read each): holding every pause would
            # make a fan-out go at the pace of its slowest subscriber's socket.
            origin.conn.on_hold = True
        if target in origin.paused_by:
            return
        if origin.paused_by:
            origin.paused_by.add(target)  # type: ignore[union-attr]
        else:
            origin.paused_by = {target}
        if target.blocked:
            target.blocked.append(origin)  # type: ignore[union-attr]
        else:
            target.blocked = [origin]
        if not origin.read_paused and not origin.closing:
            origin.read_paused = True
            origin.paused_since = time.monotonic()
            self.paused.add(origin)
            origin.transport.pause_reading()

    def release_publishers(self, target: Holder) -> None:
        """``target`` can take more again: resume the publishers it held up."""
        if self._elsewhere:
            self._elsewhere.discard(target)
        blocked = target.blocked
        if not blocked:
            return
        target.blocked = ()
        paused = self.paused
        for origin in blocked:
            origin.paused_by.discard(target)  # type: ignore[union-attr]  # a set: block made it
            if not origin.paused_by and origin.read_paused:
                origin.read_paused = False
                paused.discard(origin)
                if origin.closing:
                    continue
                if origin.conn.holding():
                    # Not from here: this may run inside another connection's handler.
                    self.loop.call_soon(origin.resume_input)
                else:
                    origin.conn.on_hold = False
                    origin.transport.resume_reading()

    def forget(self, client: Client) -> None:
        """Drop the pause relations of a closing connection."""
        self.release_publishers(client)
        for target in client.paused_by:
            if client in target.blocked:
                target.blocked.remove(client)  # type: ignore[union-attr]  # a list: block made it
        client.paused_by = frozenset()
        self.paused.discard(client)

    def tick(self, now: float) -> None:
        """Once a second: a publisher paused for ``_MAX_PAUSE`` is read again, and the
        subscribers it waited for are marked slow (they stop pausing anyone)."""
        if self.paused:
            for origin in list(self.paused):
                if now - origin.paused_since >= _MAX_PAUSE:
                    for target in list(origin.paused_by):
                        target.slow = True
                        self.release_publishers(target)

    # --- load -------------------------------------------------------------

    def saturated(self) -> bool:
        """Whether the broker as a whole is short of CPU, the one reason to slow publishers."""
        now = time.monotonic()
        return now < self._busy_until or now > self._probe_due + _LAG_HIGH

    def hold_saturated(self, seconds: float = _NEVER) -> None:
        """Count the broker as short of CPU for ``seconds`` from now, as a busy probe
        interval does for ``_HOLD``: the state under test without the load (``saturated``
        is a compiled method, not one to patch)."""
        self._busy_until = time.monotonic() + seconds
        self.write_at_once = self._spare = False

    def probe_load(self) -> None:
        """Sample CPU use and loop lag; reschedules itself every ``_PROBE`` seconds."""
        now = time.monotonic()
        cpu = time.process_time()
        then, cpu_then = self.cpu_mark
        self.cpu_mark = (now, cpu)
        if now > then and cpu - cpu_then >= _BUSY * (now - then):
            self._busy_until = max(self._busy_until, now + _HOLD)
            self._busy_since = min(self._busy_since, then)
            if now - self._busy_since >= _SUSTAINED:
                self._cpu_bound_until = self._busy_until
        else:
            self._busy_since = _NEVER
            if now > self._probe_due + _LAG_HIGH:
                self._busy_until = max(self._busy_until, now + _LAG_HOLD)
            elif self.paused and now >= self._busy_until:
                # CPU to spare again: whoever is still backed up only queues and drops.
                elsewhere = self._elsewhere
                for origin in list(self.paused):
                    for target in list(origin.paused_by):
                        if target not in elsewhere:
                            self.release_publishers(target)
        self.queue_high, self.queue_low = (
            self._tight if now < self._cpu_bound_until else self._loose
        )
        self.write_at_once = self._spare = now >= self._busy_until
        self._probe_due = now + _PROBE
        self._load_probe = self.loop.call_later(_PROBE, self.probe_load)

    def stop_probe(self) -> None:
        if self._load_probe is not None:
            self._load_probe.cancel()
            self._load_probe = None
            self._probe_due = float("inf")
