"""Graceful close: when the broker disconnects a client with a reason code, the client can
read it, even while it is still sending. The broker writes the DISCONNECT, shuts its
sending side and reads (and ignores) what the client still sends until the client closes,
so the kernel never resets the connection over unread data and drops the DISCONNECT."""

from __future__ import annotations

import socket
import ssl
from collections.abc import Callable, Iterator

import pytest

from brokers import BrokerProcess, free_port
from ferrymq.commands.certs import write_dev_certs
from ferrymq.mqtt import reason_codes as rc
from ferrymq.mqtt.codec import Decoder, encode
from ferrymq.mqtt.packets import Connack, Connect, Disconnect, Packet, Publish, Pubrec
from rawws import RawWS, ws_frame

RECEIVE_MAXIMUM = 5
ROUNDS = 5
FLOOD = 200  # distinct QoS 2 PUBLISH packets (46 KB), sent past the broker's receive maximum
REPEAT = 200  # times the flood is sent: 9 MB, more than socket buffers hold


@pytest.fixture(scope="module")
def ports(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, int]]:
    root = tmp_path_factory.mktemp("graceful")
    broker = BrokerProcess(root)
    ws, tls = free_port(), free_port()
    certs = root / "certs"
    write_dev_certs(certs, [])
    config = root / "ferrymq.toml"
    config.write_text(
        f"max_awaiting_rel = {RECEIVE_MAXIMUM}\n\n"
        f'[[listeners]]\nkind = "tcp"\nport = {broker.port}\n\n'
        f'[[listeners]]\nkind = "ws"\nport = {ws}\n\n'
        f'[[listeners]]\nkind = "ssl"\nport = {tls}\n'
        f'certfile = "{certs}/server.pem"\nkeyfile = "{certs}/server.key"\n'
    )
    broker.args = ["--config", str(config)]
    broker.start()
    yield {"tcp": broker.port, "ws": ws, "ssl": tls, "ca": str(certs / "ca.pem")}  # type: ignore[misc]
    assert broker.alive(), broker.log()[-3000:]
    broker.stop()


def _flood() -> list[bytes]:
    payload = b"x" * 200
    return [
        encode(Publish(f"gc/{i}", payload, 2, False, False, i % 65535 + 1), 5) for i in range(FLOOD)
    ]


def _send_all(send: Callable[[bytes], None], chunks: list[bytes]) -> OSError | None:
    """Send everything before reading anything, as a simple client (or the Paho test suite)
    does; a reset here means the broker closed over unread data."""
    try:
        for chunk in chunks:
            send(chunk)
    except OSError as exc:
        return exc
    return None


def _packets_until_closed(recv: Callable[[], bytes]) -> list[Packet]:
    decoder = Decoder(server=False, version=5)
    out: list[Packet] = []
    while True:
        try:
            data = recv()
        except (ConnectionResetError, EOFError):
            return out
        if not data:
            return out
        out.extend(decoder.feed(data))


def _check(packets: list[Packet]) -> None:
    assert isinstance(packets[0], Connack) and packets[0].reason_code == 0
    assert packets[0].properties["receive_maximum"] == RECEIVE_MAXIMUM
    pubrecs = [p for p in packets if isinstance(p, Pubrec)]
    assert len(pubrecs) == RECEIVE_MAXIMUM
    last = packets[-1]
    assert isinstance(last, Disconnect), packets[-3:]
    assert last.reason_code == rc.RECEIVE_MAXIMUM_EXCEEDED


@pytest.mark.parametrize("kind", ["tcp", "ssl"])
def test_client_past_receive_maximum_reads_the_disconnect(ports, uid, kind):
    flood = _flood()
    chunks = [b"".join(flood)] * REPEAT
    for n in range(ROUNDS):
        sock = socket.create_connection(("127.0.0.1", ports[kind]), timeout=10)
        if kind == "ssl":
            ctx = ssl.create_default_context(cafile=ports["ca"])
            sock = ctx.wrap_socket(sock, server_hostname="localhost")
        sock.sendall(encode(Connect(f"gc{n}-{uid}", protocol_version=5), 5))
        error = _send_all(sock.sendall, chunks)
        packets = _packets_until_closed(lambda: sock.recv(65536))  # noqa: B023
        sock.close()
        assert error is None, f"round {n}: {error!r}"
        _check(packets)


def test_websocket_client_past_receive_maximum_reads_the_disconnect(ports, uid):
    flood = _flood()
    for n in range(ROUNDS):
        ws = RawWS(ports["ws"])
        assert ws.status == 101
        ws.sock.settimeout(10)
        ws.send(ws_frame(2, encode(Connect(f"gcw{n}-{uid}", protocol_version=5), 5)))
        frames = [ws_frame(2, b"".join(flood[:100])), ws_frame(2, b"".join(flood[100:]))]
        frames *= REPEAT
        error = _send_all(ws.send, frames)
        closing: list[int] = []

        def recv() -> bytes:
            while not closing:  # noqa: B023
                opcode, payload = ws.frame()  # noqa: B023
                if opcode == 2:
                    return payload
                if opcode == 8:
                    closing.append(int.from_bytes(payload[:2], "big"))  # noqa: B023
            return b""

        packets = _packets_until_closed(recv)
        assert error is None, f"round {n}: {error!r}"
        assert closing == [1000], "the broker ends with a normal WebSocket close"
        ws.sock.close()
        _check(packets)
