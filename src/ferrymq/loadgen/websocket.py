"""Client side of MQTT over WebSocket (RFC 6455) for ``ferrymq bench --ws``.

:class:`WebSocketStream` sits between the socket and an MQTT protocol object:
it is the socket's ``asyncio.Protocol`` and the inner protocol's transport.
It sends the HTTP/1.1 upgrade (subprotocol ``mqtt``), checks the 101 answer
and its ``Sec-WebSocket-Accept``, and only then calls the inner
``connection_made``, so the inner protocol sees a plain MQTT byte stream.

Why it is hand-written rather than a WebSocket library: the load generator
writes a whole burst of pre-encoded packets at once, and this way every
``write`` becomes exactly one masked binary frame (masked 8 bytes at a time by
aiohttp's C helper, else with one big-integer XOR; never a per-byte loop),
and every socket read becomes one ``inner.data_received`` call, however the
server split its frames. Server
frames are not reassembled: MQTT over WebSocket is a byte stream, so binary
and continuation payloads are passed on as they arrive. Pings are answered,
a close frame is answered and closes the socket, and anything else (text
frames, masked or oversized server frames, a bad upgrade) is reported
through ``on_error`` and closes the connection.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
from collections.abc import Callable
from typing import Any

try:  # aiohttp serves the broker's WebSocket listener, so it is installed anyway
    from aiohttp._websocket.mask import (  # type: ignore[import-not-found]
        _websocket_mask_cython as _mask_in_place,
    )
except ImportError:  # pragma: no cover - aiohttp without its C extensions, or moved
    _mask_in_place = None

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
SUBPROTOCOL = "mqtt"
MAX_FRAME = 1 << 20  # largest frame sent; longer writes become several frames
MAX_RESPONSE = 16 * 1024  # longest upgrade response accepted
_CLOSE_NORMAL = b"\x03\xe8"  # close status 1000
_CLOSE_PROTOCOL_ERROR = b"\x03\xea"  # close status 1002


def accept_key(key: str) -> str:
    """The ``Sec-WebSocket-Accept`` a server must answer to ``key``."""
    return base64.b64encode(hashlib.sha1(key.encode() + GUID).digest()).decode()


def mask_xor(key: bytes, data: bytes | memoryview) -> bytes:
    """``data`` XOR the 4-byte ``key`` repeated: one big-integer XOR over the whole payload."""
    n = len(data)
    if not n:
        return b""
    keys = memoryview(key * ((n >> 2) + 1))[:n]
    value = int.from_bytes(data, "little") ^ int.from_bytes(keys, "little")
    return value.to_bytes(n, "little")


def frame(opcode: int, data: bytes | memoryview, key: bytes | None = None) -> bytes | bytearray:
    """One final client frame (masked with ``key``, random by default) carrying ``data``.

    With aiohttp's C masker (8 bytes at a time, about 0.04 ns a byte against
    1.5-2.7 for the big-integer XOR) the frame is built in one buffer: the
    header and key, pre-masked so that the masking restores them, then the
    payload; the whole buffer is then masked in place with the key rotated to
    the payload's offset. So a frame costs one allocation and one copy of the
    payload (why large allocations matter: :func:`keep_large_blocks`).
    """
    if key is None:
        key = os.urandom(4)
    n = len(data)
    if n < 126:
        prefix = bytes((0x80 | opcode, 0x80 | n)) + key
    elif n < 65536:
        prefix = bytes((0x80 | opcode, 0xFE)) + n.to_bytes(2, "big") + key
    else:
        prefix = bytes((0x80 | opcode, 0xFF)) + n.to_bytes(8, "big") + key
    if _mask_in_place is None:
        return prefix + mask_xor(key, data)
    shift = len(prefix) & 3  # 6, 8 or 14 bytes: buffer byte i gets rotated[i % 4]
    rotated = key[-shift:] + key[:-shift] if shift else key
    buf = bytearray(mask_xor(rotated, prefix))
    buf += data
    _mask_in_place(rotated, buf)
    return buf


def keep_large_blocks(size: int = 8 << 20) -> None:
    """Free one ``size`` block, so that glibc keeps freed blocks up to that size for reuse.

    A ws write holds two large buffers at once (the burst, then its frame).
    Freed together they exceeded glibc's heap trim threshold (twice the
    largest freed mmap'd block, about one burst), so the memory went back to
    the kernel and was faulted in again on every write: 4 million page faults
    in 8 s and half the throughput with 1 KB messages. Freeing one mmap'd
    block raises both thresholds to its size (glibc's dynamic mmap
    threshold); ``bytes(size)`` is calloc'd, so no page is touched. Other
    allocators simply ignore it.
    """
    block = bytes(size)
    del block


def upgrade_request(host: str, port: int, path: str, key: str) -> bytes:
    """The HTTP/1.1 request that opens an MQTT WebSocket at ``path``."""
    if ":" in host:  # an IPv6 literal
        host = f"[{host}]"
    return (
        f"GET {path} HTTP/1.1\r\n"
        f"Host: {host}:{port}\r\n"
        "Upgrade: websocket\r\n"
        "Connection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\n"
        "Sec-WebSocket-Version: 13\r\n"
        f"Sec-WebSocket-Protocol: {SUBPROTOCOL}\r\n"
        "\r\n"
    ).encode()


def check_response(head: bytes, key: str) -> str:
    """Why the upgrade response ``head`` (up to the blank line) is refused; "" if it is fine."""
    lines = head.decode("latin-1").split("\r\n")
    status = lines[0].split(" ", 2)
    if len(status) < 2 or not status[0].startswith("HTTP/"):
        return f"not an HTTP response: {lines[0][:80]!r}"
    if status[1] != "101":
        return f"WebSocket upgrade refused: HTTP {' '.join(status[1:])[:80]}"
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    if headers.get("upgrade", "").lower() != "websocket":
        return "WebSocket upgrade: no 'Upgrade: websocket' header"
    if "upgrade" not in headers.get("connection", "").lower():
        return "WebSocket upgrade: no 'Connection: Upgrade' header"
    if headers.get("sec-websocket-accept") != accept_key(key):
        return "WebSocket upgrade: wrong Sec-WebSocket-Accept"
    protocol = headers.get("sec-websocket-protocol")
    if protocol is not None and protocol != SUBPROTOCOL:
        return f"WebSocket upgrade: server chose subprotocol {protocol[:40]!r}"
    return ""


class WebSocketStream(asyncio.Protocol):
    """One client WebSocket: the socket's protocol and ``inner``'s transport."""

    __slots__ = (
        "closed",
        "failed",
        "host",
        "inner",
        "key",
        "left",
        "on_error",
        "path",
        "pending",
        "port",
        "transport",
        "upgraded",
    )

    def __init__(
        self,
        inner: asyncio.Protocol,
        host: str,
        port: int,
        path: str,
        on_error: Callable[[str], None],
    ) -> None:
        self.inner = inner
        self.host = host
        self.port = port
        self.path = path
        self.on_error = on_error  # told why the upgrade or the stream failed
        self.transport: asyncio.Transport | None = None
        self.key = base64.b64encode(os.urandom(16)).decode()
        self.upgraded = False
        self.failed = False
        self.closed = False
        self.pending = b""  # response head, or an incomplete frame header / control frame
        self.left = 0  # payload bytes of the current binary/continuation frame still to come

    # --- the socket's protocol ------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is no subclass
        request = upgrade_request(self.host, self.port, self.path, self.key)
        transport.write(request)  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        if self.upgraded:
            self._frames(data)
            return
        if self.failed:
            return
        head = self.pending + data
        end = head.find(b"\r\n\r\n")
        if end < 0:
            if len(head) > MAX_RESPONSE:
                self._fail("WebSocket upgrade: response head too long")
            else:
                self.pending = head
            return
        self.pending = b""
        why = check_response(head[:end], self.key)
        if why:
            self._fail(why)
            return
        self.upgraded = True
        self.inner.connection_made(self)  # type: ignore[arg-type]
        rest = head[end + 4 :]
        if rest and not self.closed:
            self._frames(rest)

    def pause_writing(self) -> None:
        if self.upgraded:
            self.inner.pause_writing()

    def resume_writing(self) -> None:
        if self.upgraded:
            self.inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.upgraded:
            self.inner.connection_lost(exc)
        elif not self.failed:
            self.failed = True
            self.on_error(f"closed during the WebSocket upgrade: {exc or 'EOF'}")

    # --- frames from the server -------------------------------------------------

    def _frames(self, data: bytes) -> None:
        """Pass the binary payloads in ``data`` to ``inner`` in one call; act on control frames."""
        if self.pending:
            data = self.pending + data
            self.pending = b""
        n = len(data)
        view = memoryview(data)
        parts: list[memoryview] = []
        pos = 0
        left = self.left
        close: bytes | None = None  # payload of a close frame, once one arrived
        while pos < n:
            if left:
                take = min(left, n - pos)
                parts.append(view[pos : pos + take])
                pos += take
                left -= take
                continue
            if n - pos < 2:
                break
            b0, b1 = data[pos], data[pos + 1]
            length = b1 & 0x7F
            start = pos + 2
            if length == 126:
                start += 2
                if start > n:
                    break
                length = int.from_bytes(view[pos + 2 : start], "big")
            elif length == 127:
                start += 8
                if start > n:
                    break
                length = int.from_bytes(view[pos + 2 : start], "big")
            opcode = b0 & 0x0F
            if b1 & 0x80 or b0 & 0x70:
                self._stream_error("masked frame or reserved bits from the server")
                return
            if opcode == 0x2 or opcode == 0x0:
                pos = start
                left = length
                continue
            if opcode < 0x8:
                self._stream_error(f"WebSocket frame with opcode {opcode} (MQTT needs binary)")
                return
            if length > 125 or not b0 & 0x80:
                self._stream_error("oversized or fragmented WebSocket control frame")
                return
            if start + length > n:
                break
            payload = bytes(view[start : start + length])
            pos = start + length
            if opcode == 0x9:
                self._send(frame(0xA, payload))
            elif opcode == 0x8:
                close = payload
                break
        self.left = left
        if pos < n and close is None:
            self.pending = bytes(view[pos:])
        if parts:
            if len(parts) > 1:
                self.inner.data_received(b"".join(parts))
            else:
                part = parts[0]
                self.inner.data_received(data if len(part) == n else bytes(part))
        if close is not None:
            self._closed_by_server(close)

    def _closed_by_server(self, payload: bytes) -> None:
        self.left = 0
        self.pending = b""
        code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
        self._send(frame(0x8, payload[:2]))  # the closing handshake: echo the status
        self._close_socket()
        if code not in (1000, 1005) and not self.failed:  # 1005: no status given
            self.failed = True
            self.on_error(f"WebSocket closed by the server, status {code}")

    # --- failures -----------------------------------------------------------------

    def _fail(self, why: str) -> None:
        """The upgrade failed: report it, close the socket."""
        self.failed = True
        self.on_error(why)
        self._close_socket()

    def _stream_error(self, why: str) -> None:
        """The server broke the WebSocket protocol: report it, close with status 1002."""
        if not self.closed:
            self._send(frame(0x8, _CLOSE_PROTOCOL_ERROR))
            self._close_socket()
        if not self.failed:
            self.failed = True
            self.on_error(why)

    def _send(self, data: bytes | bytearray) -> None:
        transport = self.transport
        if transport is not None and not transport.is_closing():
            transport.write(data)

    def _close_socket(self) -> None:
        if not self.closed:
            self.closed = True
            if self.transport is not None:
                self.transport.close()

    # --- the inner protocol's transport -------------------------------------------

    def write(self, data: bytes) -> None:
        """``data`` as one masked binary frame (several past ``MAX_FRAME``)."""
        transport = self.transport
        if transport is None or not self.upgraded or self.closed or transport.is_closing():
            return
        if len(data) <= MAX_FRAME:
            transport.write(frame(0x2, data))
            return
        view = memoryview(data)
        transport.write(
            b"".join(frame(0x2, view[i : i + MAX_FRAME]) for i in range(0, len(data), MAX_FRAME))
        )

    def close(self) -> None:
        """Close the WebSocket (a close frame when upgraded) and the socket."""
        if self.closed:
            return
        if self.upgraded:
            self._send(frame(0x8, _CLOSE_NORMAL))
        self._close_socket()

    def is_closing(self) -> bool:
        return self.closed or self.transport is None or self.transport.is_closing()

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        if self.transport is not None:
            self.transport.set_write_buffer_limits(high, low)

    def get_write_buffer_size(self) -> int:
        return self.transport.get_write_buffer_size() if self.transport is not None else 0

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if self.transport is None:
            return default
        return self.transport.get_extra_info(name, default)
