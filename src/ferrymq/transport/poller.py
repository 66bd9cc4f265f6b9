"""Plain TCP connections on their raw sockets, watched by one epoll per listener.

An idle connection's biggest cost was the event loop's: uvloop's TCP transport
takes about 1,200 bytes per connection (its transport object, libuv's handle,
its fd map entry), and even ``loop.add_reader`` per socket about 700 (a libuv
poll handle, a callback handle, two dict entries). Here a listener's
connections are registered in an epoll of its own, which is itself one reader
of the event loop: the kernel keeps the interest list, and a connection costs
its ``SocketTransport`` and one dict entry (about 140 bytes).

``SocketTransport`` gives the ``Client`` what an asyncio transport gave it:
``write`` (tried at once; what the kernel does not take waits in a list, and
the socket is watched for writing only then), ``pause_writing`` /
``resume_writing`` past 256 KiB (``WRITE_HIGH_WATER``) and back under a
quarter of it, ``pause_reading`` / ``resume_reading``, ``write_eof`` (the
reading side stays open), ``close`` (after what is buffered), ``abort``, the
peer address and, for its options (``core/flow.py`` pins the receive buffer),
the socket. Each poll tells the broker how many sockets it found ready
(``polled``: few means the broker keeps up, so a read's writes leave at once,
``core/flow.py``). As asyncio does, ``connection_lost`` comes in a later callback,
never inside ``close`` or ``abort``, and one read is at most 256 KiB, into one
shared buffer. Linux only (``select.epoll``); elsewhere the listener uses the
event loop's transport.
"""

from __future__ import annotations

import asyncio
import logging
import mmap
import os
import select
import socket
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ferrymq.transport.tcp import WRITE_HIGH_WATER

if TYPE_CHECKING:
    from ferrymq.core.client import Client

log = logging.getLogger("ferrymq.listeners")

AVAILABLE = hasattr(select, "epoll")

READ_SIZE = 256 * 1024  # one read at most, as the event loop's transports read
_WRITE_LOW_WATER = WRITE_HIGH_WATER // 4
# Every read lands here first: one event loop, one read at a time. An anonymous mapping, not
# a bytearray (which is zeroed, so resident at once): a page is resident once a read reached it.
_BUFFER = mmap.mmap(-1, READ_SIZE)
_BUFFERS = [_BUFFER]

if AVAILABLE:
    _IN = select.EPOLLIN
    _OUT = select.EPOLLOUT
    _IN_OR_FAIL = select.EPOLLIN | select.EPOLLERR | select.EPOLLHUP
    _OUT_OR_FAIL = select.EPOLLOUT | select.EPOLLERR | select.EPOLLHUP

# SocketTransport.state
_OPEN = 0
_EOF = 1  # write_eof asked: shut the sending side once the buffer is written
_CLOSING = 2  # close asked: close once the buffer is written
_CLOSED = 3


class Poller:
    """One listener's connections: its epoll, read by the event loop as one file descriptor."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        closed: Callable[[], None],
        polled: Callable[[int], None],
    ) -> None:
        self.loop = loop
        self.closed = closed  # called after each connection_lost (the listener's count)
        self.polled = polled  # told how many sockets each poll found ready (core/flow.py)
        self.epoll = select.epoll()
        self.transports: dict[int, SocketTransport] = {}
        loop.add_reader(self.epoll.fileno(), self._ready)

    def attach(
        self, fd: int, peer: tuple[str, int], make_client: Callable[[SocketTransport], Client]
    ) -> SocketTransport:
        """Serve the accepted, non-blocking socket ``fd`` (owned from now on) to the client
        ``make_client`` makes for its transport."""
        transport = SocketTransport(self, fd, peer)
        self.transports[fd] = transport
        transport.client = make_client(transport)
        transport._watch()
        return transport

    def _ready(self) -> None:
        transports = self.transports
        ready = self.epoll.poll(0)
        self.polled(len(ready))
        for fd, events in ready:
            transport = transports.get(fd)
            if transport is None:
                continue  # closed by a callback of this same batch
            if events & _IN_OR_FAIL and transport.reading:
                transport._readable()
            if events & _OUT_OR_FAIL and transport.buffer is not None:
                transport._writable()

    def close(self) -> None:
        """The listener is done: close the epoll and what connections are left (the broker
        has already closed its clients; nothing is called back)."""
        self.loop.remove_reader(self.epoll.fileno())
        for transport in list(self.transports.values()):
            transport.state = _CLOSED
            transport.buffer = None
            os.close(transport.fd)
        self.transports.clear()
        self.epoll.close()


class SocketTransport:
    """One TCP connection on its socket: the ``core.interfaces.Transport`` of a ``Client``."""

    __slots__ = (
        "poller",
        "fd",
        "client",
        "peer",
        "buffer",
        "size",
        "events",
        "reading",
        "state",
        "write_paused",
    )

    def __init__(self, poller: Poller, fd: int, peer: tuple[str, int]) -> None:
        self.poller = poller
        self.fd = fd
        self.client: Client
        self.peer = peer
        self.buffer: list[bytes] | None = None  # what the kernel did not take yet
        self.size = 0  # bytes in buffer
        self.events = 0  # what fd is registered for in the epoll (0: not registered)
        self.reading = True
        self.state = _OPEN
        self.write_paused = False

    # --- the Transport protocol ------------------------------------------

    def write(self, data: bytes) -> None:
        if self.state:  # after write_eof or close, as asyncio's, writes go nowhere
            return
        buffer = self.buffer
        if buffer is not None:
            buffer.append(data)
            self.size += len(data)
        else:
            sent = self._send(data)
            if sent == len(data) or sent < 0:
                return
            self.buffer = [data[sent:]]
            self.size = len(data) - sent
            self._watch()
        if self.size > WRITE_HIGH_WATER and not self.write_paused:
            self.write_paused = True
            self.client.pause_writing()

    def is_closing(self) -> bool:
        return self.state >= _CLOSING

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        if self.state == _OPEN:
            self.state = _EOF
            if self.buffer is None:
                self._shutdown()

    def close(self) -> None:
        if self.state >= _CLOSING:
            return
        self.state = _CLOSING
        self.reading = False
        if self.buffer is None:
            self._close(None)
        else:
            self._watch()

    def abort(self) -> None:
        if self.state != _CLOSED:
            self._close(None)

    def pause_reading(self) -> None:
        if self.reading:
            self.reading = False
            self._watch()

    def resume_reading(self) -> None:
        if not self.reading and self.state < _CLOSING:
            self.reading = True
            self._watch()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "peername":
            return self.peer
        if name == "socket":
            return None if self.state == _CLOSED else SocketOptions(self.fd)
        if name == "sockname" and self.state != _CLOSED:
            return _on_socket(self.fd, "getsockname")
        return default

    # --- events ------------------------------------------------------------

    def _readable(self) -> None:
        try:
            size = os.readv(self.fd, _BUFFERS)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._close(exc)
            return
        if size:
            try:
                self.client.data_received(_BUFFER[:size])
            except Exception as exc:  # a bug: as asyncio's transports, close this connection only
                log.exception("fatal error in data_received of %s:%s", *self.peer)
                self._close(exc)
        else:  # the peer closed its side: as asyncio's transport after eof_received() -> False
            self.close()

    def _writable(self) -> None:
        buffer = self.buffer
        assert buffer is not None
        data = buffer[0] if len(buffer) == 1 else b"".join(buffer)
        sent = self._send(data)
        if sent < 0:
            return
        if sent == len(data):
            self.buffer = None
            self.size = 0
        elif sent:
            self.buffer = [data[sent:]]
            self.size = len(data) - sent
        if self.write_paused and self.size <= _WRITE_LOW_WATER:
            self.write_paused = False
            self.client.resume_writing()  # may write again
        if self.buffer is None:
            if self.state == _CLOSING:
                self._close(None)
                return
            if self.state == _EOF:
                self._shutdown()
            self._watch()

    def _send(self, data: bytes) -> int:
        """What the kernel took of ``data`` (-1: the connection failed and is closed)."""
        try:
            return os.write(self.fd, data)
        except (BlockingIOError, InterruptedError):
            return 0
        except OSError as exc:
            self._close(exc)
            return -1

    def _watch(self) -> None:
        """Register fd in the epoll for what it waits for now (not at all: unregistered,
        so a dead socket whose reading is paused cannot report itself over and over)."""
        if self.state == _CLOSED:
            return
        events = (_IN if self.reading else 0) | (_OUT if self.buffer is not None else 0)
        if events == self.events:
            return
        epoll = self.poller.epoll
        if not self.events:
            epoll.register(self.fd, events)
        elif events:
            epoll.modify(self.fd, events)
        else:
            epoll.unregister(self.fd)
        self.events = events

    def _shutdown(self) -> None:
        try:
            _on_socket(self.fd, "shutdown", socket.SHUT_WR)
        except OSError as exc:
            self._close(exc)

    def _close(self, exc: Exception | None) -> None:
        """Close the socket now; ``connection_lost`` follows in a callback of its own."""
        fd = self.fd
        poller = self.poller
        self.state = _CLOSED
        self.buffer = None
        self.reading = False
        if self.events:
            self.events = 0
            poller.epoll.unregister(fd)
        del poller.transports[fd]
        os.close(fd)
        poller.loop.call_soon(self._lost, exc)

    def _lost(self, exc: Exception | None) -> None:
        self.poller.closed()
        self.client.connection_lost(exc)


class SocketOptions:
    """What ``get_extra_info("socket")`` gives: a socket's options, without owning it."""

    __slots__ = ("fd",)

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def setsockopt(self, level: int, option: int, value: int | bytes) -> None:
        _on_socket(self.fd, "setsockopt", level, option, value)

    def getsockopt(self, level: int, option: int) -> int:
        result: int = _on_socket(self.fd, "getsockopt", level, option)
        return result


def _on_socket(fd: int, method: str, *args: Any) -> Any:
    """Call a socket method on ``fd`` through a socket object that does not keep it."""
    sock = socket.socket(fileno=fd)
    try:
        return getattr(sock, method)(*args)
    finally:
        sock.detach()


def prepare(fd: int, family: int) -> None:
    """An accepted socket as the poller serves it: non-blocking, without Nagle's delay."""
    sock = socket.SocketType(family, socket.SOCK_STREAM, 0, fd)
    try:
        sock.setblocking(False)
        if family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    finally:
        sock.detach()


def peer_address(addr: Any) -> tuple[str, int]:
    """``accept``'s address as the (host, port) a Client keeps, the host shared."""
    return sys.intern(str(addr[0])), int(addr[1])
