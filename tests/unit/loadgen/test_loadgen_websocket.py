"""``ferrymq bench --ws``: the client WebSocket layer in-process (real runs: system/loadgen)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ferrymq.loadgen import websocket
from ferrymq.loadgen.websocket import MAX_FRAME, WebSocketStream, accept_key, frame, mask_xor

KEY = b"\x01\x02\x03\x04"


def slow_mask(key: bytes, data: bytes) -> bytes:
    return bytes(b ^ key[i % 4] for i, b in enumerate(data))


def server_frame(opcode: int, payload: bytes, fin: bool = True) -> bytes:
    """An unmasked frame, as a server sends it."""
    n = len(payload)
    b0 = (0x80 if fin else 0) | opcode
    if n < 126:
        return bytes((b0, n)) + payload
    if n < 65536:
        return bytes((b0, 126)) + n.to_bytes(2, "big") + payload
    return bytes((b0, 127)) + n.to_bytes(8, "big") + payload


def client_frames(data: bytes) -> list[tuple[int, bytes]]:
    """Parse what the client wrote: (opcode, unmasked payload) per frame; all must be masked."""
    out: list[tuple[int, bytes]] = []
    pos = 0
    while pos < len(data):
        b0, b1 = data[pos], data[pos + 1]
        assert b0 & 0x80 and b1 & 0x80, "client frames are final and masked"
        n, pos = b1 & 0x7F, pos + 2
        if n == 126:
            n, pos = int.from_bytes(data[pos : pos + 2], "big"), pos + 2
        elif n == 127:
            n, pos = int.from_bytes(data[pos : pos + 8], "big"), pos + 8
        key, pos = data[pos : pos + 4], pos + 4
        out.append((b0 & 0x0F, slow_mask(key, data[pos : pos + n])))
        pos += n
    assert pos == len(data)
    return out


class FakeSocket:
    """The socket transport under a WebSocketStream: records writes and close."""

    def __init__(self) -> None:
        self.written = bytearray()
        self.closed = False
        self.limits: tuple[int | None, int | None] | None = None

    def write(self, data: bytes) -> None:
        assert not self.closed
        self.written += data

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self.limits = (high, low)

    def take(self) -> bytes:
        data = bytes(self.written)
        self.written.clear()
        return data


class Inner(asyncio.Protocol):
    """The MQTT side: records what the stream hands it."""

    def __init__(self) -> None:
        self.transport: Any = None
        self.chunks: list[bytes] = []
        self.lost = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        assert type(data) is bytes
        self.chunks.append(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True


def response(key: str, status: str = "101 Switching Protocols", **headers: str) -> bytes:
    fields = {
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Accept": accept_key(key),
        "Sec-WebSocket-Protocol": "mqtt",
    }
    fields.update({k.replace("_", "-"): v for k, v in headers.items()})
    lines = [f"HTTP/1.1 {status}"] + [f"{k}: {v}" for k, v in fields.items() if v]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def opened(host: str = "127.0.0.1") -> tuple[WebSocketStream, FakeSocket, Inner, list[str]]:
    """A stream whose upgrade request went out, not yet answered."""
    inner, sock, errors = Inner(), FakeSocket(), []
    stream = WebSocketStream(inner, host, 8083, "/mqtt", errors.append)
    stream.connection_made(sock)  # type: ignore[arg-type]
    return stream, sock, inner, errors


def upgraded() -> tuple[WebSocketStream, FakeSocket, Inner, list[str]]:
    stream, sock, inner, errors = opened()
    stream.data_received(response(stream.key))
    assert inner.transport is stream and not errors
    sock.take()
    return stream, sock, inner, errors


# --- masking and frames ---------------------------------------------------------------


@given(st.binary(min_size=4, max_size=4), st.binary(max_size=3000))
def test_mask_is_the_per_byte_xor(key: bytes, data: bytes) -> None:
    masked = mask_xor(key, data)
    assert masked == slow_mask(key, data)
    assert mask_xor(key, masked) == data


@pytest.fixture(params=["c-masker", "int-xor"])
def masker(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Frames built with aiohttp's C masker (when installed) and with the big-integer XOR."""
    if request.param == "int-xor":
        monkeypatch.setattr(websocket, "_mask_in_place", None)
    elif websocket._mask_in_place is None:
        pytest.skip("aiohttp without its C masker")


@pytest.mark.usefixtures("masker")
@pytest.mark.parametrize("n", [0, 1, 125, 126, 127, 65535, 65536, 70001])
def test_frame_length_encodings(n: int) -> None:
    data = bytes(range(256)) * (n // 256) + bytes(range(n % 256))
    for key in (KEY, b"\xff\x00\xa5\x5a"):
        raw = frame(0x2, data, key)
        assert client_frames(raw) == [(0x2, data)]
        assert raw[:2] == bytes((0x82, 0x80 | (n if n < 126 else 126 if n < 65536 else 127)))
        assert len(raw) == n + 2 + 4 + (0 if n < 126 else 2 if n < 65536 else 8)


# --- the upgrade ---------------------------------------------------------------------------


def test_upgrade_request_and_leftover_frames() -> None:
    stream, sock, inner, errors = opened("::1")
    request = sock.take().decode()
    assert request.startswith("GET /mqtt HTTP/1.1\r\n") and request.endswith("\r\n\r\n")
    assert "Host: [::1]:8083\r\n" in request
    assert "Sec-WebSocket-Protocol: mqtt\r\n" in request
    assert "Sec-WebSocket-Version: 13\r\n" in request
    assert f"Sec-WebSocket-Key: {stream.key}\r\n" in request
    head = response(stream.key)
    stream.data_received(head[:10])  # the response split, with a frame right behind it
    assert inner.transport is None
    stream.data_received(head[10:] + server_frame(0x2, b"\x20\x02\x00\x00"))
    assert inner.transport is stream and not errors
    assert inner.chunks == [b"\x20\x02\x00\x00"]


@pytest.mark.parametrize(
    ("answer", "why"),
    [
        (lambda k: response(k, Sec_WebSocket_Accept=accept_key(k + "x")), "Sec-WebSocket-Accept"),
        (lambda k: response(k, "404 Not Found"), "HTTP 404 Not Found"),
        (lambda k: response(k, Upgrade=""), "Upgrade: websocket"),
        (lambda k: response(k, Sec_WebSocket_Protocol="mqttv5"), "subprotocol 'mqttv5'"),
        (lambda k: b"SSH-2.0-OpenSSH\r\n\r\n", "not an HTTP response"),
    ],
)
def test_bad_upgrade_responses_fail(answer: Any, why: str) -> None:
    stream, sock, inner, errors = opened()
    stream.data_received(answer(stream.key))
    assert len(errors) == 1 and why in errors[0], errors
    assert sock.closed and inner.transport is None
    stream.connection_lost(None)
    assert len(errors) == 1 and not inner.lost  # reported once; the inner never opened


def test_response_without_subprotocol_is_accepted() -> None:
    stream, _, inner, errors = opened()
    stream.data_received(response(stream.key, Sec_WebSocket_Protocol=""))
    assert inner.transport is stream and not errors


def test_closed_during_upgrade_is_reported() -> None:
    stream, _, inner, errors = opened()
    stream.connection_lost(ConnectionResetError("reset"))
    assert errors == ["closed during the WebSocket upgrade: reset"]
    assert not inner.lost


# --- frames from the server -------------------------------------------------------------------


@given(
    st.lists(
        st.tuples(st.sampled_from(["bin", "cont", "ping", "pong"]), st.binary(max_size=300)),
        max_size=12,
    ),
    st.lists(st.integers(min_value=1, max_value=400), max_size=30),
)
def test_server_frames_split_anywhere(frames: list[tuple[str, bytes]], cuts: list[int]) -> None:
    stream, sock, inner, errors = upgraded()
    wire, stream_bytes, pings = b"", b"", []
    for kind, payload in frames:
        if kind in ("ping", "pong"):
            payload = payload[:125]
            wire += server_frame(0x9 if kind == "ping" else 0xA, payload)
            if kind == "ping":
                pings.append(payload)
        else:
            wire += server_frame(0x2 if kind == "bin" else 0x0, payload, fin=kind == "cont")
            stream_bytes += payload
    pos = 0
    for cut in cuts:
        stream.data_received(wire[pos : pos + cut])
        pos += cut
    stream.data_received(wire[pos:])
    assert b"".join(inner.chunks) == stream_bytes
    assert client_frames(sock.take()) == [(0xA, p) for p in pings]
    assert not errors and not sock.closed


def test_one_read_is_one_data_received() -> None:
    stream, _, inner, _ = upgraded()
    big = bytes(range(256)) * 300  # 76,800 bytes: an 8-byte length
    stream.data_received(
        server_frame(0x2, b"a" * 200) + server_frame(0x9, b"") + server_frame(0x2, big)
    )
    assert inner.chunks == [b"a" * 200 + big]


def test_close_frame_is_answered_after_the_data_before_it() -> None:
    stream, sock, inner, errors = upgraded()
    stream.data_received(server_frame(0x2, b"last") + server_frame(0x8, b"\x03\xe8bye"))
    assert inner.chunks == [b"last"]
    assert client_frames(sock.take()) == [(0x8, b"\x03\xe8")]
    assert sock.closed and not errors


def test_abnormal_close_is_an_error() -> None:
    stream, sock, _, errors = upgraded()
    stream.data_received(server_frame(0x8, b"\x03\xf1"))
    assert errors == ["WebSocket closed by the server, status 1009"]
    assert client_frames(sock.take()) == [(0x8, b"\x03\xf1")]
    assert sock.closed


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        (server_frame(0x1, b"text"), "opcode 1"),
        (b"\x82\x84" + KEY + b"abcd", "masked frame"),
        (b"\xc2\x01a", "reserved bits"),
        (server_frame(0x9, b"p" * 126), "oversized or fragmented"),
    ],
)
def test_protocol_violations_close(raw: bytes, why: str) -> None:
    stream, sock, inner, errors = upgraded()
    stream.data_received(raw)
    assert len(errors) == 1 and why in errors[0], errors
    assert client_frames(sock.take()) == [(0x8, b"\x03\xea")]  # status 1002
    assert sock.closed and not inner.chunks


# --- writes from the MQTT side --------------------------------------------------------------


def test_each_write_is_one_masked_binary_frame() -> None:
    _, sock, inner, _ = upgraded()
    inner.transport.set_write_buffer_limits(high=65536)
    assert sock.limits == (65536, None)
    burst = b"\x30\x05\x00\x01tabc" * 1000
    inner.transport.write(burst)
    inner.transport.write(b"\xc0\x00")
    assert client_frames(sock.take()) == [(0x2, burst), (0x2, b"\xc0\x00")]
    huge = bytes(MAX_FRAME + 10)
    inner.transport.write(huge)
    assert client_frames(sock.take()) == [(0x2, huge[:MAX_FRAME]), (0x2, huge[MAX_FRAME:])]
    inner.transport.close()
    assert client_frames(sock.take()) == [(0x8, b"\x03\xe8")]
    inner.transport.write(b"\xe0\x00")  # after close: dropped, not an exception
    assert sock.closed and sock.take() == b""


# --- real runs against the broker ----------------------------------------------------------------
