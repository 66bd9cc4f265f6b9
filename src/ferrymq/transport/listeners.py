"""Listener lifecycle: bind, accept, limit, hand each socket to MQTT (tcp/ssl) or aiohttp (ws/wss).

Accepting is done here rather than by ``loop.create_server`` so that every
step before the protocol runs is under the listener's control: the limits
are applied before any work is spent on a socket, a PROXY protocol header is
consumed byte-exactly before TLS or HTTP see the stream, and a failed TLS
handshake surfaces as an exception this code logs (once, with the peer
address) and counts, instead of vanishing inside the event loop. A plain
TCP connection is handed, as a bare file descriptor, to the listener's
``Poller`` (``poller.py``: its own transport on the raw socket, 140 bytes a
connection where uvloop's takes 1,200), at once and without a socket
object, task or coroutine, or after its PROXY header; TLS and WebSocket go
to the event loop's transports.

Rules kept here:
- max_connections: a socket beyond the limit is closed at once;
- max_conn_rate: a token bucket; when empty, accepting pauses (new
  connections wait in the kernel backlog) until a token is due;
- every step before CONNECT is bounded by ``connect_timeout``: the PROXY
  header, the TLS handshake, the HTTP upgrade, then the CONNECT itself;
- whatever goes wrong with one socket closes that socket only;
- the process's descriptor table is grown before an accept needs the room
  (``descriptors.py``: growing it inside ``accept4`` stalled the loop 10-30 ms).
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import socket
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ferrymq import __version__
from ferrymq.core.client import Client
from ferrymq.transport import descriptors, poller, proxy_protocol
from ferrymq.transport.options import ListenerOptions
from ferrymq.transport.tcp import MQTTProtocol

if TYPE_CHECKING:
    import ssl

    from aiohttp import web

    from ferrymq.core.broker import Broker

log = logging.getLogger("ferrymq.listeners")

BACKLOG = 4096
_ACCEPT_BATCH = 64  # accepts per readiness event, as asyncio's own server does
_RESOURCE_ERRORS = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)
_TABLE = descriptors.TABLE

Address = tuple[str, int]


class ListenerProtocol(MQTTProtocol):
    """MQTT over TCP or TLS on a managed listener: counted, with the real peer and cert identity."""

    __slots__ = ("owner", "peer")

    def __init__(self, owner: Listener, peer: Address | None) -> None:
        super().__init__(owner.broker, owner.id, owner.spec.zone)
        self.owner = owner
        self.peer = peer

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        owner = self.owner
        owner.opened()
        client = self.client
        assert client is not None
        if self.peer is not None:
            client.peer = self.peer
        if owner.cert_username or owner.cert_clientid:
            from ferrymq.transport.tls import apply_cert_identity

            apply_cert_identity(client, transport, owner.cert_username, owner.cert_clientid)

    def connection_lost(self, exc: Exception | None) -> None:
        self.owner.closed()
        super().connection_lost(exc)


class Listener:
    """One configured listener: its sockets, limits and counters."""

    def __init__(self, broker: Broker, spec: ListenerOptions) -> None:
        self.broker = broker
        self.spec = spec
        self.id = spec.id  # one string every connection of this listener shares
        self.ssl: ssl.SSLContext | None = None
        if spec.tls:  # transport.tls imports ssl (OpenSSL: 6 MiB of RSS) only for TLS
            from ferrymq.transport.tls import server_context

            self.ssl = server_context(spec)
        self.cert_username = spec.peer_cert_as_username
        self.cert_clientid = spec.peer_cert_as_clientid
        self.sockets: list[socket.socket] = []
        self.port = spec.port
        self.current = 0  # sockets handed to a protocol and not closed yet
        self.pending = 0  # sockets still in the PROXY header or TLS handshake
        self.shutdown_count: dict[str, int] = {}
        self.ws_connections: dict[Any, Any] = {}  # aiohttp handler -> WSConnection
        self.http: web.Server | None = None
        # Plain TCP: its connections on their raw sockets, in this listener's epoll.
        self.raw = poller.AVAILABLE and not (spec.tls or spec.websocket)
        self.poller: poller.Poller | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._accepting = False
        self._resume: asyncio.TimerHandle | None = None
        self._tokens = max(1.0, spec.max_conn_rate)
        self._refilled = time.monotonic()

    # --- counters -------------------------------------------------------

    def opened(self) -> None:
        self.current += 1

    def closed(self) -> None:
        self.current -= 1

    def count(self, reason: str) -> None:
        self.shutdown_count[reason] = self.shutdown_count.get(reason, 0) + 1

    # --- lifecycle --------------------------------------------------------

    async def start(self) -> None:
        spec = self.spec
        if spec.websocket:
            from aiohttp import web

            from ferrymq.transport.websocket import make_handler

            self.http = web.Server(
                make_handler(self),
                keepalive_timeout=self.broker.settings.connect_timeout,
                access_log=None,
            )
        self.sockets = bind_sockets(spec.bind, spec.port)
        self.port = self.sockets[0].getsockname()[1]
        self._accepting = True
        if self.raw:
            self.poller = poller.Poller(self.broker.loop, self.closed, self.broker.flow.polled)
        self._watch(True)

    def close(self) -> None:
        """Stop accepting: close the listening sockets and abandon unfinished handshakes."""
        if self._accepting:
            self._accepting = False
            self._watch(False)
        if self._resume is not None:
            self._resume.cancel()
            self._resume = None
        for sock in self.sockets:
            sock.close()
        for task in list(self._tasks):
            task.cancel()

    async def wait_closed(self) -> None:
        """Close what is left of the HTTP side (connections that never upgraded)."""
        self.close()
        if self.poller is not None:
            self.poller.close()
            self.poller = None
        if self.http is not None:
            http, self.http = self.http, None
            await http.shutdown(1.0)

    def _watch(self, on: bool) -> None:
        loop = self.broker.loop
        for sock in self.sockets:
            if sock.fileno() < 0:
                continue
            if on:
                loop.add_reader(sock.fileno(), self._accept, sock)
            else:
                loop.remove_reader(sock.fileno())

    def _pause(self, seconds: float) -> None:
        self._watch(False)
        self._resume = self.broker.loop.call_later(seconds, self._resumed)

    def _resumed(self) -> None:
        self._resume = None
        if self._accepting:
            self._watch(True)

    # --- accepting ----------------------------------------------------------

    def _accept(self, lsock: socket.socket) -> None:
        spec = self.spec
        rate = spec.max_conn_rate
        for _ in range(_ACCEPT_BATCH):
            if rate:
                now = time.monotonic()
                self._tokens = min(max(1.0, rate), self._tokens + (now - self._refilled) * rate)
                self._refilled = now
                if self._tokens < 1.0:
                    self._pause((1.0 - self._tokens) / rate)
                    return
            try:
                fd, addr = lsock._accept()  # type: ignore[attr-defined]  # a bare descriptor
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in _RESOURCE_ERRORS:
                    log.warning("listener %s: cannot accept (%s); pausing 1 s", spec.id, exc)
                    self._pause(1.0)
                    return
                continue  # ECONNABORTED and the like: that connection is gone
            if fd >= _TABLE.grow_at:  # room for the next ones, made off the loop
                _TABLE.accepted(fd)
            if rate:
                self._tokens -= 1.0
            if spec.max_connections and self.current + self.pending >= spec.max_connections:
                self.count("max_connections")
                os.close(fd)
                continue
            if self.raw and not spec.proxy_protocol:
                self._attach(fd, lsock.family, addr)
                continue
            conn = socket.socket(lsock.family, lsock.type, lsock.proto, fileno=fd)
            conn.setblocking(False)
            if conn.family in (socket.AF_INET, socket.AF_INET6):
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.pending += 1
            task = self.broker.loop.create_task(self._setup(conn, (str(addr[0]), int(addr[1]))))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _setup(self, conn: socket.socket, addr: Address) -> None:
        """PROXY header, TLS handshake, then hand the socket to its protocol."""
        spec = self.spec
        loop = self.broker.loop
        timeout = self.broker.settings.connect_timeout
        real: Address | None = None
        step = "PROXY header"
        handed = False  # once the loop owns the socket, only the loop closes it
        try:
            if spec.proxy_protocol:
                real = await asyncio.wait_for(_read_proxy_header(loop, conn), timeout)
            step = "TLS handshake" if self.ssl is not None else "setup"
            if self.raw:
                handed = True
                family = conn.family
                self._attach(conn.detach(), family, real or addr)
                return
            factory = self._factory(real)
            handed = True
            if self.ssl is not None:
                await loop.connect_accepted_socket(
                    factory, conn, ssl=self.ssl, ssl_handshake_timeout=timeout
                )
            else:
                await loop.connect_accepted_socket(factory, conn)
        except asyncio.CancelledError:
            if not handed:
                conn.close()
            raise
        except Exception as exc:
            if not handed:
                conn.close()
            peer = real or addr
            if isinstance(exc, TimeoutError) or "taking longer" in str(exc):
                reason, text = "timeout", f"{step} timed out"
            elif isinstance(exc, proxy_protocol.ProxyProtocolError):
                reason, text = "proxy_error", f"bad PROXY header: {exc}"
            elif step == "TLS handshake":
                reason, text = "ssl_error", f"TLS handshake failed: {_ssl_reason(exc)}"
            else:
                reason, text = "error", f"{step} failed: {exc!r}"
            self.count(reason)
            log.info("listener %s: %s:%s %s", spec.id, peer[0], peer[1], text)
        finally:
            self.pending -= 1

    def _attach(self, fd: int, family: int, addr: Any) -> None:
        """Hand an accepted plain TCP socket to this listener's poller."""
        assert self.poller is not None
        try:
            poller.prepare(fd, family)
        except OSError:
            os.close(fd)  # gone already
            return
        self.opened()
        self.poller.attach(fd, poller.peer_address(addr), self._client)

    def _client(self, transport: poller.SocketTransport) -> Client:
        return Client(self.broker, transport, self.id, self.spec.zone)

    def _factory(self, peer: Address | None) -> Callable[[], asyncio.BaseProtocol]:
        if not self.spec.websocket:
            return lambda: ListenerProtocol(self, peer)
        from ferrymq.transport.websocket import WSConnection

        http = self.http
        assert http is not None
        return lambda: WSConnection(self, http(), peer)

    # --- reporting ------------------------------------------------------------

    def describe(self) -> dict[str, Any]:
        """This listener in the shape of EMQX 4's ``GET /api/v4/listeners``."""
        spec = self.spec
        host = spec.bind
        listen_on = f"[{host}]:{self.port}" if ":" in host else f"{host}:{self.port}"
        item: dict[str, Any] = {
            "listen_on": listen_on,
            "identifier": f"mqtt:{spec.kind}:{spec.name}",
            "name": spec.name,
            "protocol": f"mqtt:{spec.kind}",
            "bind": host,
            "port": self.port,
            "zone": spec.zone,
            "running": self._accepting,
            "current_conns": self.current + self.pending,
            "max_conns": spec.max_connections,
            "max_conn_rate": spec.max_conn_rate,
            "acceptors": 1,
            # EMQX renders esockd's proplist: one {reason: count} per reason.
            "shutdown_count": [{k: v} for k, v in sorted(self.shutdown_count.items())],
            "proxy_protocol": spec.proxy_protocol,
        }
        if spec.websocket:
            item["path"] = spec.path
        if spec.tls:
            item["verify_peer"] = spec.verify_peer
        return item


class ListenerManager:
    """All listeners of the node: started and stopped together, described for the API."""

    def __init__(self, broker: Broker, specs: list[ListenerOptions]) -> None:
        self.broker = broker
        # TLS contexts are built here, so a bad certificate fails the start early.
        self.listeners = [Listener(broker, spec) for spec in specs]

    async def start(self) -> None:
        """Bind every listener; if one cannot bind, close those already open."""
        started: list[Listener] = []
        try:
            for listener in self.listeners:
                await listener.start()
                started.append(listener)
        except BaseException:
            for listener in started:
                await listener.wait_closed()
            raise
        for listener in self.listeners:
            spec = listener.spec
            suffix = spec.path if spec.websocket else ""
            for sock in listener.sockets:
                host, port = sock.getsockname()[:2]
                log.info(
                    "ferrymq %s: MQTT listener %s on %s://%s:%s%s",
                    __version__,
                    spec.id,
                    spec.kind,
                    host,
                    port,
                    suffix,
                )

    def close(self) -> None:
        """Stop accepting on every listener; established connections stay."""
        for listener in self.listeners:
            listener.close()

    async def wait_closed(self) -> None:
        for listener in self.listeners:
            await listener.wait_closed()

    def describe(self) -> list[dict[str, Any]]:
        return [listener.describe() for listener in self.listeners]

    def get(self, kind: str, name: str = "default") -> Listener | None:
        for listener in self.listeners:
            if listener.spec.kind == kind and listener.spec.name == name:
                return listener
        return None


def bind_sockets(host: str, port: int, backlog: int = BACKLOG) -> list[socket.socket]:
    """Listening sockets for every address ``host`` resolves to (one port for all);
    also the management API's and the dashboard's (``deferred.DeferredListener``)."""
    # An ASCII name as bytes: a str would be IDNA-encoded, importing unicodedata (0.5 MB).
    name = host.encode() if host.isascii() else host
    infos = socket.getaddrinfo(name or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    sockets: list[socket.socket] = []
    seen: set[Any] = set()
    try:
        for family, kind, proto, _, sockaddr in infos:
            if sockaddr in seen:
                continue
            seen.add(sockaddr)
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            if port == 0 and len(sockets) > 1:
                sockaddr = (sockaddr[0], sockets[0].getsockname()[1], *sockaddr[2:])
            try:
                sock.bind(sockaddr)
            except OSError as exc:
                # typeshed's (int, bytes) address is a Python's without IPv6, not ours.
                raise OSError(
                    exc.errno,
                    f"cannot bind {sockaddr[0]}:{sockaddr[1]}: {exc.strerror}",  # type: ignore[str-bytes-safe]
                ) from None
            sock.listen(backlog)
            sock.setblocking(False)
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return sockets


async def _read_proxy_header(
    loop: asyncio.AbstractEventLoop, conn: socket.socket
) -> Address | None:
    """Consume exactly the PROXY header from ``conn``; the address it names, if any."""
    buf = b""
    fd = conn.fileno()
    while True:
        waiter = loop.create_future()
        loop.add_reader(fd, _wake, waiter)
        try:
            await waiter
        finally:
            loop.remove_reader(fd)
        try:
            peek = conn.recv(proxy_protocol.V1_MAX + 1024, socket.MSG_PEEK)
        except (BlockingIOError, InterruptedError):
            continue
        if not peek:
            raise ConnectionResetError("closed before the PROXY header")
        size = proxy_protocol.header_length(buf + peek)
        if size is None:
            buf += conn.recv(len(peek))
            continue
        buf += conn.recv(size - len(buf))
        if len(buf) == size:  # else a v2 address block still on its way
            return proxy_protocol.parse(buf)


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


def _ssl_reason(exc: BaseException) -> str:
    import ssl  # a TLS listener's: loaded

    if isinstance(exc, ssl.SSLError) and exc.reason:
        return str(exc.reason).lower().replace("_", " ")
    return str(exc) or type(exc).__name__
