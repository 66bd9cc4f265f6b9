"""Cluster-wide admin data: API apps, users, client id records, ACL rules, bans and
dashboard users.

Keys (under ``ferrymq:``)::

    admin:{kind}           hash  key -> record (JSON), kind: app, username, clientid, acl,
                           ban, dashboard_user
    admin:versions:{kind}  hash  key -> version of its last write (ms); a key without a
                           record is a tombstone (a deletion), kept ``TOMBSTONE_DAYS``
    admin:changes          stream: one entry per changed record {node, kind, key, v, ver}
                           (v: the record, "" when it was deleted; ver: its version)

Each node keeps its admin data in its own database, as a standalone node
does; the hashes are the cluster's copy. Rules kept here:

- an edit on a node (API, dashboard, ``ferrymq users|acl|apps`` on its data
  directory, an import) is noticed by the store's admin listener or the
  access stamp, diffed against the baseline (``admindata.py``) and written
  to the hashes and the stream in one transaction; every node tails the
  stream and writes each entry to its database, then to its in-memory tables
  (credentials, ACL, bans; the API drops its cache of app credentials);
- a new ban kicks the clients it matches on every node, as on the node that
  made it; a dashboard user needs nothing in memory (a login and every
  session check read the database), so a user added on one node logs in on
  every node, and one deleted or given a new password there loses its
  sessions on every node;
- conflicts: per record, the last write to reach Redis wins (each write
  takes a version above the one before it, ``WRITE``). An entry never
  overwrites a local edit not yet pushed (the write is a compare-and-set
  against the baseline); that edit is pushed next and wins. A node that was
  cut off pushes, at its resync, the records it changed meanwhile (they win
  over edits of the same records made elsewhere during the outage) and takes
  in everything else from the cluster's copy, deletions included;
- at its first join (no baseline yet) a node adds all its records: the copy
  becomes the union of the nodes' data, and a record two nodes hold with
  different values takes the value of the node that joined last;
- when Redis lost the copy (a restart without persistence), every node that
  reconnects sends, besides its own edits, what it knows newer than the copy
  (``Baseline.behind``: records and tombstones with their versions), each
  written only over an older version; so whichever node comes first (one
  that was stopped for a while, with an older copy), the cluster ends with
  each record's newest write, deletions included (those older than
  ``TOMBSTONE_DAYS`` are forgotten).

Password and secret hashes travel through Redis (never through the API).
Nothing here is on the message path.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from ferrymq.access.acl import AclRule
from ferrymq.cluster import admindata
from ferrymq.cluster.admindata import Baseline, Edit, View
from ferrymq.cluster.part import StreamEntries, StreamReply
from ferrymq.core.banned import Ban, kick_banned
from ferrymq.storage.records import KINDS, Change, Record, check_record, digest
from ferrymq.storage.stamp import stamp_of, stamp_path

if TYPE_CHECKING:
    from redis import asyncio as aioredis

    from ferrymq.core.broker import Broker
    from ferrymq.storage.sqlite import SqliteStore

log = logging.getLogger("ferrymq.cluster")
T = TypeVar("T")

P = "ferrymq:admin:"
STREAM = P + "changes"
STREAM_MAXLEN = 10_000

#: Writes to the copy, each with its stream entry: ARGV node, now (ms), then per record
#: kind, key, data ("" deletes) and version: "" for an edit made on the node (it takes
#: now, or one above the stored version if that is later: the last write wins), else the
#: version the node knows, written only over an older one. Returns the versions written
#: (0: not written, the copy has newer).
WRITE = (
    """
local P = 'ferrymq:admin:'
local out = {}
for i = 3, #ARGV, 4 do
  local kind, key, data, want = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  local vkey = P .. 'versions:' .. kind
  local stored = tonumber(redis.call('HGET', vkey, key) or '0')
  local version = 0
  if want == '' then
    version = math.max(tonumber(ARGV[2]), stored + 1)
  elseif tonumber(want) > stored then
    version = tonumber(want)
  end
  if version > 0 then
    local v = string.format('%.0f', version)
    if data == '' then
      redis.call('HDEL', P .. kind, key)
    else
      redis.call('HSET', P .. kind, key, data)
    end
    redis.call('HSET', vkey, key, v)
    redis.call('XADD', P .. 'changes', 'MAXLEN', '~', '"""
    + str(STREAM_MAXLEN)
    + """', '*',
      'node', ARGV[1], 'kind', kind, 'key', key, 'v', data, 'ver', v)
  end
  out[#out + 1] = version
end
return out
"""
)
#: Tombstones past ``TOMBSTONE_DAYS`` leave the copy: ARGV kind, key, version, ... (each
#: only if it is still that tombstone).
PRUNE = """
local P = 'ferrymq:admin:'
for i = 1, #ARGV, 3 do
  local vkey = P .. 'versions:' .. ARGV[i]
  if redis.call('HGET', vkey, ARGV[i + 1]) == ARGV[i + 2]
      and redis.call('HEXISTS', P .. ARGV[i], ARGV[i + 1]) == 0 then
    redis.call('HDEL', vkey, ARGV[i + 1])
  end
end
return 0
"""
READ_BLOCK_MS = 1000
STAMP_POLL = 0.25  # how often the access stamp (command-line edits) is looked at


def hash_key(kind: str) -> str:
    return P + kind


def versions_key(kind: str) -> str:
    return P + "versions:" + kind


class AdminSync:
    """The ``ClusterPart`` that keeps admin data the same on every node."""

    def __init__(
        self,
        node_name: str,
        broker: Broker,
        store: SqliteStore,
        data_dir: str,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self.name = node_name
        self.broker = broker
        self.store = store
        self.data_dir = data_dir
        #: Called when other nodes' changes are in this node's database, before its memory
        #: follows: the API drops its cached credentials and redoes a reload it had running.
        self.on_taken_in: list[Callable[[], None]] = []
        self.baseline = admindata.load_baseline(data_dir)
        self._lock = asyncio.Lock()  # one of push, take-in and resync at a time
        self._dirty = asyncio.Event()
        self._stamp_path = stamp_path(data_dir)
        self._stamp = stamp_of(self._stamp_path)
        self._last = "0-0"
        self._bad_logged = False
        store.set_admin_listener(lambda: loop.call_soon_threadsafe(self._dirty.set))

    # --- ClusterPart ------------------------------------------------------------------

    async def resync(self, redis: aioredis.Redis) -> None:
        async with self._lock:
            self._dirty.clear()
            last: StreamEntries = await redis.xrevrange(STREAM, count=1)  # type: ignore[assignment]  # redis' stubs: str with decode_responses; this client's replies are bytes
            local: View = await self.store.call(self.store.admin_records)
            _copy, versions = await self._read_copy(redis)
            edits = await _off_loop(self.baseline.local_edits, local)
            behind = await _off_loop(self.baseline.behind, local, versions)
            sent = await self._publish(redis, edits, behind)
            if edits:
                log.info("cluster: sent %d admin record(s) changed on this node", len(edits))
            if sent > len(edits):  # Redis lost (part of) its copy
                log.info(
                    "cluster: sent %d admin record(s) newer here than the cluster's copy",
                    sent - len(edits),
                )
            cluster, versions = await self._read_copy(redis)
            taken = await self._write_local(await _off_loop(admindata.to_take_in, cluster, local))
            self.baseline = Baseline.of(cluster, versions)
            await self._prune(redis, cluster, versions)
            await self._save()
            self._last = last[0][0].decode() if last else "0-0"
        if taken:
            log.info("cluster: took in %d admin record(s) changed on other nodes", len(taken))
        await self._take_in(taken)

    async def run(self, redis: aioredis.Redis) -> None:
        tasks = [
            asyncio.create_task(self._push_loop(redis)),
            asyncio.create_task(self._read_loop(redis)),
        ]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            for task in done:
                task.result()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    def went_down(self) -> None:
        """Edits made from now on are found by the resync's diff."""

    async def stop(self, redis: aioredis.Redis | None) -> None:
        """The cluster's copy stays; an edit not pushed yet is pushed now if possible."""
        self.store.set_admin_listener(None)
        if redis is not None and self._dirty.is_set():
            await self._push(redis)

    # --- this node's edits -------------------------------------------------------------

    async def _push_loop(self, redis: aioredis.Redis) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._dirty.wait(), STAMP_POLL)
            stamp = stamp_of(self._stamp_path)
            if stamp != self._stamp:  # the command line edited the database
                self._stamp = stamp
                self._dirty.set()
            if self._dirty.is_set():
                await self._push(redis)

    async def _push(self, redis: aioredis.Redis) -> None:
        """Send what changed here since the baseline."""
        async with self._lock:
            self._dirty.clear()
            local = await self.store.call(self.store.admin_records)
            edits = await _off_loop(self.baseline.local_edits, local)
            if edits:
                await self._publish(redis, edits)
                await self._save()

    async def _publish(
        self,
        redis: aioredis.Redis,
        edits: list[Edit],
        known: list[tuple[str, str, Record | None, int]] | None = None,
    ) -> int:
        """Write ``edits`` (made here) and ``known`` (records with the version this node
        knows, written only over older ones) to the copy and the stream in one script; the
        baseline follows once Redis has them. How many were written."""
        items = [(kind, key, record, "") for kind, key, record in edits]
        items += [(kind, key, record, str(version)) for kind, key, record, version in known or ()]
        if not items:
            return 0
        args: list[Any] = [self.name, int(time.time() * 1000)]
        for kind, key, record, version in items:
            args += [kind, key, admindata.encode(record), version]
        written = await redis.eval(WRITE, 0, *args)  # type: ignore[misc]
        sent = 0
        for (kind, key, record, _), version in zip(items, written, strict=True):
            if int(version):
                self.baseline.set(kind, key, digest(record), int(version))
                sent += 1
        return sent

    async def _prune(self, redis: aioredis.Redis, copy: View, versions: admindata.Versions) -> None:
        oldest = int(time.time() * 1000) - admindata.TOMBSTONE_MS
        args: list[Any] = []
        for kind, stamps in versions.items():
            records = copy.get(kind, {})
            for key, version in stamps.items():
                if version < oldest and key not in records:
                    args += [kind, key, str(version)]
        if args:
            await redis.eval(PRUNE, 0, *args)  # type: ignore[misc]

    # --- the other nodes' edits ---------------------------------------------------------

    async def _read_loop(self, redis: aioredis.Redis) -> None:
        while True:
            read = redis.xread({STREAM: self._last}, count=500, block=READ_BLOCK_MS)
            reply: StreamReply | None = await read  # type: ignore[assignment]  # redis' stubs: str with decode_responses; this client's replies are bytes
            for _stream, entries in reply or ():
                await self._apply_entries(entries)

    async def _apply_entries(self, entries: list[tuple[bytes, dict[bytes, bytes]]]) -> None:
        """Entries of the stream (this node's own too: in stream order, the last write to
        Redis is also the last one applied here)."""
        async with self._lock:
            changes: list[Change] = []
            for entry_id, fields in entries:
                self._last = entry_id.decode()
                try:
                    kind = fields[b"kind"].decode()
                    key = fields[b"key"].decode()
                    record = admindata.decode(fields[b"v"])
                    version = int(fields.get(b"ver", b"0"))  # none from a node before versions
                    if kind not in KINDS:
                        raise ValueError(f"unknown kind {kind!r}")
                    if record is not None:
                        check_record(kind, key, record)
                except (KeyError, ValueError, UnicodeDecodeError) as exc:
                    self._bad_data(exc)
                    continue
                before = self.baseline.get(kind, key)
                self.baseline.set(kind, key, digest(record), version)
                changes.append((kind, key, record, before))
            taken = await self._write_local(changes)
            if changes:
                await self._save()
        await self._take_in(taken)

    async def _write_local(self, changes: list[Change]) -> list[Edit]:
        """Write ``changes`` to this node's database (compare-and-set); the ones written.
        One refused holds an edit of this node not pushed yet: it is pushed next."""
        if not changes:
            return []
        results = await self.store.call(self.store.apply_admin_records, changes)
        taken: list[Edit] = []
        for (kind, key, record, _before), result in zip(changes, results, strict=True):
            if result == "written":
                taken.append((kind, key, record))
            elif result == "kept":
                self._dirty.set()
        return taken

    async def _take_in(self, taken: list[Edit]) -> None:
        """What other nodes changed, now in this node's database, into its memory."""
        if not taken:
            return
        for callback in self.on_taken_in:
            callback()
        broker = self.broker
        acl = False
        now = time.time()
        for kind, key, record in taken:
            if kind == "username" or kind == "clientid":
                auth = broker.authenticator
                if record is None:
                    (auth.remove_username if kind == "username" else auth.remove_clientid)(key)
                else:
                    set_hash = auth.set_username if kind == "username" else auth.set_clientid
                    set_hash(key, record["password_hash"])
            elif kind == "ban":
                if record is None:
                    broker.banned.remove(*json.loads(key))
                    continue
                ban = Ban(
                    record["kind"],
                    record["who"],
                    by=record["by"],
                    reason=record["reason"],
                    at=record["at"],
                    until=record["until"],
                )
                broker.banned.put(ban)
                if ban.active(now):
                    kick_banned(broker, ban)
            elif kind == "acl":
                acl = True
        if acl:
            rows = await self.store.call(self.store.list_acl)
            broker.acl.load(AclRule.from_rows(rows, log))

    # --- reading the copy ---------------------------------------------------------------

    async def _read_copy(self, redis: aioredis.Redis) -> tuple[View, admindata.Versions]:
        """The cluster's copy and the versions of its records and tombstones."""
        pipe = redis.pipeline(transaction=True)
        for kind in KINDS:
            pipe.hgetall(hash_key(kind))
            pipe.hgetall(versions_key(kind))
        replies = await pipe.execute()
        view: View = {}
        versions: admindata.Versions = {}
        for i, kind in enumerate(KINDS):
            records: dict[str, Record] = {}
            for raw_key, data in replies[2 * i].items():
                try:
                    key = raw_key.decode()
                    record = admindata.decode(data)
                    if record is not None:
                        records[key] = check_record(kind, key, record)
                except (ValueError, UnicodeDecodeError) as exc:
                    self._bad_data(exc)
            view[kind] = records
            stamps: dict[str, int] = {}
            for raw_key, raw in replies[2 * i + 1].items():
                try:
                    stamps[raw_key.decode()] = int(raw)
                except (ValueError, UnicodeDecodeError) as exc:
                    self._bad_data(exc)
            versions[kind] = stamps
        return view, versions

    async def _save(self) -> None:
        text = self.baseline.dumps()
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(None, admindata.save_baseline, self.data_dir, text)
        except OSError as exc:
            log.warning("cluster: cannot keep the admin data baseline: %s", exc)

    def _bad_data(self, exc: Exception) -> None:
        if not self._bad_logged:
            log.warning("cluster: skipped admin data this node cannot read (%s)", exc)
            self._bad_logged = True


async def _off_loop(fn: Callable[..., T], *args: Any) -> T:
    """Digests of every record (``local_edits``, ``to_take_in``) are computed on a thread:
    with many users they take a while, and the message path must not wait. The baseline is
    not changed meanwhile: the caller holds the part's lock."""
    return await asyncio.get_running_loop().run_in_executor(None, fn, *args)
