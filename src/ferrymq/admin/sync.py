"""Picking up changes that the command line writes straight into the data directory.

``ferrymq users|acl|apps ...`` write to the SQLite database and then replace
the small stamp file ``access.stamp`` next to it (``storage/stamp.py``). A
running broker looks at the stamp a few times a second (one ``stat``) and,
when it changed, reloads credentials and ACL rules from the database and
forgets cached API credentials. No signals or sockets are involved, so it works for any broker
sharing the data directory, started before or after the change.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from ferrymq.access.acl import AclRule
from ferrymq.storage.stamp import stamp_of, stamp_path

if TYPE_CHECKING:
    from ferrymq.core.broker import Broker

log = logging.getLogger("ferrymq.api")  # the API's log, where these lines always were

POLL_INTERVAL = 0.25


class AccessSync:
    """Reloads access data when the stamp changes; counts the API's own writes.

    ``writes`` is bumped by every API change to credentials or rules: a reload
    that overlapped one is redone, so a reload never undoes an API write.
    """

    def __init__(self, broker: Broker, on_change: Callable[[], None] | None = None) -> None:
        self.broker = broker
        self.on_change = on_change
        self.writes = 0
        self.reloads = 0
        self._path = stamp_path(broker.settings.data_dir)
        self._seen = stamp_of(self._path)
        self._task: asyncio.Task[None] | None = None

    def written_elsewhere(self) -> None:
        """Another writer changed access data in the store (cluster mode: another node's
        edit): a reload running meanwhile is redone, cached API credentials dropped."""
        self.writes += 1
        if self.on_change is not None:
            self.on_change()

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(POLL_INTERVAL)
            stamp = stamp_of(self._path)
            if stamp == self._seen:
                continue
            self._seen = stamp
            try:
                await self.reload()
            except Exception:
                log.exception("reloading access data failed")

    async def reload(self) -> None:
        """Load credentials and rules from the store into the broker."""
        store = self.broker.store
        if store is None:
            return
        for _attempt in range(5):
            before = self.writes
            usernames = await store.call(store.list_auth, "username")
            clientids = await store.call(store.list_auth, "clientid")
            rules = await store.call(store.list_acl)
            if self.writes == before:
                break
        self.broker.authenticator.load(
            {r["subject"]: r["password_hash"] for r in usernames},
            {r["subject"]: r["password_hash"] for r in clientids},
        )
        loaded = AclRule.from_rows(rules, log)
        self.broker.acl.load(loaded)
        self.reloads += 1
        if self.on_change is not None:
            self.on_change()
        log.info(
            "reloaded access data: %d users, %d client ids, %d ACL rules",
            len(usernames),
            len(clientids),
            len(loaded),
        )
