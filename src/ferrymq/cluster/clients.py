"""One client id, one session, cluster-wide: the client registry and session hand-over.

Keys (all under ``ferrymq:``)::

    client:{id}           hash  node, fence, at (the claiming CONNECT's wall-clock time;
                          and prev, the node handing it over)
    fence                 counter: each claim of a client id takes the next number
    node-clients:{node}   set   of the client ids registered to the node
    session:{id}          string: a persistent session's record (JSON)
    session-msg:{id}      hash  key -> queued or inflight message (storage.codec)
    session-meta:{id}     hash  key -> that message's delivery state (JSON)
    session-rel:{id}      set   of incoming QoS 2 packet ids awaiting PUBREL
    handover:{node}       stream: hand-over requests to the node, answers to its own, and
                          messages for sessions it owns that reached their old node late
                          (read by the node's consumer group ``ferrymq``, so a restarted
                          node, or the one taking in its sessions, reads what it had not
                          written yet)
    adopt:{node}          lock held by the node that takes in a gone node's sessions

Rules this module keeps:
- a CONNECT (after authentication) waits until its client id is claimed: a
  Lua script takes the next fence number and makes this node the owner, so
  of racing CONNECTs on several nodes the one claimed last wins;
- when another live node owned the id, it is asked to hand over: it closes
  its connection (MQTT 5 DISCONNECT 0x8E, the will handled as on a local
  takeover), writes what it still had pending of the session, forgets the
  session without ending it, and answers; then the new owner reads the
  session from Redis, only if its claim is still the latest (its fence), and
  the CONNECT goes on (clean start, session present, resend) as on one node.
  A CONNECT whose claim was overtaken meanwhile is closed before its CONNACK;
- session writes reach Redis only through a script that applies those of
  client ids this node owns (or is handing over): a node that lost a client
  id cannot overwrite the new owner's session;
- what a session handed over still collects on its old node goes, as it
  comes, in that node's session writes to the hand-over stream of the
  session's owner (with the inbox batches it came in acknowledged in the
  same call); the owner acknowledges each such entry with what delivering it
  wrote, so a restarted owner, or the node taking in a gone one's sessions,
  reads what was not written yet. The new owner delivers one copy of each
  message to the session, whichever comes first: the old node's, or the
  one straight from the publisher's node (``note``);
- every persistent session has one live owner, offline ones included (their
  subscriptions stay routed, messages queue): the registrations of a node
  whose heartbeat is gone (killed, or stopped) are taken in, under a lock, by
  one other node, which holds those sessions offline, with their expiry and
  their wills, until their clients come back somewhere; a restarted node
  takes back what is still registered to it, and a node that finds it was
  taken for down (its heartbeat lapsed) closes the connections whose
  sessions another node took in meanwhile;
- a session that ends frees its client id; while Redis is unreachable
  CONNECTs are served from this node's memory and claimed at the resync,
  where a later CONNECT (wall clock, ``at``) on another node wins: the
  earlier one is closed (0x8E) with its session and writes, and the
  winner's whole session replaces what Redis held;
- the persistent sessions a standalone run left in the local database are
  carried into Redis at the first resync (never over a session already
  there) and deleted locally.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from typing import TYPE_CHECKING, Any

from redis.exceptions import RedisError, ResponseError

from ferrymq.cluster.codec import split
from ferrymq.cluster.node import GROUP, alive_key, inbox
from ferrymq.cluster.part import StreamEntries, StreamReply
from ferrymq.cluster.session_writes import load_session, pairs
from ferrymq.model.delivery import Delivery, fields_from_meta
from ferrymq.mqtt import reason_codes as rc
from ferrymq.mqtt.topics import topic_matches
from ferrymq.storage.codec import dump_message, load_message

if TYPE_CHECKING:
    from collections.abc import Iterable

    from redis import asyncio as aioredis
    from redis.typing import EncodableT, FieldT

    from ferrymq.cluster.node import ClusterNode
    from ferrymq.cluster.store import ClusterStore
    from ferrymq.core.client import Client
    from ferrymq.core.router import Overlap
    from ferrymq.core.session import Session
    from ferrymq.model.message import Message
    from ferrymq.model.subscription import Subscription
    from ferrymq.mqtt.packets import Connect

log = logging.getLogger("ferrymq.cluster")

P = "ferrymq:"
FENCE = P + "fence"
HANDOVER_WAIT = 3.0  # longest a CONNECT waits for the previous owner's answer
ADOPT_EVERY = 1.0  # how often registrations of gone nodes are looked for
SEND_EVERY = 0.05  # session writes are sent at least this often
HANDOVER_MAXLEN = 100_000  # also in _WRITE
#: An ``acl_gen`` no subscription has: ``Broker.publish`` then asks ``acl_delivers``,
#: which refuses it (a copy the watched session had already, see ``note``).
SKIP = -(1 << 60)
# A session handed over stays routed on its old node, collecting what the other nodes
# still send there, until its new owner's routes are in this node's replica (at most
# LINGER seconds) and DRAIN more (what was sent before the others saw them arrives).
LINGER = 2.0
DRAIN = 0.1
# The new owner remembers, this long after taking a session from a live node, what it
# delivered to it, so the second copy of a message (the old node's, or the publisher's
# node's) is dropped.
WATCH = LINGER + DRAIN + 3.0
ARGS_PER_CALL = 5 * 2000  # write-script arguments per call

_CLAIM = """
local old = redis.call('HGET', KEYS[1], 'node')
if ARGV[5] == '1' and old and old ~= ARGV[1]
   and tonumber(redis.call('HGET', KEYS[1], 'at') or '0') > tonumber(ARGV[4]) then
  return {0, old, 0}
end
local f = redis.call('INCR', KEYS[2])
local prev, alive = '', 0
if old and old ~= ARGV[1] then
  prev = old
  redis.call('SREM', ARGV[3] .. 'node-clients:' .. old, ARGV[2])
  alive = redis.call('EXISTS', ARGV[3] .. 'alive:' .. old)
  redis.call('HSET', KEYS[1], 'prev', old)
end
redis.call('HSET', KEYS[1], 'node', ARGV[1], 'fence', f, 'at', ARGV[4])
redis.call('SADD', KEYS[3], ARGV[2])
return {f, prev, alive}
"""

_LOAD = """
if redis.call('HGET', KEYS[1], 'fence') ~= ARGV[1] then return false end
redis.call('HDEL', KEYS[1], 'prev')
return {redis.call('GET', KEYS[2]) or '', redis.call('HGETALL', KEYS[3]),
        redis.call('HGETALL', KEYS[4]), redis.call('SMEMBERS', KEYS[5])}
"""

_WRITE = """
local me, p = ARGV[1], ARGV[2]
local allowed = {}
for i = 3, #ARGV, 5 do
  local op, cid, a, b = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  local ck = p .. 'client:' .. cid
  local ok = allowed[cid]
  if op == 'ack' then
    redis.call('XACK', cid, 'ferrymq', a)
    redis.call('XDEL', cid, a)
    ok = false
  elseif op == 'late' then
    local owner = redis.call('HGET', ck, 'node')
    if owner then
      redis.call('XADD', p .. 'handover:' .. owner, 'MAXLEN', '~', '100000', '*',
                 'op', 'late', 'c', cid, 'f', '0', 'm', a, 'd', b)
    end
    ok = false
  elseif ok == nil then
    local owner = redis.call('HMGET', ck, 'node', 'prev')
    ok = owner[1] == me or owner[2] == me
    allowed[cid] = ok
  end
  if ok then
    local msgs, metas = p .. 'session-msg:' .. cid, p .. 'session-meta:' .. cid
    if op == 'rec' then redis.call('SET', p .. 'session:' .. cid, a)
    elseif op == 'put' then
      redis.call('HSET', msgs, a, b)
      redis.call('HSET', metas, a, ARGV[i + 4])
    elseif op == 'meta' then redis.call('HSET', metas, a, b)
    elseif op == 'rm' then
      redis.call('HDEL', msgs, a)
      redis.call('HDEL', metas, a)
    elseif op == 'rel' then redis.call('SADD', p .. 'session-rel:' .. cid, a)
    elseif op == 'unrel' then redis.call('SREM', p .. 'session-rel:' .. cid, a)
    elseif op == 'del' then
      redis.call('DEL', p .. 'session:' .. cid, msgs, metas, p .. 'session-rel:' .. cid)
    elseif op == 'unreg' then
      local cur = redis.call('HMGET', ck, 'node', 'fence')
      if cur[1] == me and cur[2] == a then
        redis.call('DEL', ck)
        redis.call('SREM', p .. 'node-clients:' .. me, cid)
      end
    elseif op == 'release' then
      if redis.call('HGET', ck, 'prev') == me then redis.call('HDEL', ck, 'prev') end
      allowed[cid] = nil
    end
  end
end
return 0
"""

_ADOPT = """
if redis.call('EXISTS', KEYS[2]) == 1 then return {} end
local out = {}
for _, cid in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local ck = ARGV[3] .. 'client:' .. cid
  if redis.call('HGET', ck, 'node') == ARGV[1] then
    local f = redis.call('INCR', KEYS[4])
    redis.call('HSET', ck, 'node', ARGV[2], 'fence', f)
    redis.call('HDEL', ck, 'prev')
    redis.call('SADD', KEYS[3], cid)
    table.insert(out, cid)
    table.insert(out, f)
  end
end
redis.call('DEL', KEYS[1])
return out
"""


_CARRY = """
if redis.call('EXISTS', KEYS[1]) == 1 or redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
local f = redis.call('INCR', KEYS[7])
redis.call('HSET', KEYS[1], 'node', ARGV[1], 'fence', f)
redis.call('SADD', KEYS[6], ARGV[2])
redis.call('SET', KEYS[2], ARGV[3])
local rels = tonumber(ARGV[4])
for i = 5, 4 + rels do redis.call('SADD', KEYS[5], ARGV[i]) end
for i = 5 + rels, #ARGV, 3 do
  redis.call('HSET', KEYS[3], ARGV[i], ARGV[i + 1])
  redis.call('HSET', KEYS[4], ARGV[i], ARGV[i + 2])
end
return f
"""


def key(kind: str, name: str) -> str:
    """``ferrymq:{kind}:{name}``: ``client`` and ``session...`` keys of a client id,
    ``node-clients`` and ``handover`` keys of a node (see the module docstring)."""
    return f"{P}{kind}:{name}"


def session_keys(client_id: str) -> list[str]:
    """The session's record, messages, their meta and its QoS 2 ids."""
    kinds = ("session", "session-msg", "session-meta", "session-rel")
    return [key(kind, client_id) for kind in kinds]


class ClientRegistry:
    """This node's part of the client registry (a ``ClusterPart``)."""

    def __init__(self, node: ClusterNode, store: ClusterStore | None) -> None:
        self.node = node
        self.store = store
        #: Client ids registered to this node, with the fence of its claim.
        self.fences: dict[str, int] = {}
        self._redis: aioredis.Redis | None = None
        self._connecting: dict[str, asyncio.Future[None]] = {}  # claims under way
        self._answers: dict[tuple[str, int], asyncio.Future[None]] = {}
        #: Connected while Redis was away: client id -> the CONNECT's wall-clock time.
        self._unclaimed: dict[str, float] = {}
        self._unsent: list[bytes | str] = []  # write-script arguments of a failed send
        self._tasks: set[asyncio.Task[Any]] = set()
        self._lingering: dict[str, Session] = {}
        self._skipped: list[tuple[Subscription | Overlap, int]] = []  # see ``note``
        self._late: asyncio.Queue[list[tuple[bytes, dict[bytes, bytes]]]] = asyncio.Queue()
        #: Sessions taken from a live node lately: what reached them here (``identity``).
        self.recent: dict[str, set[tuple[str, float, str, bytes]]] = {}
        self._send_lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._last = "0-0"
        self._scripts: dict[str, Any] = {}
        self._carried = False  # the local database's sessions were carried into Redis
        if store is not None:
            store.wake = self._wake.set
            node.settle = self._settle
        node.lapsed = self._give_up_lost

    # --- the CONNECT --------------------------------------------------------------

    def hold_connect(self, client: Client, packet: Connect) -> bool:
        """Claim the client id before the session opens (see the module docstring)."""
        redis = self._redis
        at = time.time()
        if redis is None:  # Redis away: served from memory, claimed at the resync
            self._unclaimed[client.client_id] = at
            return False
        client.transport.pause_reading()
        self._spawn(self._connect(redis, client, packet, at))
        return True

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _connect(
        self, redis: aioredis.Redis, client: Client, packet: Connect, at: float
    ) -> None:
        cid = client.client_id
        before = self._connecting.get(cid)
        done = asyncio.get_running_loop().create_future()
        self._connecting[cid] = done
        won = True
        try:
            if before is not None:
                await before
            won = await self._take(redis, cid, at)
        except (RedisError, OSError) as exc:
            log.warning("cluster: client %s served from this node only (%s)", cid, exc)
            self._unclaimed[cid] = at
        except Exception:
            log.exception("cluster: claiming client %s failed", cid)
        finally:
            if self._connecting.get(cid) is done:
                del self._connecting[cid]
            done.set_result(None)
        if not won:
            log.info("client %s: a newer connection on another node has its client id", cid)
            client.close("session taken over")
            return
        if client.closing:  # gone meanwhile: an id without a session here is freed
            self._free(cid)
            return
        client.continue_connect(packet)

    def _free(self, cid: str) -> None:
        """Unregister ``cid`` (soon) unless it has a session here."""
        fence = self.fences.get(cid)
        broker = self.node.broker
        assert broker is not None
        if fence is not None and cid not in broker.sessions and cid not in self._connecting:
            del self.fences[cid]
            self._unsent += ("unreg", cid, str(fence), "", "")
            self._wake.set()

    def _claim(self, redis: aioredis.Redis, cid: str, at: float, outage: bool = False) -> Any:
        """The claim script for ``cid``, connected at ``at`` (wall clock); ``outage``: while
        Redis was away, so it loses (fence 0) to a later CONNECT that holds the id."""
        return self._script("claim", redis)(
            keys=[key("client", cid), FENCE, key("node-clients", self.node.name)],
            args=[self.node.name, cid, P, repr(at), "1" if outage else "0"],
            client=redis,
        )

    async def _take(self, redis: aioredis.Redis, cid: str, at: float) -> bool:
        """Claim ``cid``; fetch its session when another node held it. False when a newer
        claim overtook this one."""
        fence, prev, alive = await self._claim(redis, cid, at)
        prev = prev.decode() if isinstance(prev, bytes) else prev
        self.fences[cid] = fence
        broker = self.node.broker
        assert broker is not None
        if prev and alive:
            await self._ask(redis, cid, fence, prev)
            self._watch(cid)
        if not prev:
            # Held here already (memory is the truth), or new: no other node has a
            # session for it (this node's own registrations were taken back at the resync).
            return True
        if not await self._load(redis, cid, fence):
            if self.fences.get(cid) == fence:
                del self.fences[cid]
            return False
        return True

    async def _ask(self, redis: aioredis.Redis, cid: str, fence: int, holder: str) -> None:
        """Ask ``holder`` to hand ``cid`` over, and wait (bounded) for its answer."""
        answer = asyncio.get_running_loop().create_future()
        self._answers[(cid, fence)] = answer
        try:
            entry: dict[FieldT, EncodableT]
            entry = {"op": "release", "c": cid, "f": fence, "n": self.node.name}
            await redis.xadd(key("handover", holder), entry, maxlen=HANDOVER_MAXLEN)
            await asyncio.wait_for(answer, HANDOVER_WAIT)
        except TimeoutError:
            log.warning("cluster: node %s did not hand client %s over in time", holder, cid)
        finally:
            self._answers.pop((cid, fence), None)

    async def _load(self, redis: aioredis.Redis, cid: str, fence: int) -> bool:
        """Read the session of ``cid`` from Redis into this node, if the claim ``fence``
        is still the latest (else False)."""
        got = await self._script("load", redis)(
            keys=[key("client", cid), *session_keys(cid)], args=[fence], client=redis
        )
        if got is None:
            return False
        record, msgs, metas, rel = got
        loaded = load_session(record, pairs(msgs), pairs(metas), rel)
        broker = self.node.broker
        assert broker is not None
        if cid in broker.sessions:  # a stale copy (this node lost it meanwhile)
            self._drop_local(cid)
            if self.store is not None:
                self.store.writes.discard(cid)  # what closing it wrote is stale too
        ghost = self._lingering.get(cid)
        if ghost is not None:  # what it collected comes back through the hand-over stream
            self._stop_lingering(cid, ghost)
        if loaded is not None:
            broker.restore.revive(cid, *loaded)
        return True

    def _drop_local(self, cid: str, owner: str | None = None, will: bool = True) -> None:
        """``cid`` belongs to another node now: close its connection here (0x8E) and
        forget its session without ending it (with ``owner``, the new owner: once that
        node's routes are known, see ``LINGER``; ``will``: the closing may publish it)."""
        broker = self.node.broker
        assert broker is not None
        client = broker.clients.get(cid)
        if client is not None:
            log.info("client %s taken over on another node", cid)
            client.will_allowed = will
            client.kick(rc.SESSION_TAKEN_OVER, "session taken over")
            broker.metrics["session.takeovered"] += 1
        session = broker.sessions.get(cid)
        if session is None:
            return
        linger = owner is not None and session.persistent and self.store is not None
        if linger and owner is not None:  # (linger says it is not None)
            self.store.muted.add(cid)  # type: ignore[union-attr]
            self._lingering[cid] = session
            self._spawn(self._end_linger(cid, session, owner))
        broker.registry.hand_over(session, linger)

    def _stop_lingering(self, cid: str, session: Session) -> None:
        """The lingering ``session`` leaves the router (what it collected went on, as it
        came, in the session writes: ``SessionWrites.hand_on``)."""
        del self._lingering[cid]
        self.store.muted.discard(cid)  # type: ignore[union-attr]
        self.node.broker.registry.unroute(session)  # type: ignore[union-attr]

    async def _end_linger(self, cid: str, session: Session, owner: str) -> None:
        """Once ``owner``'s routes are known here, and ``DRAIN`` later, the lingering
        session stops collecting."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + LINGER
        wanted = {sub.filter for sub in session.subscriptions.values()}
        replica = self.node.replica
        while loop.time() < deadline and not wanted <= replica.filters_of(owner):
            await asyncio.sleep(0.005)
        await asyncio.sleep(DRAIN)
        if self._lingering.get(cid) is session:
            self._stop_lingering(cid, session)

    def _deliver_late(self, cid: str, late: list[Delivery]) -> bool:
        """Messages that reached the session's previous node after it left, to the session,
        but not those that also came here straight from the publisher's node (and those
        that come that way later are dropped: ``note``), as the session's subscriptions
        here take them (after an outage its old node's may not be the same: see
        ``_win``). False: no session here."""
        broker = self.node.broker
        assert broker is not None
        session = broker.sessions.get(cid)
        if session is None:
            return False
        seen = self.recent.get(cid)
        subs = session.subscriptions.values()
        for d in late:
            how = delivery_for(subs, cid, d.msg)
            if how is None:
                continue
            if seen is not None:
                ident = identity(d.msg)
                if ident in seen:
                    continue
                seen.add(ident)
            session.deliver(d.msg, *how)
        return True

    def _watch(self, cid: str) -> None:
        """``cid`` is being taken from a live node: remember for ``WATCH`` seconds what
        reaches its session here (``note``)."""
        seen = self.recent[cid] = set()
        asyncio.get_running_loop().call_later(WATCH, self._unwatch, cid, seen)

    def _unwatch(self, cid: str, seen: set[tuple[str, float, str, bytes]]) -> None:
        if self.recent.get(cid) is seen:
            del self.recent[cid]

    def note(self, msg: Message) -> None:
        """``msg`` is being routed here (called only while ``recent`` is not empty): it
        counts as delivered to each watched session it goes to, unless that session had
        it already from its old node: then this copy is not delivered to it (its target
        is marked ``SKIP`` until the routing is over). The router's (cached) targets of
        its topic say which: the cost is that of the delivery, not of the number of
        sessions watched."""
        broker = self.node.broker
        assert broker is not None
        if self._skipped:
            self._unskip()
        recent = self.recent
        ident = identity(msg)
        for sub in broker.router.targets(msg.topic).per_client:
            seen = recent.get(sub.client_id)
            if seen is None or broker.sessions.get(sub.client_id) is not sub.session:
                continue
            if ident not in seen:
                seen.add(ident)
                continue
            target = sub.local if sub.no_local and sub.client_id == msg.publisher else sub
            if target is not None:
                self._skipped.append((target, target.acl_gen))
                target.acl_gen = SKIP
        if self._skipped:
            asyncio.get_running_loop().call_soon(self._unskip)

    def _unskip(self) -> None:
        """The targets ``note`` marked ``SKIP`` get their ACL state back."""
        skipped, self._skipped = self._skipped, []
        for target, acl_gen in reversed(skipped):
            target.acl_gen = acl_gen

    async def _release(self, redis: aioredis.Redis, cid: str, fence: int, asker: str) -> None:
        """Another node claimed ``cid`` with ``fence``: hand it over, then answer."""
        try:
            await self._hand_over(redis, cid, fence, asker)
        except (RedisError, OSError) as exc:  # the asker stops waiting after a while
            log.warning("cluster: handing client %s over failed (%s)", cid, exc)

    async def _hand_over(self, redis: aioredis.Redis, cid: str, fence: int, asker: str) -> None:
        busy = self._connecting.get(cid)
        if busy is not None:
            await busy
        mine = self.fences.get(cid)
        if mine is not None and mine < fence:
            del self.fences[cid]
            self._drop_local(cid, asker)
        await self._send(redis, release=cid)
        entry: dict[FieldT, EncodableT]
        entry = {"op": "released", "c": cid, "f": fence}
        await redis.xadd(key("handover", asker), entry, maxlen=HANDOVER_MAXLEN)

    async def _give_up_lost(self, redis: aioredis.Redis) -> None:
        """After this node was taken for down (its loop stalled, its heartbeat lapsed):
        the client ids another node took in meanwhile are no longer this node's. Their
        connections here are closed (0x8E), their sessions forgotten (the other node
        holds them, with their wills) and their pending writes dropped."""
        me = self.node.name
        busy = self._connecting.keys() | self._unclaimed.keys()  # decided by their own rules
        cids = [cid for cid in self.fences if cid not in busy]
        if not cids:
            return
        pipe = redis.pipeline(transaction=False)
        for cid in cids:
            pipe.hmget(key("client", cid), "node", "fence", "prev")
        lost = []
        for cid, (node, fence, prev) in zip(cids, await pipe.execute(), strict=True):
            if node is None or node.decode() == me:
                continue
            if prev is not None and prev.decode() == me:  # its hand-over was asked for
                self._spawn(self._release(redis, cid, int(fence), node.decode()))
            else:
                lost.append(cid)
        for cid in lost:
            if cid in self.fences and cid not in self._connecting:
                del self.fences[cid]
                self._drop_local(cid, will=False)
                if self.store is not None:
                    self.store.writes.discard(cid)
        if lost:
            log.warning(
                "cluster: %d sessions were taken in by other nodes while this node was "
                "taken for down; their connections here are closed",
                len(lost),
            )

    # --- ClusterPart ----------------------------------------------------------------

    async def resync(self, redis: aioredis.Redis) -> None:
        me = self.node.name
        broker = self.node.broker
        assert broker is not None
        await self._give_up_lost(redis)
        try:  # entries older than the group (the first start) are not this node's
            await redis.xgroup_create(key("handover", me), GROUP, id="$", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self._last = "0"  # what was read and not acknowledged before, first
        # Served while Redis was away: this node's now, unless a later CONNECT elsewhere
        # holds the client id (MQTT: the later connection wins).
        unclaimed, self._unclaimed = self._unclaimed, {}
        for cid, at in unclaimed.items():
            if cid in broker.sessions or cid in broker.clients:
                fence, prev, alive = await self._claim(redis, cid, at, outage=True)
                if not fence:
                    self._lose(cid, prev.decode())
                    continue
                self.fences[cid] = fence
                if prev and alive:  # another node took it meanwhile: it lets go first
                    self._spawn(self._win(redis, cid, fence, prev.decode()))
                else:
                    self._rewrite(cid)
        # Registered to this node but not held by this process (it restarted): taken back.
        held: set[bytes] = await redis.smembers(key("node-clients", me))  # type: ignore[assignment]  # redis' stubs: str with decode_responses; this client's replies are bytes
        for raw in held:
            cid = raw.decode()
            if cid not in self.fences:
                pair: list[bytes | None] = await redis.hmget(key("client", cid), "node", "fence")  # type: ignore[assignment]  # redis' stubs: str with decode_responses; this client's replies are bytes
                node, fence = pair
                if node is not None and fence is not None and node.decode() == me:
                    await self._take_in(redis, cid, int(fence))
        if self.store is not None:
            if not self._carried:
                await self._carry(redis, self.store)
            self.store.online = True
        self._redis = redis

    def _lose(self, cid: str, owner: str) -> None:
        """``cid``, connected here while Redis was away, was connected later on ``owner``:
        its connection here is closed (0x8E), its session forgotten and what it wrote
        meanwhile dropped, so none of it mixes with the winner's session."""
        log.info("client %s: connected later on node %s; closed here", cid, owner)
        self.fences.pop(cid, None)
        self._drop_local(cid, will=False)
        if self.store is not None:
            self.store.writes.discard(cid)

    async def _win(self, redis: aioredis.Redis, cid: str, fence: int, holder: str) -> None:
        """After an outage, ``cid`` is this node's, and ``holder`` also served it: once it
        let go (or the wait is over), Redis gets this node's session."""
        self._watch(cid)
        with contextlib.suppress(RedisError, OSError):
            await self._ask(redis, cid, fence, holder)
        if self.fences.get(cid) == fence:
            self._rewrite(cid)

    def _rewrite(self, cid: str) -> None:
        """Redis' copy of ``cid``'s session becomes exactly this node's, in one send:
        what was there (written before the outage, or by a node that also served the
        client id meanwhile) is deleted first."""
        broker = self.node.broker
        store = self.store
        assert broker is not None
        session = broker.sessions.get(cid)
        if store is None or session is None:
            return
        writes = store.writes
        writes.delete_session(cid)
        if session.persistent:
            writes.put_session(cid, session.snapshot())
            for d in (*session.inflight.values(), *session.queue):
                if not d.key:
                    d.key = session.next_key
                    session.next_key += 1
                writes.put_message(cid, d.key, d.msg, d.meta())
            for pid in session.awaiting_rel:
                writes.awaiting_rel(cid, pid, True)
        self._wake.set()

    async def _carry(self, redis: aioredis.Redis, store: ClusterStore) -> None:
        """Persistent sessions a standalone run of this node left in its local database go
        to Redis, once: each one whose client id has no session or registration in Redis
        yet becomes this node's (a newer one there is kept), and the local copies are
        deleted either way (a cluster node reads sessions from Redis only)."""
        local = store.local
        records = await local.call(local.load_sessions)
        if records:
            messages = await local.call(local.load_session_messages)
            rels = await local.call(local.load_awaiting_rel)
            broker = self.node.broker
            assert broker is not None
            carried = 0
            for cid, data in records.items():
                if cid in broker.sessions or cid in broker.clients or cid in self.fences:
                    continue  # served since this start: this node's state is newer
                pids = [str(pid) for pid in rels.get(cid, ())]
                args: list[bytes | str] = [self.node.name, cid, json.dumps(data), str(len(pids))]
                args += pids
                for msg_key, msg, meta in messages.get(cid, ()):
                    args += (str(msg_key), dump_message(msg), json.dumps(meta))
                keys = [key("client", cid), *session_keys(cid), key("node-clients", self.node.name)]
                fence = await self._script("carry", redis)(
                    keys=[*keys, FENCE], args=args, client=redis
                )
                if fence:
                    carried += 1
                    await self._take_in(redis, cid, int(fence))
            for cid in records:
                local.delete_session(cid)
            log.info(
                "cluster: %d of %d persistent sessions of the local database carried into "
                "Redis (the others had a newer session there)",
                carried,
                len(records),
            )
        self._carried = True

    async def run(self, redis: aioredis.Redis) -> None:
        self._late = asyncio.Queue()
        await asyncio.gather(
            self._read(redis), self._lates(redis), self._sends(redis), self._adoptions(redis)
        )

    def went_down(self) -> None:
        self._redis = None
        if self.store is not None:
            self.store.went_offline()

    async def stop(self, redis: aioredis.Redis | None) -> None:
        """The node leaves: its sessions' last writes go to Redis (another node takes the
        persistent ones in once this node's heartbeat is gone)."""
        self._redis = None
        if redis is not None:
            await self._send(redis)

    # --- loops ------------------------------------------------------------------------

    async def _read(self, redis: aioredis.Redis) -> None:
        """Hand-over requests to this node, the answers to its own, and late messages for
        its sessions (to ``_lates``, which acknowledges them once they are written)."""
        me = self.node.name
        stream = key("handover", me)
        while True:
            pending = self._last != ">"  # read before and not acknowledged (a restart)
            read = redis.xreadgroup(GROUP, me, {stream: self._last}, 100, None if pending else 1000)
            reply: StreamReply | None = await read  # type: ignore[assignment]  # redis' stubs: str with decode_responses; this client's replies are bytes
            entries = reply[0][1] if reply else []
            if pending:
                self._last = entries[-1][0].decode() if entries else ">"
            done: list[bytes] = []
            late: list[tuple[bytes, dict[bytes, bytes]]] = []
            for entry_id, fields in entries:
                if fields and fields.get(b"op") == b"late":
                    late.append((entry_id, fields))
                    continue
                done.append(entry_id)
                try:
                    if fields:
                        self._answer(redis, fields)
                except (KeyError, ValueError) as exc:
                    self.node._bad_data(exc)
            if late:
                self._late.put_nowait(late)
            if done:
                pipe = redis.pipeline(transaction=False)
                pipe.xack(stream, GROUP, *done)
                pipe.xdel(stream, *done)
                await pipe.execute()

    def _answer(self, redis: aioredis.Redis, fields: dict[bytes, bytes]) -> None:
        """A hand-over request (``release``) or the answer to one of this node's."""
        op = fields[b"op"]
        cid = fields[b"c"].decode()
        fence = int(fields[b"f"])
        if op == b"release":
            self._spawn(self._release(redis, cid, fence, fields[b"n"].decode()))
        elif op == b"released":
            answer = self._answers.get((cid, fence))
            if answer is not None and not answer.done():
                answer.set_result(None)

    async def _lates(self, redis: aioredis.Redis) -> None:
        """Late messages read from this node's hand-over stream, in order."""
        stream = key("handover", self.node.name)
        while True:
            await self._hand_on(redis, stream, await self._late.get())

    async def _hand_on(
        self, redis: aioredis.Redis, stream: str, entries: list[tuple[bytes, dict[bytes, bytes]]]
    ) -> None:
        """Late messages of ``stream`` (a hand-over stream, this node's or a gone node's):
        to their session here (once its claim is over), or on to the node that owns it
        now; then acknowledged and deleted, with what they wrote, in one script call."""
        onward: dict[str, list[dict[FieldT, EncodableT]]] = {}
        for _entry_id, fields in entries:
            if fields.get(b"op") != b"late":
                continue
            try:
                cid = fields[b"c"].decode()
                msg = load_message(fields[b"m"])
                qos, retain, ids, _, _ = fields_from_meta(json.loads(fields[b"d"]), msg.qos)
            except (KeyError, ValueError) as exc:
                self.node._bad_data(exc)
                continue
            busy = self._connecting.get(cid)
            if busy is not None:
                await busy  # the session it is for is being loaded here
            if not self._deliver_late(cid, [Delivery(msg, qos, retain, ids)]):
                onward.setdefault(cid, []).append({k: v for k, v in fields.items()})
        pipe = redis.pipeline(transaction=False)
        if onward:
            for cid in onward:
                pipe.hget(key("client", cid), "node")
            owners: list[bytes | None] = await pipe.execute()
            for found, owner in zip(onward.values(), owners, strict=True):
                if owner is not None and owner.decode() != self.node.name:
                    for onward_fields in found:
                        pipe.xadd(
                            key("handover", owner.decode()), onward_fields, maxlen=HANDOVER_MAXLEN
                        )
            await pipe.execute()
        done = [entry_id for entry_id, _ in entries]
        if not await self._settle(redis, stream, done):
            pipe.xack(stream, GROUP, *done)
            pipe.xdel(stream, *done)
            await pipe.execute()

    async def _drain_handover(self, redis: aioredis.Redis, name: str) -> None:
        """The late messages the gone node ``name`` had not written: to the sessions taken
        in from it, or on to their owners."""
        stream = key("handover", name)
        start = "-"
        while True:
            entries: StreamEntries = await redis.xrange(stream, min=start, count=100)  # type: ignore[assignment]  # redis' stubs: str with decode_responses; this client's replies are bytes
            if not entries:
                break
            await self._hand_on(redis, stream, entries)
            start = "(" + entries[-1][0].decode()

    async def _sends(self, redis: aioredis.Redis) -> None:
        """Session writes to Redis: at least every ``SEND_EVERY``, at once when asked."""
        store = self.store
        if store is None:
            await asyncio.Event().wait()
            return
        wake = self._wake
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), SEND_EVERY)
            wake.clear()
            if store.writes or store.behind() or self._unsent:
                await self._send(redis)

    async def _settle(self, redis: aioredis.Redis, stream: str, ids: list[bytes]) -> bool:
        """Forwarded batches ``ids`` of ``stream`` were dispatched: what they wrote of
        persistent sessions and their acknowledgement go in one script call, so that a
        node dying in between can never deliver them twice (QoS 2 exactly once). False
        when nothing was written (the node acknowledges them itself). A send under way
        may carry what the dispatch wrote: the acknowledgement then follows it."""
        store = self.store
        if store is None or not (store.writes or self._unsent or store.sending):
            return False
        await self._send(redis, ack=(stream, ids))
        return True

    async def _send(
        self,
        redis: aioredis.Redis,
        release: str | None = None,
        ack: tuple[str, list[bytes]] | None = None,
    ) -> None:
        """Everything pending to Redis in one script call per few thousand writes (one in
        all with ``ack``, the stream entries acknowledged with it); an ended session's
        registration goes with it; ``release``: the hand-over of that client id is over."""
        async with self._send_lock:
            store = self.store
            upto = None
            args, self._unsent = self._unsent, []  # a failed send's first
            if store is not None:
                upto = store.taking()
                more, deleted = store.writes.take()
                args += more
                for cid in deleted:
                    self._free(cid)  # after the deletion, in the same call
            args += self._unsent
            self._unsent = []
            if release is not None:
                args += ("release", release, "", "", "")
            size = ARGS_PER_CALL
            if ack is not None:
                stream, ids = ack
                for entry_id in ids:
                    args += ("ack", stream, entry_id, "", "")
                size = len(args)
            try:
                write = self._script("write", redis)
                while args:
                    await write(args=[self.node.name, P, *args[:size]], client=redis)
                    del args[:size]
            except BaseException:
                self._unsent = args + self._unsent  # sent first once Redis answers again
                if store is not None:
                    store.sent(None)
                raise
            if store is not None:
                store.sent(upto)

    async def _adoptions(self, redis: aioredis.Redis) -> None:
        """Take in the registrations of nodes whose heartbeat is gone."""
        me = self.node.name
        prefix = len(key("node-clients", ""))
        while True:
            await asyncio.sleep(ADOPT_EVERY)
            gone = []
            async for found in redis.scan_iter(match=key("node-clients", "*"), count=100):
                name = found.decode()[prefix:]
                if name != me and not await redis.exists(alive_key(name)):
                    gone.append(name)
            for name in gone:
                if not await redis.set(f"{P}adopt:{name}", me, nx=True, px=10_000):
                    continue
                theirs, mine = key("node-clients", name), key("node-clients", me)
                taken = await self._script("adopt", redis)(
                    keys=[theirs, alive_key(name), mine, FENCE],
                    args=[name, me, P],
                    client=redis,
                )
                cids = [cid.decode() for cid in taken[::2]]
                for cid, fence in zip(cids, taken[1::2], strict=True):
                    await self._take_in(redis, cid, int(fence))
                await self._drain_inbox(redis, name, cids)
                await self._drain_handover(redis, name)
                if taken:
                    log.info(
                        "cluster: took in %d client registrations of node %s",
                        len(taken) // 2,
                        name,
                    )

    async def _drain_inbox(self, redis: aioredis.Redis, name: str, cids: list[str]) -> None:
        """The QoS 1/2 batches the gone node had not dispatched: to the sessions taken in
        from it (its other clients are gone), then deleted from its inbox."""
        broker = self.node.broker
        assert broker is not None
        sessions = [broker.sessions[cid] for cid in cids if cid in broker.sessions]
        stream = inbox(name)
        start = "-"
        while True:
            entries: StreamEntries = await redis.xrange(stream, min=start, count=100)  # type: ignore[assignment]  # redis' stubs: str with decode_responses; this client's replies are bytes
            if not entries:
                break
            for _, fields in entries:
                for msg in split(fields.get(b"m", b"")):
                    for session in sessions:
                        how = delivery_for(session.subscriptions.values(), session.client_id, msg)
                        if how is not None:
                            session.deliver(msg, *how)
            ids = [entry_id for entry_id, _ in entries]
            if not await self._settle(redis, stream, ids):
                await redis.xdel(stream, *ids)
            start = "(" + entries[-1][0].decode()

    async def _take_in(self, redis: aioredis.Redis, cid: str, fence: int) -> None:
        """A registration now this node's without a connection here: its persistent
        session is held offline here; a client id without one is freed."""
        broker = self.node.broker
        assert broker is not None
        self.fences[cid] = fence
        if cid in broker.clients or cid in self._connecting:
            return
        if not await self._load(redis, cid, fence):
            self.fences.pop(cid, None)
            return
        if cid not in broker.sessions:
            del self.fences[cid]
            await self._script("write", redis)(
                args=[self.node.name, P, "unreg", cid, str(fence), "", ""], client=redis
            )

    def _script(self, name: str, redis: aioredis.Redis) -> Any:
        script = self._scripts.get(name)
        if script is None:
            source = {
                "claim": _CLAIM,
                "load": _LOAD,
                "write": _WRITE,
                "adopt": _ADOPT,
                "carry": _CARRY,
            }[name]
            script = self._scripts[name] = redis.register_script(source)
        return script


def identity(msg: Message) -> tuple[str, float, str, bytes]:
    """What tells one published message from another when two copies of it meet: its
    publisher, its creation time (kept exactly as it travels), topic and payload."""
    return (msg.publisher, msg.created, msg.topic, msg.payload)


def delivery_for(
    subscriptions: Iterable[Subscription], client_id: str, msg: Message
) -> tuple[int, bool, tuple[int, ...] | None] | None:
    """(QoS, retain, subscription ids) of ``msg`` to one session with ``subscriptions``,
    folded as the router folds overlapping ones (the highest granted QoS up to the
    message's, every identifier, retain as published if one asks); None when none
    matches (no local counts)."""
    qos = -1
    retain = False
    ids: list[int] = []
    for sub in subscriptions:
        if (sub.no_local and msg.publisher == client_id) or not topic_matches(
            sub.filter, msg.topic
        ):
            continue
        qos = max(qos, min(sub.qos, msg.qos))
        retain = retain or (msg.retain and sub.retain_as_published)
        if sub.identifier:
            ids.append(sub.identifier)
    return None if qos < 0 else (qos, retain, tuple(ids) or None)
