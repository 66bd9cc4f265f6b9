"""This node's side of the cluster: everything that talks to Redis.

Keys (all under ``ferrymq:``)::

    nodes                 hash  node -> its last heartbeat record (JSON)
    alive:{node}          string, expires 3 s after the last heartbeat (extended by
                          cluster/beat.py while the loop answers)
    route:{filter}        hash  node -> 1, one per plain filter in use somewhere
    route:$share/{g}/{f}  hash  node -> its members of the shared group (also $queue/{f})
    node-routes:{node}    set   of the node's filters and groups (for cleaning up after it)
    changes               stream: route changes, retained changes, nodes leaving, and
                          each node's "applied" reports (cluster/subacks.py)
    retained              hash  topic -> stored message (storage.codec)
    retained:cleared      hash  topic -> when it was cleared (cluster/retained.py)
    inbox0:{node}         pub/sub channel: QoS 0 batches for the node (cluster/inbox0.py)
    behind0:{node}        string, set (expiring) while the node's QoS 0 backlog is long
    inbox:{node}          stream (consumer group "ferrymq"): QoS 1/2 batches
    cleanup:{node}        lock held by the node that cleans up after a dead one
    rpc:{node}            pub/sub channel: requests between nodes (cluster/rpc.py)

Rules this module keeps:
- nothing here is on a standalone node's path, and nothing on the message
  path waits for Redis: ``forward`` appends to the outbox and wakes one sender
  task, which sends everything queued since its last send in one write on a
  pool connection it holds (one command per destination node and kind), up to
  ``SENDS_AHEAD`` sends ahead of their replies; the replies are read in order,
  and each releases the PUBACKs / PUBRECs that waited for its send
  (``cluster/acks.py``);
- route changes are written every few milliseconds in one transaction (the
  per-filter hashes, this node's set and one change-stream entry); the other
  nodes apply the entry to their replica and report it applied (op
  ``applied``, one entry per batch read that held route changes); a SUBACK
  that follows a new route leaves once every live node has reported that
  write's entry applied (``cluster/subacks.py``);
- a shared group's member count per node travels the same way (op
  ``share``), so every node knows which nodes have members of it
  (``cluster/shared.py``);
- a (re)connection starts with a full resync: inboxes subscribed first (so
  nothing sent to this node from then on is missed), then this node's whole
  route set replaces what Redis had for it, then the replica is rebuilt from
  a snapshot and the change stream is tailed from just before it;
- a QoS 1/2 batch is acknowledged (XACK) only after local dispatch, so batches
  a node had not dispatched when it stopped are dispatched when it returns;
  what the dispatch wrote of persistent sessions goes to Redis in the same
  script call as the acknowledgement (``settle``), so a batch is in the
  sessions and acknowledged, or neither, whenever the node dies;
- back-pressure (``cluster/pressure.py``): the QoS 1/2 inbox is read no faster than
  local subscribers' queues take it (``DispatchGate``), and a sender that finds a
  destination's stream at ``INBOX_HIGH`` holds its forwarded messages' PUBACKs / PUBRECs
  until it is back to ``INBOX_LOW``; the QoS 0 inbox is read at once, its backlog
  bounded (``Backlog0``); a node whose QoS 0 backlog is long says so (``behind0``),
  and a sender that reads it pauses the publishers whose QoS 0 messages go there;
- a node whose ``alive`` key expired is down: every node drops its routes at
  once, and the one that takes its cleanup lock removes them from Redis
  (atomically, unless the node came back meanwhile); a node that finds its
  own key had lapsed (its loop stalled past the TTL) announces its whole
  route set again, as the others have dropped it;
- Redis unreachable (or restarted, noticed by its run id): logged once, every
  node keeps serving its own clients, forwarding is paused and counted
  (``cluster.forward.paused``), retained changes made meanwhile are kept for
  the resync, and the connection is retried with backoff. Nothing raises out.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any

from redis import asyncio as aioredis
from redis.backoff import NoBackoff
from redis.exceptions import RedisError, ResponseError
from redis.retry import Retry

from ferrymq import __version__
from ferrymq.cluster.beat import KeepAlive
from ferrymq.cluster.codec import read_batch
from ferrymq.cluster.inbox0 import read_inbox0
from ferrymq.cluster.outbox import Outbox
from ferrymq.cluster.part import ClusterPart, StreamReply
from ferrymq.cluster.pressure import (
    BEHIND0_TTL,
    CHECK_EVERY,
    Destinations,
    DispatchGate,
)
from ferrymq.cluster.redis_url import client, close, parse, safe_url
from ferrymq.cluster.retained import CLEARED, Cleared, ms_of, sync_retained
from ferrymq.cluster.routes import PendingRoutes, RouteReplica
from ferrymq.cluster.rpc import Rpc
from ferrymq.cluster.shared import SharedRoutes, is_shared
from ferrymq.cluster.stream_inbox import (
    Owed,
    StreamCommands,
    read_inbox,
    replies_skippable,
    write_packed,
)
from ferrymq.cluster.subacks import SubackGate, entry_id
from ferrymq.core import system
from ferrymq.model.message import Message
from ferrymq.storage.codec import dump_message, load_message

if TYPE_CHECKING:
    from redis.typing import EncodableT, FieldT

    from ferrymq.cluster.broker import ClusterBroker

log = logging.getLogger("ferrymq.cluster")

P = "ferrymq:"
NODES = P + "nodes"
CHANGES = P + "changes"
RETAINED = P + "retained"
GROUP = "ferrymq"

HEARTBEAT_INTERVAL = 1.0
ALIVE_TTL_MS = 3000
ROUTE_FLUSH_DELAY = 0.005  # route changes are batched this long
READ_BLOCK_MS = 1000
#: Forwarding sends written before the oldest of them is answered; past it what is
#: queued waits, and joins the next send (one per reply under load, as before).
SENDS_AHEAD = 2
CHANGES_MAXLEN = 10_000
#: Change-stream ops a SUBACK may wait for the others to apply.
_ROUTE_OPS = frozenset((b"add", b"share", b"set"))
INBOX_MAXLEN = 100_000
BACKOFF_FIRST, BACKOFF_MAX = 0.2, 3.0
# Longest a stopping node waits for each of its Redis steps: a shutdown never hangs on Redis.
STOP_WAIT = 1.0
#: Longest the QoS 1/2 reader, stopped, waits to acknowledge what it dispatched and still owed.
OWED_WAIT = 0.25

# Remove a dead node's routes unless it came back (its alive key exists again).
_CLEANUP = """
if redis.call('EXISTS', KEYS[1]) == 1 then return -1 end
local filters = redis.call('SMEMBERS', KEYS[2])
for _, f in ipairs(filters) do redis.call('HDEL', ARGV[2] .. f, ARGV[1]) end
redis.call('DEL', KEYS[2])
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[3], '*', 'op', 'down', 'node', ARGV[1])
return #filters
"""


def alive_key(node: str) -> str:
    return f"{P}alive:{node}"


def route_key(topic_filter: str) -> str:
    return f"{P}route:{topic_filter}"


def node_routes_key(node: str) -> str:
    return f"{P}node-routes:{node}"


def inbox0(node: str) -> str:
    return f"{P}inbox0:{node}"


def inbox(node: str) -> str:
    return f"{P}inbox:{node}"


def behind0(node: str) -> str:
    return f"{P}behind0:{node}"


class RedisRestarted(RedisError):
    """Redis answers again, but as a new process: what it held is gone."""


class NameTaken(RedisError):
    """Another live node has this node's name (it may also be this node's previous
    process, killed less than the heartbeat's lifetime ago): retried until it expires."""


class ClusterNode:
    """Membership, route sync, forwarding and retained sync of this node."""

    def __init__(
        self, node_name: str, redis_url: str, shared_strategy: str = "round_robin"
    ) -> None:
        self.name = node_name
        self.url = redis_url
        self.target = parse(redis_url)  # BadRedisUrl (a ConfigError) before anything starts
        self.replica = RouteReplica(node_name)
        self.local: set[str] = set()  # this node's filters: what Redis should hold for it
        self.pending = PendingRoutes()
        self.shared = SharedRoutes(node_name, shared_strategy)  # every node's, this one's too
        self._shared_out: dict[str, int] = {}  # group key -> local members, not yet in Redis
        self.subacks = SubackGate()
        self.outbox = Outbox()
        #: The other nodes' QoS 1/2 streams as the sender last read them.
        self.destinations = Destinations()
        self._sent = 0  # the last forwarding send Redis executed
        self._released = 0  # the last send whose acknowledgements were let go
        self._check_timer: asyncio.TimerHandle | None = None
        self._check_due = False
        self._behind0 = False  # this node's QoS 0 backlog is past its high mark
        self._behind0_changed = asyncio.Event()
        #: The local queues the QoS 1/2 inbox reader waits for (set by ``attach``).
        self.gate = DispatchGate(1000)
        self.broker: ClusterBroker | None = None
        #: Further cluster work that shares this node's connection (``cluster.part``).
        self.parts: list[ClusterPart] = []
        #: Requests to and from the other nodes, for the API's view of the whole cluster.
        self.rpc = Rpc(node_name)
        self.parts.append(self.rpc)
        #: Awaited after QoS 1/2 batches are dispatched: sends what the dispatch wrote of
        #: persistent sessions and acknowledges the batches in one atomic step (True), or
        #: leaves the acknowledgement to the node (False: nothing was written).
        self.settle: Callable[[aioredis.Redis, str, list[bytes]], Awaitable[bool]] | None = None
        #: Called after this node found its heartbeat had lapsed (the client registry).
        self.lapsed: Callable[[aioredis.Redis], Awaitable[None]] | None = None
        self.up = False  # connected and resynchronised
        self.peers: dict[str, tuple[bool, dict[str, Any]]] = {}  # node -> (alive, record)
        self._retained_out: dict[str, Message] = {}  # retained changes not yet in Redis
        self.cleared = Cleared()  # recent clears, for a Redis that lost them
        self._wake = asyncio.Event()
        self._route_timer: asyncio.TimerHandle | None = None
        self._routes_due = False
        self._task: asyncio.Task[None] | None = None
        self._redis: aioredis.Redis | None = None
        self._run_id: str | None = None
        self._last_change = "0-0"
        self._down: set[str] = set()  # nodes known to be down
        self._joined = False  # once: later connections are returns
        self._lost_logged = False
        self._name_logged = False
        self._cleanup: Any = None
        self._pubsub: Any = None
        self._token = uuid.uuid4().hex.encode()  # this process's claim on the node name
        #: Extends the alive key from a thread while the loop answers (``cluster/beat.py``).
        self.keepalive = KeepAlive(self.target, alive_key(node_name), self._token, ALIVE_TTL_MS)
        self._bad_data_logged = False

    # --- wiring -------------------------------------------------------------

    def attach(self, broker: ClusterBroker) -> None:
        self.broker = broker
        self.subacks.metrics = broker.metrics
        self.gate = DispatchGate(broker.settings.max_mqueue_len)
        self.destinations.release = broker.flow.release_publishers  # type: ignore[assignment]

    def start(self) -> None:
        """Join the cluster in the background (the node serves its clients meanwhile)."""
        self._task = asyncio.get_running_loop().create_task(self._supervise())
        self.keepalive.start()

    async def stop(self) -> None:
        """Leave the cluster: what is still queued for other nodes is sent, then this node's
        routes and records are removed from Redis."""
        was_up = self.up
        self.keepalive.stop()
        last = self.outbox.take() if was_up else None
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            # Not awaited outright: a Redis call stuck in its cancellation (a pub/sub
            # close waiting on its reader) must not keep the process from exiting.
            await asyncio.wait({task}, timeout=STOP_WAIT)
        redis, self._redis = self._redis, None
        for part in self.parts:
            with contextlib.suppress(RedisError, OSError, TimeoutError):
                await asyncio.wait_for(part.stop(redis if was_up else None), STOP_WAIT)
        if redis is None:
            return
        if last is not None:
            with contextlib.suppress(RedisError, OSError, TimeoutError):
                await asyncio.wait_for(self._leave(redis, *last[:2]), STOP_WAIT)
        with contextlib.suppress(RedisError, OSError, TimeoutError):
            await asyncio.wait_for(close(redis), STOP_WAIT)

    def _announce(self, pipe: Any, op: str, **fields: str | bytes) -> None:
        """Queue one change-stream entry of this node on ``pipe``."""
        entry = {"op": op, "node": self.name, **fields}
        pipe.xadd(CHANGES, entry, maxlen=CHANGES_MAXLEN, approximate=True)

    async def _leave(
        self, redis: aioredis.Redis, qos0: dict[str, bytes], reliable: dict[str, bytes]
    ) -> None:
        if self._retained_out:
            await self._send_retained(redis)
        pipe = redis.pipeline(transaction=True)
        _queue_batches(pipe, qos0, reliable)
        for topic_filter in (*self.local, *self.shared.counts_of(self.name)):
            pipe.hdel(route_key(topic_filter), self.name)
        pipe.delete(node_routes_key(self.name), alive_key(self.name))
        pipe.hdel(NODES, self.name)
        self._announce(pipe, "leave")
        await pipe.execute()

    # --- what the broker calls ---------------------------------------------------

    def route_added(self, topic_filter: str) -> None:
        """The first local subscriber of ``topic_filter`` (a plain filter)."""
        self.local.add(topic_filter)
        self.pending.add(topic_filter)
        self.subacks.changed(topic_filter)
        self._schedule_routes()

    def share_changed(self, key: str, members: int) -> None:
        """The local shared group ``key`` (``$share/g/f``) has ``members`` members now."""
        shared = self.shared
        group = shared.get(key)
        if group is None or not group.counts.get(self.name):
            self.subacks.changed(key)  # a group this node had no member of
        elif members > group.counts[self.name]:
            self.subacks.joined(key)  # its count may still be on its way
        shared.set(self.name, key, members)
        self._shared_out[key] = members
        self._schedule_routes()

    def hold_suback(self, client: object, done: Callable[[], None]) -> bool:
        """Hold ``done`` (a SUBACK) until this node's new routes are in Redis, boundedly;
        False when it may leave now (no new route, or Redis not reachable)."""
        return self.up and self.subacks.hold(client, done)

    def route_joined(self, topic_filter: str) -> None:
        """A local subscriber of ``topic_filter`` that is not its first."""
        self.subacks.joined(topic_filter)

    def route_removed(self, topic_filter: str) -> None:
        """The last local subscriber of ``topic_filter`` is gone."""
        self.local.discard(topic_filter)
        self.pending.remove(topic_filter)
        self._schedule_routes()

    def forward(self, msg: Message, nodes: tuple[str, ...]) -> None:
        """Queue ``msg`` for ``nodes``; sent with everything else queued in this turn."""
        if not self.up:
            self.broker.metrics["cluster.forward.paused"] += len(nodes)  # type: ignore[union-attr]
            return
        self.outbox.put(msg, nodes)
        self._wake.set()

    def forward_shared(
        self, msg: Message, nodes: tuple[str, ...], groups: dict[str, list[str]], hops: int = 0
    ) -> int:
        """Queue ``msg`` for ``nodes`` and for the nodes of ``groups`` (``{node: [group
        key]}``, what each must serve); how many nodes it goes to."""
        if not self.up:
            count = len({*nodes, *groups})
            self.broker.metrics["cluster.forward.paused"] += count  # type: ignore[union-attr]
            return count
        count = self.outbox.put_shared(msg, nodes, groups, hops)
        self._wake.set()
        return count

    def retain_changed(self, msg: Message) -> None:
        """A retained message set (or cleared: empty payload) here, for every node."""
        self._retained_out[msg.topic] = msg
        if not msg.payload:
            self.cleared.add(msg.topic, ms_of(msg))
        if self.up:
            self._wake.set()

    def _schedule_routes(self) -> None:
        if self._route_timer is None and self.up:
            self._route_timer = asyncio.get_running_loop().call_later(
                ROUTE_FLUSH_DELAY, self._routes_timer
            )

    def _routes_timer(self) -> None:
        self._route_timer = None
        self._routes_due = True
        self._wake.set()

    # --- the connection's life ------------------------------------------------------

    async def _supervise(self) -> None:
        backoff = BACKOFF_FIRST
        while True:
            redis: aioredis.Redis | None = None
            try:
                redis = self._redis = client(
                    self.target,
                    socket_connect_timeout=2.0,
                    socket_timeout=5.0,
                    retry=Retry(NoBackoff(), 0),
                )
                await self._resync(redis)
                self.up = self.keepalive.active = True
                backoff = BACKOFF_FIRST
                self._name_logged = False
                if self._joined and self._lost_logged:
                    log.info("cluster: Redis is back; routes resynchronised")
                else:
                    log.info(
                        "cluster: node %s joined through %s (%d nodes known)",
                        self.name,
                        safe_url(self.url),
                        len(self.peers) + 1,
                    )
                self._joined = True
                self._lost_logged = False
                await self._serve(redis)
            except asyncio.CancelledError:
                raise
            except NameTaken as exc:
                if not self._name_logged:
                    log.error("cluster: not joining yet: %s", exc)
                    self._name_logged = True
            except (RedisError, OSError, ValueError) as exc:
                if not self._lost_logged:
                    log.warning(
                        "cluster: Redis at %s unreachable (%s); serving local clients only, "
                        "cross-node traffic paused until it returns",
                        safe_url(self.url),
                        exc or type(exc).__name__,
                    )
                    self._lost_logged = True
            except Exception:  # a bug must not end the node: log it, start over
                log.exception("cluster: unexpected error; reconnecting")
            finally:
                self._went_down()
            if redis is not None:
                with contextlib.suppress(RedisError, OSError):
                    await close(redis)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, BACKOFF_MAX)

    def _went_down(self) -> None:
        self.up = self.keepalive.active = False
        self._run_id = None
        if self._route_timer is not None:
            self._route_timer.cancel()
            self._route_timer = None
        self.pending.take()  # the resync sends the whole set
        self._shared_out.clear()
        self.subacks.release_all()
        for part in self.parts:
            part.went_down()
        _, _, lost = self.outbox.take()
        self.destinations.clear()
        if self._check_timer is not None:
            self._check_timer.cancel()
            self._check_timer = None
        self._check_due = False
        self._sent = self._released = self.outbox.sends - 1
        if self.broker is not None:
            if lost:
                self.broker.metrics["cluster.forward.paused"] += lost
            self.broker.forwarded(self.outbox.sends - 1)  # given up: acknowledgements leave

    async def _resync(self, redis: aioredis.Redis) -> None:
        """Everything a (re)connection starts with; see the module docstring for the order."""
        self._run_id = await self._server_run_id(redis)
        await self._claim_name(redis)
        self._pubsub = redis.pubsub()
        await self._pubsub.subscribe(inbox0(self.name))
        try:
            await redis.xgroup_create(inbox(self.name), GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        await self._heartbeat(redis)
        last: list[tuple[bytes, Any]] = await redis.xrevrange(CHANGES, count=1)  # type: ignore[assignment]  # redis' stubs: str with decode_responses; this client's replies are bytes
        self._last_change = last[0][0].decode() if last else "0-0"
        self.pending.take()
        self._shared_out.clear()
        await self._push_routes(redis)
        snapshot: dict[str, list[str]] = {}
        groups: dict[str, list[tuple[str, int]]] = {}
        keys = [key async for key in redis.scan_iter(match=route_key("*"), count=1000)]
        pipe = redis.pipeline(transaction=False)
        for key in keys:
            pipe.hgetall(key)
        prefix = len(route_key(""))
        for key, nodes in zip(keys, await pipe.execute(), strict=True):
            name = key.decode()[prefix:]
            if is_shared(name):
                groups[name] = [(n.decode(), int(c)) for n, c in nodes.items()]
            else:
                snapshot[name] = [n.decode() for n in nodes]
        self.replica.replace(snapshot)
        self.shared.replace(groups)
        await self._report_applied(redis)  # the snapshot holds everything up to there
        await self._membership(redis)
        await self._sync_retained(redis)
        for part in self.parts:
            await part.resync(redis)

    async def _push_routes(self, redis: aioredis.Redis) -> None:
        """This node's whole route set replaces what Redis holds for it."""
        raw: set[bytes] = await redis.smembers(node_routes_key(self.name))  # type: ignore[assignment]  # redis' stubs: str with decode_responses; this client's replies are bytes
        held = {f.decode() for f in raw}
        local = sorted(self.local)
        groups = self.shared.counts_of(self.name)
        serial = self.subacks.serial
        pipe = redis.pipeline(transaction=True)
        for topic_filter in held - self.local - set(groups):
            pipe.hdel(route_key(topic_filter), self.name)
        pipe.delete(node_routes_key(self.name))
        for topic_filter in local:
            pipe.hset(route_key(topic_filter), self.name, 1)
        for key, members in groups.items():
            pipe.hset(route_key(key), self.name, members)
        if local or groups:
            pipe.sadd(node_routes_key(self.name), *local, *groups)
        self._announce(pipe, "set", f=json.dumps(local), s=json.dumps(groups))
        results = await pipe.execute()
        self.subacks.written(serial, entry_id(results[-1]))

    async def _sync_retained(self, redis: aioredis.Redis) -> None:
        """This node's retained set (with the changes made while away) and Redis', newest
        change of each topic wins (``cluster/retained.py``)."""
        broker = self.broker
        assert broker is not None
        self._retained_out.clear()  # in the node's set already: compared, not just sent
        await sync_retained(
            redis, broker, self.cleared, self.name, CHANGES, CHANGES_MAXLEN, broker.restoring
        )

    async def _serve(self, redis: aioredis.Redis) -> None:
        """Run the node's loops until one fails (then all stop and the caller reconnects)."""
        loops: list[Callable[[aioredis.Redis], Coroutine[Any, Any, None]]] = [
            self._heartbeats,
            self._read_changes,
            self._read_qos0,
            self._say_behind0,
            self._read_reliable,
            self._send,
            *(part.run for part in self.parts),
        ]
        tasks = [asyncio.create_task(run(redis)) for run in loops]
        if self.pending:  # changes made during the resync
            self._schedule_routes()
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            for task in done:
                task.result()  # raises the failure
        finally:
            for task in tasks:
                task.cancel()
            # Bounded: a redis-py call can sit in its cancellation after the process
            # stalled (SIGSTOP); the reconnection must not wait for it forever.
            finished, _ = await asyncio.wait(tasks, timeout=STOP_WAIT)
            for task in finished:
                if not task.cancelled():
                    task.exception()  # seen: the first failure is what ends the connection
            with contextlib.suppress(RedisError, OSError):
                await self._pubsub.aclose()

    # --- heartbeat and membership -----------------------------------------------

    async def _server_run_id(self, redis: aioredis.Redis) -> str:
        info = await redis.info("server")
        return str(info.get("run_id", ""))

    async def _claim_name(self, redis: aioredis.Redis) -> None:
        """Take this node's alive key; refused while another process holds the name."""
        key = alive_key(self.name)
        if not await redis.set(key, self._token, px=ALIVE_TTL_MS, nx=True):
            holder = await redis.get(key)
            if holder is not None and holder != self._token:
                raise NameTaken(
                    f"another node named {self.name!r} is alive; "
                    "each node of a cluster needs its own node_name"
                )

    async def _heartbeats(self, redis: aioredis.Redis) -> None:
        while True:
            await asyncio.sleep(HEARTBEAT_INTERVAL)
            if await self._server_run_id(redis) != self._run_id:
                raise RedisRestarted("Redis restarted: its state is gone")
            if await self._heartbeat(redis):
                log.warning(
                    "cluster: this node's heartbeat lapsed (the others took it for down); "
                    "announcing its routes again"
                )
                await self._push_routes(redis)
                if self.lapsed is not None:
                    await self.lapsed(redis)
            await self._membership(redis)

    async def _heartbeat(self, redis: aioredis.Redis) -> bool:
        """Refresh this node's alive key and record; whether the key had lapsed."""
        record = json.dumps(await self.record())
        pipe = redis.pipeline(transaction=False)
        pipe.set(alive_key(self.name), self._token, px=ALIVE_TTL_MS, get=True)
        pipe.hset(NODES, self.name, record)
        was, _ = await pipe.execute()
        return was is None

    async def record(self) -> dict[str, Any]:
        """What the other nodes' APIs show of this node (``/nodes``, ``/brokers``)."""
        broker = self.broker
        assert broker is not None
        loop = asyncio.get_running_loop()
        open_fds, mem = await loop.run_in_executor(None, _fds_and_memory)
        stats = broker.stats()
        return {
            "version": __version__,
            "otp_release": system.python_release(),
            "started_at": broker.started_at,
            "heartbeat_at": time.time(),
            "connections": stats["connections.count"],
            "live_connections": stats["live_connections.count"],
            "load": list(system.load_averages()),
            "memory_total": mem.total,
            "memory_used": mem.used,
            "process_memory": mem.rss,
            "max_fds": system.max_fds(),
            "process_used": open_fds,
            "routes": len(self.local),
        }

    async def _membership(self, redis: aioredis.Redis) -> None:
        """Read every node's record and liveness; drop and clean up after the dead ones."""
        records: dict[bytes, bytes] = await redis.hgetall(NODES)  # type: ignore[assignment]  # redis' stubs: str with decode_responses; this client's replies are bytes
        names = [n.decode() for n in records if n.decode() != self.name]
        pipe = redis.pipeline(transaction=False)
        for name in names:
            pipe.exists(alive_key(name))
        alive = await pipe.execute() if names else []
        peers: dict[str, tuple[bool, dict[str, Any]]] = {}
        for name, is_alive in zip(names, alive, strict=True):
            try:
                record = json.loads(records[name.encode()])
            except ValueError:
                record = {}
            peers[name] = (bool(is_alive), record)
            if is_alive:
                self._down.discard(name)
                continue
            self.destinations.forget(name)
            self.replica.drop_node(name)  # also what a snapshot may still hold of it
            self.shared.drop_node(name)
            if name not in self._down:
                self._down.add(name)
                log.warning("cluster: node %s is down; its routes are dropped", name)
                await self._clean_up_after(redis, name)
        self.peers = peers
        self.subacks.set_live(name for name, (alive, _) in peers.items() if alive)

    async def _clean_up_after(self, redis: aioredis.Redis, name: str) -> None:
        """Remove a dead node's routes from Redis, if this node takes the lock for it."""
        if await redis.set(f"{P}cleanup:{name}", self.name, nx=True, px=10_000):
            if self._cleanup is None:
                self._cleanup = redis.register_script(_CLEANUP)
            removed = await self._cleanup(
                keys=[alive_key(name), node_routes_key(name), CHANGES],
                args=[name, route_key(""), CHANGES_MAXLEN],
                client=redis,
            )
            if removed >= 0:
                log.info("cluster: removed %d routes of node %s from Redis", removed, name)

    # --- reading --------------------------------------------------------------------

    async def _read_changes(self, redis: aioredis.Redis) -> None:
        """Tail the change stream: other nodes' route and retained changes."""
        while True:
            read = redis.xread({CHANGES: self._last_change}, count=1000, block=READ_BLOCK_MS)
            reply: StreamReply | None = await read  # type: ignore[assignment]  # redis' stubs: str with decode_responses; this client's replies are bytes
            routes = False
            for _stream, entries in reply or ():
                for raw_id, fields in entries:
                    self._last_change = raw_id.decode()
                    try:
                        routes |= self._apply_change(fields)
                    except (ValueError, KeyError) as exc:
                        self._bad_data(exc)
            if routes:  # a node waiting to send SUBACKs learns they are applied here
                await self._report_applied(redis)

    async def _report_applied(self, redis: aioredis.Redis) -> None:
        entry: dict[FieldT, EncodableT]
        entry = {"op": "applied", "node": self.name, "id": self._last_change}
        await redis.xadd(CHANGES, entry, maxlen=CHANGES_MAXLEN, approximate=True)

    def _apply_change(self, fields: dict[bytes, bytes]) -> bool:
        """Apply one entry of another node; whether it was a route change a SUBACK of
        that node may wait for."""
        node = fields.get(b"node", b"").decode()
        if node == self.name:
            return False
        op = fields.get(b"op")
        replica = self.replica
        if op == b"applied":
            self.subacks.applied(node, entry_id(fields[b"id"]))
            return False
        if op == b"add":
            for topic_filter in json.loads(fields[b"f"]):
                replica.add(node, topic_filter)
        elif op == b"del":
            for topic_filter in json.loads(fields[b"f"]):
                replica.remove(node, topic_filter)
        elif op == b"share":
            for key, members in json.loads(fields[b"s"]).items():
                self.shared.set(node, key, int(members))
        elif op == b"set":
            replica.drop_node(node)
            for topic_filter in json.loads(fields[b"f"]):
                replica.add(node, topic_filter)
            self.shared.replace_node(node, json.loads(fields.get(b"s", b"{}")))
        elif op == b"down":  # another node noticed first and cleaned up after it
            self.destinations.forget(node)
            replica.drop_node(node)
            self.shared.drop_node(node)
            if node not in self._down:
                self._down.add(node)
                log.warning("cluster: node %s is down; its routes are dropped", node)
        elif op == b"leave":
            self.destinations.forget(node)
            replica.drop_node(node)
            self.shared.drop_node(node)
            self.peers.pop(node, None)
        elif op == b"retain":
            retained = load_message(fields[b"m"])
            if not retained.payload:
                self.cleared.add(retained.topic, ms_of(retained))
            self.broker.apply_remote_retain(retained)  # type: ignore[union-attr]
        return op in _ROUTE_OPS

    async def _read_qos0(self, _redis: aioredis.Redis) -> None:
        """The QoS 0 inbox, read in bulk from the subscription's own connection."""
        broker = self.broker
        assert broker is not None
        metrics = broker.metrics

        def dispatch(messages: list[Message], served: Any, start: int, until: float) -> int:
            return broker.dispatch_remote(messages, served, start, None, until)

        def dropped(count: int) -> None:
            metrics["cluster.dropped.queue_full"] += count

        def say(behind: bool) -> None:
            self._behind0 = behind
            self._behind0_changed.set()

        reader = self._pubsub.connection._reader
        await read_inbox0(reader, self._decode, dispatch, dropped, say)

    async def _say_behind0(self, redis: aioredis.Redis) -> None:
        """Keep ``behind0`` set while the QoS 0 backlog is past its high mark (again every
        quarter of its lifetime), and delete it once the backlog is back to the low one."""
        key = behind0(self.name)
        changed = self._behind0_changed
        ttl_ms = int(BEHIND0_TTL * 1000)
        said = False
        while True:
            changed.clear()
            timeout: float | None = None
            if self._behind0:
                await redis.set(key, b"1", px=ttl_ms)
                said, timeout = True, BEHIND0_TTL / 4
            elif said:
                await redis.delete(key)
                said = False
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), timeout)

    async def _read_reliable(self, redis: aioredis.Redis) -> None:
        """The QoS 1/2 inbox (``cluster/stream_inbox.py``), on a connection of the pool held
        by this loop: no pipeline, one write per batch read."""
        stream = inbox(self.name)
        remote = self.broker.dispatch_remote  # type: ignore[union-attr]
        gate = self.gate

        def dispatch(messages: list[Message], served: Any, start: int, until: float) -> int:
            return remote(messages, served, start, gate, until)

        async def settle(ids: list[bytes]) -> bool:
            return self.settle is not None and await self.settle(redis, stream, ids)

        flush = self.broker.flow.flush  # type: ignore[union-attr]
        owed = Owed()
        try:
            async with _held(redis) as conn:
                quiet = await replies_skippable(conn)
                commands = StreamCommands(stream, GROUP, self.name, READ_BLOCK_MS, quiet)
                await read_inbox(conn, commands, self._decode, dispatch, gate, flush, settle, owed)
        finally:
            if owed.ids:  # dispatched: acknowledged now, not dispatched again after a restart
                with contextlib.suppress(RedisError, OSError, TimeoutError):
                    await asyncio.wait_for(_acknowledge(redis, stream, owed.take()), OWED_WAIT)

    def _decode(self, batch: bytes | None) -> tuple[list[Message], Any] | None:
        """A forwarded batch's messages and what they ask of shared groups; None (logged
        once) for one this node cannot read, or an entry deleted while it was pending."""
        if not batch:
            return None
        try:
            return read_batch(batch)
        except ValueError as exc:
            self._bad_data(exc)
            return None

    def _bad_data(self, exc: Exception) -> None:
        """Something in Redis this node cannot read (another version's?): skipped, logged once."""
        if not self._bad_data_logged:
            log.warning("cluster: skipped data this node cannot read (%s)", exc)
            self._bad_data_logged = True

    # --- sending ------------------------------------------------------------------------

    async def _send(self, redis: aioredis.Redis) -> None:
        """The one sender: forwarded batches (on a connection of the pool held by this
        loop, no pipeline object per send), route changes and retained changes.

        A batch is written as soon as it is taken, up to ``SENDS_AHEAD`` sends ahead of
        their replies, which ``_answers`` reads in order: a message queued while the
        last send waits for Redis does not wait for that reply before it leaves too."""
        async with _held(redis) as conn:
            sends = Sends()
            tasks = [
                asyncio.create_task(self._write_sends(redis, conn, sends)),
                asyncio.create_task(self._answers(conn, sends)),
            ]
            try:
                done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
                for task in done:
                    task.result()  # raises the failure
            except (RedisError, OSError):
                # Given up with the connection (``_went_down`` releases their acks).
                lost = sum(entry[1] for entry in sends.unanswered)
                self.broker.metrics["cluster.forward.paused"] += lost  # type: ignore[union-attr]
                raise
            finally:
                for task in tasks:
                    task.cancel()
                await asyncio.wait(tasks, timeout=STOP_WAIT)

    async def _write_sends(self, redis: aioredis.Redis, conn: Any, sends: Sends) -> None:
        wake = self._wake
        outbox = self.outbox
        while True:
            await wake.wait()
            wake.clear()
            if self._check_due:
                self._check_due = False
                await sends.answered_all()  # its replies would come after theirs
                await self._check_full(conn)
            if self._routes_due or self._retained_out:
                await sends.answered_all()  # in Redis after the messages queued before them
                if self._routes_due:
                    self._routes_due = False
                    await self._send_routes(redis)
                if self._retained_out:
                    await self._send_retained(redis)
            if not outbox:
                continue
            await sends.room()  # meanwhile what is queued joins this send
            qos0, reliable, count = outbox.take()
            commands = _batch_commands(qos0, reliable)
            now = time.monotonic()
            checks = self.destinations.to_check(reliable, now) if reliable else []
            checks0 = self.destinations.to_check0(qos0, now) if qos0 else []
            commands += [("XLEN", inbox(node)) for node in checks]
            commands += [("EXISTS", behind0(node)) for node in checks0]
            sends.written(outbox.sends - 1, count, len(commands), checks, checks0)
            await _write(conn, commands)

    async def _answers(self, conn: Any, sends: Sends) -> None:
        """The replies to the forwarding sends, in the order they were written; the last
        ones are the lengths of the destinations' streams the send asked for, then
        whether its QoS 0 destinations say they are behind."""
        metrics = self.broker.metrics  # type: ignore[union-attr]
        destinations = self.destinations
        while True:
            send, count, replies, checks, checks0 = await sends.next()
            for _ in range(replies - len(checks) - len(checks0)):
                await conn.read_response()  # an error reply raises: the node reconnects
            for node in checks:
                destinations.measured(node, await conn.read_response())
            for node in checks0:
                destinations.said(node, bool(await conn.read_response()))
            sends.answered()
            metrics["cluster.forwarded"] += count
            self._sent = send
            self._release()

    def _release(self) -> None:
        """Let go of the acknowledgements of what was sent, unless a destination is full:
        then they wait for it (its length read again every ``CHECK_EVERY``, and so is
        the flag of a destination that said it is behind: its publishers wait for it)."""
        destinations = self.destinations
        if (destinations.full or destinations.behind) and self._check_timer is None:
            self._check_timer = asyncio.get_running_loop().call_later(
                CHECK_EVERY, self._check_later
            )
        if not destinations.full:
            self._released = self._sent
        self.broker.forwarded(self._released)  # type: ignore[union-attr]

    def _check_later(self) -> None:
        self._check_timer = None
        self._check_due = True
        self._wake.set()

    async def _check_full(self, conn: Any) -> None:
        """Read the lengths of the full destinations' streams again, and the flags of
        those that said they are behind."""
        destinations = self.destinations
        for node in [*destinations.full, *destinations.behind]:
            if node in self._down:
                destinations.forget(node)
        full, behind = list(destinations.full), list(destinations.behind)
        if full or behind:
            commands = [("XLEN", inbox(n)) for n in full]
            commands += [("EXISTS", behind0(n)) for n in behind]
            replies = await _round_trip(conn, commands, len(commands))
            for node, length in zip(full, replies[: len(full)], strict=True):
                destinations.measured(node, length)
            for node, flag in zip(behind, replies[len(full) :], strict=True):
                destinations.said(node, bool(flag))
        self._release()

    async def _send_routes(self, redis: aioredis.Redis) -> None:
        serial = self.subacks.serial
        added, removed = self.pending.take()
        groups, self._shared_out = self._shared_out, {}
        if not added and not removed and not groups:
            self.subacks.written(serial)
            return
        mine = node_routes_key(self.name)
        pipe = redis.pipeline(transaction=True)
        for topic_filter in added:
            pipe.hset(route_key(topic_filter), self.name, 1)
        for topic_filter in removed:
            pipe.hdel(route_key(topic_filter), self.name)
        awaited = None  # where in the replies the entry SUBACKs wait for is
        if added:
            pipe.sadd(mine, *added)
            awaited = len(pipe)
            self._announce(pipe, "add", f=json.dumps(added))
        if removed:
            pipe.srem(mine, *removed)
            self._announce(pipe, "del", f=json.dumps(removed))
        if groups:
            for key, members in groups.items():
                if members:
                    pipe.hset(route_key(key), self.name, members)
                    pipe.sadd(mine, key)
                else:
                    pipe.hdel(route_key(key), self.name)
                    pipe.srem(mine, key)
            awaited = len(pipe)
            self._announce(pipe, "share", s=json.dumps(groups))
        results = await pipe.execute()
        self.subacks.written(serial, None if awaited is None else entry_id(results[awaited]))

    async def _send_retained(self, redis: aioredis.Redis) -> None:
        changes, self._retained_out = self._retained_out, {}
        pipe = redis.pipeline(transaction=True)
        for topic, msg in changes.items():
            data = dump_message(msg)
            if msg.payload:
                pipe.hset(RETAINED, topic, data)
            else:
                pipe.hdel(RETAINED, topic)
                pipe.hset(CLEARED, topic, ms_of(msg))
            self._announce(pipe, "retain", m=data)
        try:
            await pipe.execute()
        except (RedisError, OSError):
            for topic, msg in changes.items():  # kept for the next resync
                self._retained_out.setdefault(topic, msg)
            raise


def _batch_commands(qos0: dict[str, bytes], reliable: dict[str, bytes]) -> list[tuple[Any, ...]]:
    """One command per destination node and kind: pub/sub for QoS 0, the stream for 1/2."""
    commands: list[tuple[Any, ...]] = [("PUBLISH", inbox0(n), b) for n, b in qos0.items()]
    for node, batch in reliable.items():
        commands.append(("XADD", inbox(node), "MAXLEN", "~", INBOX_MAXLEN, "*", "m", batch))
    return commands


def _queue_batches(pipe: Any, qos0: dict[str, bytes], reliable: dict[str, bytes]) -> None:
    for command in _batch_commands(qos0, reliable):
        pipe.execute_command(*command)


async def _acknowledge(redis: aioredis.Redis, stream: str, ids: list[bytes]) -> None:
    pipe = redis.pipeline(transaction=False)
    pipe.xack(stream, GROUP, *ids)
    pipe.xdel(stream, *ids)
    await pipe.execute()


@contextlib.asynccontextmanager
async def _held(redis: aioredis.Redis) -> AsyncIterator[Any]:
    """A connection of the node's pool, held by one loop for its whole life (its commands
    skip the pipeline objects and the pool's per-call bookkeeping)."""
    pool = redis.connection_pool
    conn = await pool.get_connection()
    try:
        yield conn
    finally:
        await pool.release(conn)


#: A send written: (number, messages, replies, stream lengths read, QoS 0 flags read).
Written = tuple[int, int, int, list[str], list[str]]


class Sends:
    """The forwarding sends written and not yet answered, oldest first, shared by the
    sender (``_write_sends``) and the reader of their replies (``_answers``)."""

    __slots__ = ("_changed", "unanswered")

    def __init__(self) -> None:
        #: (send number, messages, replies to read, the destinations whose stream lengths
        #: then whose QoS 0 flags end those replies) of each send written, oldest first.
        self.unanswered: deque[Written] = deque()
        self._changed = asyncio.Event()  # a send written or answered

    def written(
        self, send: int, count: int, replies: int, checks: list[str], checks0: list[str]
    ) -> None:
        self.unanswered.append((send, count, replies, checks, checks0))
        self._changed.set()

    def answered(self) -> None:
        self.unanswered.popleft()
        self._changed.set()

    async def next(self) -> Written:
        """The oldest unanswered send, once there is one."""
        while not self.unanswered:
            await self._wait()
        return self.unanswered[0]

    async def room(self) -> None:
        """Until fewer than ``SENDS_AHEAD`` sends wait for their replies."""
        while len(self.unanswered) >= SENDS_AHEAD:
            await self._wait()

    async def answered_all(self) -> None:
        while self.unanswered:
            await self._wait()

    async def _wait(self) -> None:
        self._changed.clear()
        await self._changed.wait()


async def _write(conn: Any, commands: list[tuple[Any, ...]]) -> None:
    """Send ``commands`` in one write; their replies are read by the caller."""
    await write_packed(conn, conn.pack_commands(commands))


async def _round_trip(conn: Any, commands: list[tuple[Any, ...]], keep: int = 0) -> Any:
    """Send ``commands`` in one write, read their replies (raw, as Redis sent them); the
    last one's, or with ``keep`` the list of the last ``keep``. An error reply raises
    (``ResponseError``), as a pipeline's would."""
    await _write(conn, commands)
    if keep:
        skip = len(commands) - keep
        replies = [await conn.read_response() for _ in commands]
        return replies[skip:]
    for _ in range(len(commands) - 1):
        await conn.read_response()
    return await conn.read_response()


def _fds_and_memory() -> tuple[int, system.Memory]:
    return system.open_fds(), system.memory()
