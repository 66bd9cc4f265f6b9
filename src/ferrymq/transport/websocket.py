"""MQTT over WebSocket (ws and wss listeners) with aiohttp.

aiohttp does the HTTP upgrade, the subprotocol negotiation (``mqtt``,
``mqttv3.1``), unmasking and reassembly of fragmented frames, pings and the
closing handshake. Each binary message is fed to a core ``Client`` as a chunk
of the MQTT byte stream, so packets split across frames and several packets
in one frame both work. The Client's replies go out as unmasked binary
frames written straight to the socket transport: building a frame header is
a few bytes, and it keeps writes synchronous, as the Client expects.

Rules kept here:
- a connection that has not upgraded within ``connect_timeout`` is closed;
- a text frame breaks MQTT over WebSocket: the connection is closed;
- the socket's write flow control (pause/resume) reaches the Client through
  :class:`WSConnection`, which sits between the transport and aiohttp;
- pausing the Client's reads stops consuming messages, so aiohttp's own
  queue limit pauses the socket;
- a request that is not upgraded (bad HTTP, wrong path, no Upgrade header)
  is counted and logged once with the peer address; silent probes are not.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from typing import TYPE_CHECKING, Any, cast

from aiohttp import WSMsgType, web

from ferrymq.core.client import Client
from ferrymq.transport.tcp import WRITE_HIGH_WATER
from ferrymq.transport.tls import apply_cert_identity

if TYPE_CHECKING:
    from ferrymq.transport.listeners import Listener

log = logging.getLogger("ferrymq.websocket")

SUBPROTOCOLS = ("mqtt", "mqttv3.1")
MAX_FRAME = 65536  # largest frame sent: longer writes go out as several frames
_CLOSE_NORMAL = b"\x88\x02\x03\xe8"  # close frame, status 1000
_ENDED = (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED)


def frame(data: bytes) -> bytes:
    """``data`` as one unmasked binary frame (server to client)."""
    n = len(data)
    if n < 126:
        return bytes((0x82, n)) + data
    if n < 65536:
        return b"\x82\x7e" + n.to_bytes(2, "big") + data
    return b"\x82\x7f" + n.to_bytes(8, "big") + data


class WSTransport:
    """What a core Client needs of a transport, over one upgraded WebSocket."""

    __slots__ = ("closing", "handler", "peer", "reading", "receiving", "transport")

    def __init__(
        self,
        transport: asyncio.Transport,
        peer: tuple[str, int],
        handler: asyncio.Task[Any] | None = None,
    ) -> None:
        self.transport = transport
        self.peer = peer
        self.reading = asyncio.Event()
        self.reading.set()
        # The request handler's task, which does the closing handshake; ``receiving``
        # while it waits for the next message, so close() has to wake it.
        self.handler = handler
        self.receiving = False
        self.closing = False

    def write(self, data: bytes) -> None:
        transport = self.transport
        if transport.is_closing():
            return
        if len(data) <= MAX_FRAME:
            transport.write(frame(data))
            return
        # One flush can hold megabytes; clients cap message sizes (aiohttp and
        # browsers at a few MiB), and MQTT may be split across frames anyway.
        view = memoryview(data)
        transport.writelines(
            [frame(bytes(view[i : i + MAX_FRAME])) for i in range(0, len(data), MAX_FRAME)]
        )

    def close(self) -> None:
        """Have the handler close: a close frame after what was written, then read (and
        drop) what the peer still sends until its close frame, then close the socket."""
        self.reading.set()
        if self.closing:
            return
        self.closing = True
        if self.handler is None:
            transport = self.transport
            if not transport.is_closing():
                transport.write(_CLOSE_NORMAL)
                transport.close()
        elif self.receiving:
            self.handler.cancel()  # only aiohttp's receive() is interrupted (see make_handler)

    def can_write_eof(self) -> bool:
        return False  # a close frame, not a TCP half-close, ends a WebSocket

    def write_eof(self) -> None:
        raise NotImplementedError("a WebSocket has no half-close (can_write_eof is False)")

    def abort(self) -> None:
        self.transport.abort()

    def is_closing(self) -> bool:
        return self.transport.is_closing()

    def pause_reading(self) -> None:
        self.reading.clear()

    def resume_reading(self) -> None:
        self.reading.set()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "peername":
            return self.peer
        return self.transport.get_extra_info(name, default)


class WSConnection(asyncio.Protocol):
    """The protocol of one ws/wss socket: wraps aiohttp's request handler.

    It counts the connection on its listener, closes it when it does not
    upgrade in time, and forwards write flow control to the MQTT Client once
    there is one.
    """

    __slots__ = ("client", "failure", "handler", "owner", "peer", "spoke", "timer", "transport")

    def __init__(self, owner: Listener, handler: Any, peer: tuple[str, int] | None) -> None:
        self.owner = owner
        self.handler = handler
        self.peer = peer
        self.client: Client | None = None
        self.failure = ""  # why the request was not upgraded, when the handler knows
        self.spoke = False  # the peer sent something
        self.timer: asyncio.TimerHandle | None = None
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses
        self.transport = transport
        transport.set_write_buffer_limits(high=WRITE_HIGH_WATER)
        owner = self.owner
        owner.opened()
        owner.ws_connections[self.handler] = self
        loop = owner.broker.loop
        self.timer = loop.call_later(owner.broker.settings.connect_timeout, self._timeout)
        self.handler.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        self.spoke = True
        self.handler.data_received(data)

    def eof_received(self) -> bool | None:
        return self.handler.eof_received()  # type: ignore[no-any-return]

    def pause_writing(self) -> None:
        self.handler.pause_writing()
        if self.client is not None:
            self.client.pause_writing()

    def resume_writing(self) -> None:
        self.handler.resume_writing()
        if self.client is not None:
            self.client.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        owner = self.owner
        owner.ws_connections.pop(self.handler, None)
        owner.closed()
        client = self.client
        if client is not None:
            client.transport.resume_reading()  # a paused handler must see the end
            client.connection_lost(exc)  # also ends a closing client's linger timer
        elif self.spoke and self.failure != "timeout" and self.transport is not None:
            # Count and log a failed upgrade once; silent probes are not failures.
            owner.count("ws_handshake_error")
            host, port = self.peer or _peer(self.transport)
            why = self.failure or "bad HTTP request, or closed before upgrading"
            log.info(
                "listener %s: %s:%s WebSocket upgrade failed: %s", owner.spec.id, host, port, why
            )
        self.handler.connection_lost(exc)

    def upgraded(self, client: Client) -> None:
        self.client = client
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _timeout(self) -> None:
        self.timer = None
        if self.client is None and self.transport is not None:
            if not self.failure:
                self.failure = "timeout"
                self.owner.count("timeout")
            self.transport.close()


def make_handler(owner: Listener) -> Any:
    """The aiohttp request handler of a ws/wss listener."""
    spec = owner.spec
    broker = owner.broker
    max_msg = max(4 * 1024 * 1024, broker.settings.max_packet_size + 1024)

    async def handle(request: web.BaseRequest) -> web.StreamResponse:
        conn = owner.ws_connections.get(request.protocol)
        if conn is None:  # pragma: no cover - the socket closed meanwhile
            return web.Response(status=503)
        if request.path != spec.path:
            conn.failure = f"no WebSocket endpoint at {request.path[:100]!r}"
            return web.Response(status=404, text=f"MQTT over WebSocket is served at {spec.path}\n")
        ws = web.WebSocketResponse(
            protocols=SUBPROTOCOLS, compress=False, max_msg_size=max_msg, timeout=2.0
        )
        if not ws.can_prepare(request).ok:
            conn.failure = "not a WebSocket upgrade request"
            return web.Response(status=400, text="expected a WebSocket upgrade\n")
        await ws.prepare(request)
        transport = request.transport
        assert transport is not None and conn.transport is not None
        peer = conn.peer or _peer(transport)
        if spec.proxy_header:
            peer = _forwarded(request, peer)
        adapter = WSTransport(conn.transport, peer, asyncio.current_task())
        client = Client(broker, adapter, owner.id, spec.zone)
        apply_cert_identity(client, transport, owner.cert_username, owner.cert_clientid)
        conn.upgraded(client)
        reading = adapter.reading
        feed = client.data_received
        try:
            while not adapter.closing:
                adapter.receiving = True
                try:
                    msg = await ws.receive()
                except asyncio.CancelledError:
                    if not adapter.closing:
                        raise
                    asyncio.current_task().uncancel()  # type: ignore[union-attr]
                    break
                finally:
                    adapter.receiving = False
                if msg.type is WSMsgType.BINARY:
                    if not reading.is_set():
                        await reading.wait()
                    feed(msg.data)
                elif msg.type in _ENDED:
                    break
                else:
                    client.close("not a binary WebSocket frame")
        finally:
            if not client.closing:
                client.connection_lost(None)
        if adapter.closing:
            # From this task, so aiohttp waits (up to its timeout) for the peer's close
            # frame, dropping what comes before it, rather than closing the socket at once.
            await ws.close()
        return ws

    return handle


def _peer(transport: asyncio.BaseTransport) -> tuple[str, int]:
    peer = transport.get_extra_info("peername")
    if isinstance(peer, tuple) and len(peer) >= 2:
        return str(peer[0]), int(peer[1])
    return ("", 0)


def _forwarded(request: web.BaseRequest, peer: tuple[str, int]) -> tuple[str, int]:
    """The client address a trusted proxy put in X-Forwarded-For (first entry)."""
    value = request.headers.get("X-Forwarded-For")
    if not value:
        return peer
    first = value.split(",", 1)[0].strip()
    try:
        host = str(ipaddress.ip_address(first.strip("[]")))
    except ValueError:
        return peer
    port = request.headers.get("X-Forwarded-Port", "")
    return host, int(port) if port.isdigit() and int(port) < 65536 else peer[1]
