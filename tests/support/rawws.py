"""A hand-made WebSocket client on a blocking socket: exact control over frames and fragments,
for the tests of the broker's WebSocket listener (a library client would hide both)."""

from __future__ import annotations

import base64
import os
import socket


def ws_frame(opcode: int, payload: bytes, fin: bool = True) -> bytes:
    """A masked client frame, as browsers send them."""
    mask = os.urandom(4)
    n = len(payload)
    head = bytes(((0x80 if fin else 0) | opcode,))
    if n < 126:
        head += bytes((0x80 | n,))
    else:
        head += bytes((0x80 | 126,)) + n.to_bytes(2, "big")
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


class RawWS:
    """A hand-made WebSocket client: exact control over frames and fragments."""

    def __init__(self, port: int, protocol: str = "mqtt", path: str = "/mqtt", **headers: str):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=3)
        key = base64.b64encode(os.urandom(16)).decode()
        extra = "".join(f"{k.replace('_', '-')}: {v}\r\n" for k, v in headers.items())
        self.sock.sendall(
            f"GET {path} HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
            f"Sec-WebSocket-Protocol: {protocol}\r\n{extra}\r\n".encode()
        )
        self.buf = b""
        while b"\r\n\r\n" not in self.buf:
            chunk = self.sock.recv(4096)
            if not chunk:
                break
            self.buf += chunk
        head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        self.status = int(head.split(b" ")[1])
        self.headers = {
            k.strip().lower(): v.strip()
            for k, _, v in (line.partition(":") for line in head.decode().split("\r\n")[1:])
        }

    def _read(self, n: int) -> bytes:
        while len(self.buf) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError
            self.buf += chunk
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def frame(self) -> tuple[int, bytes]:
        b0, b1 = self._read(2)
        n = b1 & 0x7F
        if n == 126:
            n = int.from_bytes(self._read(2), "big")
        elif n == 127:
            n = int.from_bytes(self._read(8), "big")
        assert not b1 & 0x80, "server frames are not masked"
        return b0 & 0x0F, self._read(n)

    def mqtt(self, n: int) -> bytes:
        """The next ``n`` bytes of the MQTT stream, across binary frames."""
        data = b""
        while len(data) < n:
            opcode, payload = self.frame()
            assert opcode == 2, opcode
            data += payload
        return data

    def closed(self) -> bool:
        try:
            while True:
                opcode, _ = self.frame()
                if opcode == 8:
                    return True
        except (EOFError, ConnectionResetError):
            return True
        except TimeoutError:
            return False

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)
