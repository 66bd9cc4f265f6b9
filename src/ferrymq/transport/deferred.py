"""Listening sockets bound at start whose server is built on their first connection.

The management API and the dashboard run on aiohttp, whose import and
application build cost more memory (about 15 MB of RSS) than the whole MQTT
side of the broker. A ``DeferredListener`` binds and listens where and when
that server would, so a port in use still fails the start and the log still
names the address, and then only watches the sockets. The first connection
that waits in the backlog runs ``build``, which imports the server and starts
it on these very sockets; connections made meanwhile wait in the kernel's
backlog, none is refused or lost. A node nobody manages never pays for it.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable, Coroutine
from typing import Any

from ferrymq.transport.listeners import bind_sockets

log = logging.getLogger("ferrymq")

BACKLOG = 128  # aiohttp's TCPSite default


class DeferredListener:
    """Bound sockets handed to ``build`` when the first client connects (or on ``ready``)."""

    def __init__(
        self,
        host: str,
        port: int,
        build: Callable[[list[socket.socket]], Coroutine[Any, Any, None]],
    ) -> None:
        self.socks = bind_sockets(host, port, BACKLOG)
        self.addresses: list[tuple[str, int]] = [sock.getsockname()[:2] for sock in self.socks]
        self._build = build
        self._task: asyncio.Task[None] | None = None
        self._loop = asyncio.get_running_loop()
        for sock in self.socks:
            self._loop.add_reader(sock.fileno(), self._connected)

    def _unwatch(self) -> None:
        for sock in self.socks:
            self._loop.remove_reader(sock.fileno())

    def _connected(self) -> None:
        self.ready()

    def ready(self) -> asyncio.Task[None]:
        """Build the server now (once); the task ends when it serves."""
        if self._task is None:
            self._unwatch()
            self._task = self._loop.create_task(self._build(self.socks))
            self._task.add_done_callback(self._built)
        return self._task

    def _built(self, task: asyncio.Task[None]) -> None:
        if task.cancelled() or task.exception() is None:
            return
        # Closed, so that clients are refused rather than left waiting in the backlog.
        log.error("starting the server on %s failed", self.addresses, exc_info=task.exception())
        self._close_sockets()

    def _close_sockets(self) -> None:
        for sock in self.socks:
            sock.close()

    async def close(self) -> None:
        """Stop watching; sockets never handed over (or whose server failed) are closed."""
        if self._task is None:
            self._unwatch()
            self._close_sockets()
            return
        if not self._task.done():
            self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        if self._task.cancelled():
            self._close_sockets()
