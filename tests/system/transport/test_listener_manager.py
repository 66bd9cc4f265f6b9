"""The listener manager in-process: limits, counts, PROXY headers, timeouts, failed handshakes."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest

from ferrymq.commands.certs import write_dev_certs
from ferrymq.config import ListenerSettings, Settings
from ferrymq.core.broker import Broker
from ferrymq.server import listener_option, listener_options
from ferrymq.transport import descriptors, listeners, proxy_protocol
from ferrymq.transport.listeners import ListenerManager

CONNACK_OK = b"\x20\x02\x00\x00"

Start = Callable[..., Awaitable[ListenerManager]]
Body = Callable[[Start], Coroutine[Any, Any, None]]
Runner = Callable[[Body], None]


def connect_packet(client_id: str) -> bytes:
    cid = client_id.encode()
    body = b"\x00\x04MQTT\x04\x02\x00\x3c" + len(cid).to_bytes(2, "big") + cid
    return bytes((0x10, len(body))) + body


@pytest.fixture(params=["asyncio", "uvloop"])
def run(request: pytest.FixtureRequest) -> Runner:
    """Run a test body on the stock loop and on uvloop (what ``ferrymq start`` uses)."""
    runner = pytest.importorskip("uvloop").run if request.param == "uvloop" else asyncio.run

    def run_body(body: Body) -> None:
        async def main() -> None:
            async with brokers() as start:
                await body(start)

        runner(main())

    return run_body


@contextlib.asynccontextmanager
async def brokers() -> AsyncIterator[Start]:
    """Start Brokers (no store) with the given listeners; all are shut down afterwards."""
    made: list[tuple[Broker, ListenerManager]] = []

    async def make(*specs: ListenerSettings, **settings: Any) -> ListenerManager:
        conf = Settings(**settings)
        conf.listeners = list(specs)
        broker = Broker(conf, None, asyncio.get_running_loop())
        manager = ListenerManager(broker, listener_options(conf))
        await manager.start()
        broker.alarm_checks.listeners = manager
        made.append((broker, manager))
        return manager

    try:
        yield make
    finally:
        for broker, manager in made:
            manager.close()
            broker.shutdown()
            await manager.wait_closed()


def spec(kind: str = "tcp", name: str = "", **kw: Any) -> ListenerSettings:
    return ListenerSettings(kind=kind, name=name or "default", port=0, bind="127.0.0.1", **kw)


def port_of(manager: ListenerManager, kind: str = "tcp", name: str = "default") -> int:
    listener = manager.get(kind, name)
    assert listener is not None
    return listener.port


def info(manager: ListenerManager, identifier: str) -> dict[str, Any]:
    return next(i for i in manager.describe() if i["identifier"] == identifier)


def shutdowns(manager: ListenerManager, identifier: str) -> dict[str, int]:
    """The listener's shutdown_count, a list of {reason: count} as EMQX serves it, as one dict."""
    counts: dict[str, int] = {}
    for entry in info(manager, identifier)["shutdown_count"]:
        assert len(entry) == 1
        counts.update(entry)
    return counts


async def mqtt_connect(
    port: int, client_id: str, prefix: bytes = b""
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(prefix + connect_packet(client_id))
    assert await asyncio.wait_for(reader.readexactly(4), 3) == CONNACK_OK
    return reader, writer


async def closed_within(reader: asyncio.StreamReader, seconds: float) -> bytes:
    """Everything the server sends until it closes; fails if it stays open longer."""
    try:
        return await asyncio.wait_for(reader.read(), seconds)
    except ConnectionResetError:  # closed with our bytes unread
        return b""


async def until(predicate: Callable[[], bool], timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


def test_describe_in_the_emqx_shape_with_live_counts(run: Runner) -> None:
    async def body(start: Start) -> None:
        manager = await start(spec("tcp", max_connections=10), spec("ws", zone="external"))
        tcp = port_of(manager)
        clients = [await mqtt_connect(tcp, f"d{i}") for i in range(2)]
        item = info(manager, "mqtt:tcp:default")
        assert item["protocol"] == "mqtt:tcp"
        assert item["listen_on"] == f"127.0.0.1:{tcp}"
        assert item["current_conns"] == 2
        assert item["max_conns"] == 10
        assert item["acceptors"] >= 1 and item["running"] is True
        ws = info(manager, "mqtt:ws:default")
        assert ws["current_conns"] == 0 and ws["zone"] == "external" and ws["path"] == "/mqtt"
        clients[0][1].close()
        await until(lambda: info(manager, "mqtt:tcp:default")["current_conns"] == 1)

    run(body)


def test_accepting_past_half_the_descriptor_table_grows_it_ahead(
    run: Runner, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A table known to hold 8 descriptors, grown to 32 by the connection that passes 4,
    while that connection is served as any other."""
    table = descriptors.Table()
    table.slots, table.grow_at = 8, 4
    monkeypatch.setattr(listeners, "_TABLE", table)

    async def body(start: Start) -> None:
        manager = await start(spec("tcp"))
        await mqtt_connect(port_of(manager), "fd1")
        await until(lambda: table.slots == 32)
        assert table.grow_at == 16

    run(body)


def test_max_connections_closes_the_extra_socket_only(run: Runner) -> None:
    async def body(start: Start) -> None:
        manager = await start(spec("tcp", max_connections=2))
        port = port_of(manager)
        first = await mqtt_connect(port, "m1")
        await mqtt_connect(port, "m2")
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(connect_packet("m3"))
        assert await closed_within(reader, 2) == b""
        assert shutdowns(manager, "mqtt:tcp:default") == {"max_connections": 1}
        first[1].close()
        await until(lambda: info(manager, "mqtt:tcp:default")["current_conns"] == 1)
        await mqtt_connect(port, "m4")

    run(body)


def test_max_conn_rate_delays_accepting_instead_of_refusing(run: Runner) -> None:
    async def body(start: Start) -> None:
        manager = await start(spec("tcp", max_conn_rate=10.0))
        port = port_of(manager)
        began = time.monotonic()
        results = await asyncio.gather(*(mqtt_connect(port, f"r{i}") for i in range(15)))
        elapsed = time.monotonic() - began
        assert len(results) == 15  # all accepted
        assert elapsed >= 0.35, elapsed  # 10 at once, then 10 per second
        assert shutdowns(manager, "mqtt:tcp:default") == {}

    run(body)


def test_silent_sockets_are_closed_and_cost_the_others_nothing(run: Runner, tmp_path: Path) -> None:
    async def body(start: Start) -> None:
        write_dev_certs(tmp_path, [])
        tls = {
            "certfile": str(tmp_path / "server.pem"),
            "keyfile": str(tmp_path / "server.key"),
        }
        manager = await start(
            spec("tcp"),
            spec("tcp", "proxied", proxy_protocol=True),
            spec("ssl", **tls),
            spec("ws"),
            connect_timeout=0.4,
        )
        ports = [
            port_of(manager),
            port_of(manager, "tcp", "proxied"),
            port_of(manager, "ssl"),
            port_of(manager, "ws"),
        ]
        silent = [await asyncio.open_connection("127.0.0.1", p) for p in ports for _ in range(3)]
        busy = await mqtt_connect(ports[0], "busy")  # served while the silent ones wait
        began = time.monotonic()
        for reader, _ in silent:
            await closed_within(reader, 2.0)
        assert time.monotonic() - began < 1.5
        await until(lambda: sum(i["current_conns"] for i in manager.describe()) == 1)
        assert not busy[0].at_eof()
        for identifier in ("mqtt:tcp:proxied", "mqtt:ssl:default", "mqtt:ws:default"):
            assert shutdowns(manager, identifier) == {"timeout": 3}, identifier

    run(body)


@pytest.mark.parametrize(
    "header",
    [
        proxy_protocol.encode_v1(("203.0.113.7", 4567), ("10.0.0.1", 1883)),
        proxy_protocol.encode_v2(("203.0.113.7", 4567), ("10.0.0.1", 1883), b"\x04\x00\x01x"),
        proxy_protocol.encode_v1(("2001:db8::7", 4567), ("2001:db8::1", 1883)),
    ],
)
def test_proxy_protocol_header_gives_the_real_address(run: Runner, header: bytes) -> None:
    async def body(start: Start) -> None:
        manager = await start(spec("tcp", proxy_protocol=True))
        broker = manager.broker
        # The header and CONNECT arrive in one segment: only the header is consumed.
        await mqtt_connect(port_of(manager), "behind-lb", prefix=header)
        host = "2001:db8::7" if b"2001" in header else "203.0.113.7"
        assert broker.clients["behind-lb"].peer == (host, 4567)

    run(body)


def test_proxy_header_split_across_segments(run: Runner) -> None:
    async def body(start: Start) -> None:
        manager = await start(spec("tcp", proxy_protocol=True))
        header = proxy_protocol.encode_v2(("198.51.100.9", 1000), ("10.0.0.1", 1883))
        reader, writer = await asyncio.open_connection("127.0.0.1", port_of(manager))
        for part in (header[:5], header[5:14], header[14:20], header[20:]):
            writer.write(part)
            await writer.drain()
            await asyncio.sleep(0.02)
        writer.write(connect_packet("split"))
        assert await asyncio.wait_for(reader.readexactly(4), 3) == CONNACK_OK
        assert manager.broker.clients["split"].peer == ("198.51.100.9", 1000)

    run(body)


def test_garbage_instead_of_proxy_header_is_refused_and_counted(
    run: Runner, caplog: pytest.LogCaptureFixture
) -> None:
    async def body(start: Start) -> None:
        manager = await start(spec("tcp", proxy_protocol=True), spec("tcp", "plain"))
        caplog.set_level(logging.INFO, "ferrymq.listeners")
        reader, writer = await asyncio.open_connection("127.0.0.1", port_of(manager))
        writer.write(connect_packet("no-header"))
        assert await closed_within(reader, 2) == b""
        assert shutdowns(manager, "mqtt:tcp:default") == {"proxy_error": 1}
        assert "bad PROXY header" in caplog.text
        await mqtt_connect(port_of(manager, "tcp", "plain"), "fine")

    run(body)


def test_failed_tls_handshake_is_logged_once_and_counted(
    run: Runner, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async def body(start: Start) -> None:
        write_dev_certs(tmp_path, [])
        manager = await start(
            spec(
                "ssl",
                certfile=str(tmp_path / "server.pem"),
                keyfile=str(tmp_path / "server.key"),
            ),
            spec("tcp"),
        )
        caplog.set_level(logging.DEBUG)
        reader, writer = await asyncio.open_connection("127.0.0.1", port_of(manager, "ssl"))
        local = writer.get_extra_info("sockname")
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        await closed_within(reader, 2)
        await until(lambda: shutdowns(manager, "mqtt:ssl:default") == {"ssl_error": 1})
        lines = [r.getMessage() for r in caplog.records if "TLS handshake failed" in r.getMessage()]
        assert len(lines) == 1, caplog.text
        assert f"127.0.0.1:{local[1]}" in lines[0]
        assert "Traceback" not in caplog.text
        # A real TLS client on the same listener is fine afterwards.
        ctx = ssl.create_default_context(cafile=str(tmp_path / "ca.pem"))
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port_of(manager, "ssl"), ssl=ctx, server_hostname="localhost"
        )
        writer.write(connect_packet("tls-ok"))
        assert await asyncio.wait_for(reader.readexactly(4), 3) == CONNACK_OK
        assert info(manager, "mqtt:ssl:default")["current_conns"] == 1

    run(body)


def test_bad_certificate_fails_at_start_with_the_file_named(run: Runner, tmp_path: Path) -> None:
    async def body(start: Start) -> None:
        bad = tmp_path / "bad.pem"
        bad.write_text("not a certificate")
        conf = Settings()
        broker = Broker(conf, None, asyncio.get_running_loop())
        with pytest.raises(OSError, match=r"listener ssl:default: cannot load certfile .*bad\.pem"):
            ListenerManager(
                broker, [listener_option(spec("ssl", certfile=str(bad), keyfile=str(bad)))]
            )

    run(body)


def test_port_in_use_fails_the_start_and_frees_the_others(run: Runner) -> None:
    async def body(start: Start) -> None:
        manager = await start(spec("tcp"))
        taken = port_of(manager)
        conf = Settings()
        broker = Broker(conf, None, asyncio.get_running_loop())
        other = ListenerManager(
            broker,
            [
                listener_option(s)
                for s in (spec("ws"), ListenerSettings(bind="127.0.0.1", port=taken))
            ],
        )
        with pytest.raises(OSError, match=f"cannot bind 127.0.0.1:{taken}"):
            await other.start()
        ws = other.get("ws")
        assert ws is not None and all(s.fileno() == -1 for s in ws.sockets)

    run(body)


def test_failed_websocket_upgrades_are_logged_once_and_counted(
    run: Runner, caplog: pytest.LogCaptureFixture
) -> None:
    async def body(start: Start) -> None:
        manager = await start(spec("ws"), connect_timeout=0.5)
        caplog.set_level(logging.INFO, "ferrymq")
        port = port_of(manager, "ws")
        requests = (
            b"\x10\x0c\x00\x04MQTT\x04\x02\x00\x3c\r\n\r\n",  # MQTT sent to an HTTP port
            b"GET /elsewhere HTTP/1.1\r\nHost: x\r\n\r\n",
            b"GET /mqtt HTTP/1.1\r\nHost: x\r\n\r\n",  # no Upgrade header
        )
        for request in requests:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(request)
            reply = await closed_within(reader, 2)
            assert reply.split(b" ")[1] in (b"400", b"404"), reply
        counts = shutdowns(manager, "mqtt:ws:default")
        assert counts == {"ws_handshake_error": 3}
        lines = [r.getMessage() for r in caplog.records if "upgrade failed" in r.getMessage()]
        assert len(lines) == 3 and all("127.0.0.1:" in line for line in lines)
        assert "no WebSocket endpoint at '/elsewhere'" in lines[1]
        assert "not a WebSocket upgrade request" in lines[2]

    run(body)


async def ws_open(port: int, client_id: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A minimal WebSocket client: upgrade, then CONNECT in one masked binary frame."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        b"GET /mqtt HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
        b"Sec-WebSocket-Protocol: mqtt\r\n\r\n"
    )
    head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101"), head
    packet = connect_packet(client_id)
    writer.write(bytes((0x82, 0x80 | len(packet))) + b"\x00\x00\x00\x00" + packet)  # zero mask
    assert await reader.readexactly(6) == b"\x82\x04" + CONNACK_OK
    return reader, writer


def test_a_full_websocket_socket_pauses_the_client_until_it_drains(run: Runner) -> None:
    async def body(start: Start) -> None:
        manager = await start(spec("tcp"), spec("ws"), max_mqueue_len=100000)
        broker = manager.broker
        reader, writer = await ws_open(port_of(manager, "ws"), "slow-ws")
        subscribe = b"\x82\x06\x00\x01\x00\x01t\x00"
        writer.write(bytes((0x82, 0x80 | len(subscribe))) + b"\x00\x00\x00\x00" + subscribe)
        assert await reader.readexactly(7) == b"\x82\x05\x90\x03\x00\x01\x00"
        _, pub = await mqtt_connect(port_of(manager), "flood")
        publish = b"\x30\x80\x80\x02\x00\x01t" + b"x" * 32765  # 32 KiB packet
        client = broker.clients["slow-ws"]
        for _ in range(400):  # 12.8 MiB, far beyond the socket buffers
            pub.write(publish)  # no drain(): the broker may stop reading us
            await asyncio.sleep(0.001)
            if client.write_paused:
                break
        await until(lambda: client.write_paused)
        # Reading lets the socket drain: the client resumes and its queue empties.
        drained = 0
        session = client.session
        assert session is not None
        while client.write_paused or session.queue:
            data = await asyncio.wait_for(reader.read(1 << 20), 3)
            assert data, "the WebSocket was closed"
            drained += len(data)
        assert drained > 0 and not client.write_paused

    run(body)
