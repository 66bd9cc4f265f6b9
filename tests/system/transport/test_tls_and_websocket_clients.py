"""Real clients over TLS, WebSocket and secure WebSocket against a broker with many listeners."""

from __future__ import annotations

import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from brokers import BrokerProcess, free_port
from clients import TestClient
from ferrymq.access.passwords import hash_password
from ferrymq.commands.certs import write_dev_certs
from ferrymq.storage.sqlite import SqliteStore
from ferrymq.transport import proxy_protocol
from rawws import RawWS, ws_frame

CERT_PASSWORD = "pw-of-client1"


class Deployment:
    """The broker subprocess, its listener ports and the certificate folders."""

    def __init__(self, broker: BrokerProcess, ports: dict[str, int], certs: Path, other: Path):
        self.broker = broker
        self.ports = ports
        self.certs = certs
        self.other = other  # a second CA with its own client certificate

    def cert(self, name: str) -> str:
        return str(self.certs / name)

    def client(self, client_id: str, listener: str, **tls: Any) -> TestClient:
        """A paho client for ``listener`` (its transport and TLS set up); not connected yet."""
        kind = listener.split(":")[0]
        transport = "websockets" if kind in ("ws", "wss") else "tcp"
        c = TestClient(client_id, transport=transport)
        if transport == "websockets":
            c.c.ws_set_options(path="/mqtt")
        if kind in ("ssl", "wss"):
            c.c.tls_set(ca_certs=tls.pop("ca_certs", self.cert("ca.pem")), **tls)
        return c

    def connect(self, client_id: str, listener: str, **tls: Any) -> TestClient:
        c = self.client(client_id, listener, **tls)
        c.connect(self.ports[listener])
        return c


LISTENERS = """
connect_timeout = 2.0

[[listeners]]
kind = "tcp"
port = {tcp}

[[listeners]]
kind = "tcp"
name = "proxied"
port = {tcp_proxied}
proxy_protocol = true

[[listeners]]
kind = "ssl"
port = {ssl}
{tls}

[[listeners]]
kind = "ssl"
name = "mutual"
port = {ssl_mutual}
{tls}
verify_peer = true
fail_if_no_peer_cert = true
peer_cert_as_username = "cn"

[[listeners]]
kind = "ssl"
name = "idcert"
port = {ssl_idcert}
{tls}
verify_peer = true
peer_cert_as_clientid = "cn"
proxy_protocol = true

[[listeners]]
kind = "ws"
port = {ws}

[[listeners]]
kind = "ws"
name = "proxied"
port = {ws_proxied}
proxy_header = "x-forwarded-for"

[[listeners]]
kind = "wss"
port = {wss}
{tls}
"""


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    root = tmp_path_factory.mktemp("transport")
    certs, other = root / "certs", root / "other"
    write_dev_certs(certs, [])
    write_dev_certs(other, [], client_cn="intruder")
    data = root / "data"
    data.mkdir()
    store = SqliteStore(data / "ferrymq.db", 0.05)
    store.open()
    store.add_auth("username", "client1", hash_password(CERT_PASSWORD))
    store.close()
    broker = BrokerProcess(data)
    ports = {
        "tcp": broker.port,
        "tcp:proxied": free_port(),
        "ssl": free_port(),
        "ssl:mutual": free_port(),
        "ssl:idcert": free_port(),
        "ws": free_port(),
        "ws:proxied": free_port(),
        "wss": free_port(),
    }
    tls = "\n".join(
        f'{key} = "{certs}/{name}"'
        for key, name in (
            ("certfile", "server.pem"),
            ("keyfile", "server.key"),
            ("cafile", "ca.pem"),
        )
    )
    config = root / "ferrymq.toml"
    config.write_text(
        LISTENERS.format(tls=tls, **{k.replace(":", "_"): v for k, v in ports.items()})
    )
    broker.args = ["--config", str(config)]
    broker.start()
    yield Deployment(broker, ports, certs, other)
    assert broker.alive(), broker.log()[-3000:]
    broker.stop()


def wait_log(broker: BrokerProcess, text: str, timeout: float = 3.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        log = broker.log()
        if text in log:
            return log
        time.sleep(0.05)
    raise AssertionError(f"{text!r} not in the broker log:\n{broker.log()[-2000:]}")


# --- the same MQTT behaviour over every transport ---------------------------------


@pytest.mark.parametrize("listener", ["ssl", "ws", "wss", "ssl:mutual"])
def test_qos_and_retained_over_the_transport(
    deployment: Deployment, listener: str, uid: str
) -> None:
    tls: dict[str, Any] = {}
    if listener == "ssl:mutual":
        tls = {"certfile": deployment.cert("client.pem"), "keyfile": deployment.cert("client.key")}
    sub = deployment.client(f"sub-{uid}", listener, **tls)
    if listener == "ssl:mutual":  # the username comes from the certificate: client1
        sub.c.username_pw_set("ignored", CERT_PASSWORD)
    sub.connect(deployment.ports[listener])
    sub.subscribe(f"t/{uid}/#", 2)
    pub = deployment.connect(f"pub-{uid}", "tcp")
    for qos in (0, 1, 2):
        pub.publish(f"t/{uid}/q", f"to-{qos}", qos)
    big = bytes(range(256)) * 600  # 150 KiB: several WebSocket frames
    pub.publish(f"t/{uid}/big", big, 1)
    got = {(m.payload, m.qos) for m in sub.get_many(4)}
    assert got == {(b"to-0", 0), (b"to-1", 1), (b"to-2", 2), (big, 1)}
    # ... and from the transport to a TCP subscriber, a retained message included.
    tcp_sub = deployment.connect(f"tsub-{uid}", "tcp")
    tcp_sub.subscribe(f"u/{uid}/#", 2)
    for qos in (0, 1, 2):
        sub.publish(f"u/{uid}/q", b"x" * 70000 if qos == 2 else f"from-{qos}", qos)
    got = sorted((m.payload[:6], m.qos, len(m.payload)) for m in tcp_sub.get_many(3))
    assert got == [(b"from-0", 0, 6), (b"from-1", 1, 6), (b"xxxxxx", 2, 70000)]
    sub.publish(f"r/{uid}", "kept", 1, retain=True)
    late = deployment.client(f"late-{uid}", listener, **tls)
    if listener == "ssl:mutual":
        late.c.username_pw_set("ignored", CERT_PASSWORD)
    late.connect(deployment.ports[listener])
    late.subscribe(f"r/{uid}", 1)
    msg = late.get()
    assert (msg.payload, msg.retain) == (b"kept", True)
    for c in (sub, pub, tcp_sub, late):
        c.disconnect()


# --- TLS ------------------------------------------------------------------------------


def test_client_with_the_wrong_ca_refuses_the_server(deployment: Deployment, uid: str) -> None:
    c = deployment.client(uid, "ssl", ca_certs=str(deployment.other / "ca.pem"))
    with pytest.raises(ssl.SSLCertVerificationError):
        c.connect(deployment.ports["ssl"])


def tls_exchange(port: int, ctx: ssl.SSLContext, data: bytes) -> bytes:
    """Handshake, send ``data``, return the reply; b"" when the server refused us."""
    with socket.create_connection(("127.0.0.1", port), timeout=3) as raw:
        try:
            with ctx.wrap_socket(raw, server_hostname="localhost") as tls:
                tls.sendall(data)
                return tls.recv(4)
        except (ssl.SSLError, ConnectionResetError, BrokenPipeError):
            return b""  # TLS 1.2 fails the handshake, TLS 1.3 the first read


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
def test_mutual_tls_refuses_missing_and_foreign_certificates(
    deployment: Deployment, version: ssl.TLSVersion
) -> None:
    port = deployment.ports["ssl:mutual"]
    before = deployment.broker.log().count("listener ssl:mutual: 127.0.0.1:")

    def context(certs: Path | None) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=deployment.cert("ca.pem"))
        ctx.minimum_version = ctx.maximum_version = version
        if certs is not None:
            ctx.load_cert_chain(certs / "client.pem", certs / "client.key")
        return ctx

    connect = _connect_packet("mutual")
    assert tls_exchange(port, context(None), connect) == b""
    assert tls_exchange(port, context(deployment.other), connect) == b""
    assert tls_exchange(port, context(deployment.certs), connect) != b""  # CONNACK
    deadline = time.monotonic() + 3
    while deployment.broker.log().count("listener ssl:mutual: 127.0.0.1:") < before + 2:
        assert time.monotonic() < deadline, deployment.broker.log()[-2000:]
        time.sleep(0.05)
    assert "TLS handshake failed" in deployment.broker.log()


def test_certificate_cn_is_the_username(deployment: Deployment, uid: str) -> None:
    """client1 has a password record; the certificate's CN overrides the CONNECT username."""
    tls = {"certfile": deployment.cert("client.pem"), "keyfile": deployment.cert("client.key")}
    port = deployment.ports["ssl:mutual"]
    # Without the override "someone-else" would be anonymous and accepted.
    refused = deployment.client(f"{uid}-1", "ssl:mutual", **tls)
    refused.c.username_pw_set("someone-else")
    assert refused.connect(port, expect_rc=None)[1] != 0
    refused.c.loop_stop()
    accepted = deployment.client(f"{uid}-2", "ssl:mutual", **tls)
    accepted.c.username_pw_set("someone-else", CERT_PASSWORD)
    accepted.connect(port)
    accepted.disconnect()
    plain = deployment.client(f"{uid}-3", "tcp")
    plain.c.username_pw_set("someone-else")
    plain.connect(deployment.ports["tcp"])
    plain.disconnect()


def test_certificate_cn_is_the_client_id_behind_a_proxy(deployment: Deployment) -> None:
    """PROXY header first, then TLS with a client certificate whose CN becomes the client id."""
    port = deployment.ports["ssl:idcert"]
    ctx = ssl.create_default_context(cafile=deployment.cert("ca.pem"))
    ctx.load_cert_chain(deployment.cert("client.pem"), deployment.cert("client.key"))
    with socket.create_connection(("127.0.0.1", port), timeout=3) as raw:
        raw.sendall(proxy_protocol.encode_v1(("192.0.2.44", 40404), ("127.0.0.1", port)))
        with ctx.wrap_socket(raw, server_hostname="localhost") as tls:
            tls.sendall(_connect_packet("any-id"))
            assert tls.recv(4) == b"\x20\x02\x00\x00"
            wait_log(deployment.broker, "client client1 connected from 192.0.2.44:40404")


def test_mosquitto_clients_with_cafile_cert_key(deployment: Deployment, uid: str) -> None:
    base = ["-h", "localhost", "--cafile", deployment.cert("ca.pem")]
    mutual = [
        *base,
        "-p",
        str(deployment.ports["ssl:mutual"]),
        "--cert",
        deployment.cert("client.pem"),
        "--key",
        deployment.cert("client.key"),
        "-u",
        "ignored",
        "-P",
        CERT_PASSWORD,
    ]
    sub = subprocess.Popen(
        ["mosquitto_sub", *mutual, "-i", f"ms-{uid}", "-t", f"m/{uid}", "-q", "1", "-C", "2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        wait_log(deployment.broker, f"client ms-{uid} connected")
        for args, text in (
            (mutual, "mutual"),
            ([*base, "-p", str(deployment.ports["ssl"])], "server-only"),
        ):
            subprocess.run(
                ["mosquitto_pub", *args, "-t", f"m/{uid}", "-q", "1", "-m", text],
                check=True,
                timeout=5,
                capture_output=True,
            )
        out, err = sub.communicate(timeout=5)
    finally:
        sub.kill()
    assert out.decode().split() == ["mutual", "server-only"], err
    refused = subprocess.run(
        ["mosquitto_pub", *base, "-p", str(deployment.ports["ssl:mutual"]), "-t", "x", "-m", "1"],
        timeout=5,
        capture_output=True,
    )
    assert refused.returncode != 0


# --- WebSocket by hand -------------------------------------------------------------------


def _connect_packet(client_id: str) -> bytes:
    cid = client_id.encode()
    body = b"\x00\x04MQTT\x04\x02\x00\x3c" + len(cid).to_bytes(2, "big") + cid
    return bytes((0x10, len(body))) + body


def test_fragmented_frames_split_and_coalesced_packets(deployment: Deployment, uid: str) -> None:
    ws = RawWS(deployment.ports["ws"])
    assert ws.status == 101 and ws.headers["sec-websocket-protocol"] == "mqtt"
    connect = _connect_packet(f"raw-{uid}")
    # One message in three fragments, with a ping between them.
    ws.send(ws_frame(2, connect[:3], fin=False))
    ws.send(ws_frame(0, connect[3:10], fin=False) + ws_frame(9, b"hi"))
    ws.send(ws_frame(0, connect[10:]))
    assert ws.frame() == (10, b"hi")
    assert ws.mqtt(4) == b"\x20\x02\x00\x00"
    topic = f"w/{uid}".encode()
    subscribe = b"\x82" + bytes((5 + len(topic),)) + b"\x00\x07\x00" + bytes((len(topic),))
    subscribe += topic + b"\x00"  # packet id 7, one filter, QoS 0
    publish = b"\x30" + bytes((2 + len(topic) + 5,)) + b"\x00" + bytes((len(topic),)) + topic
    publish += b"hello"
    # SUBSCRIBE and the start of PUBLISH in one frame, the rest in another.
    ws.send(ws_frame(2, subscribe + publish[:4]))
    ws.send(ws_frame(2, publish[4:]))
    assert ws.mqtt(5) == b"\x90\x03\x00\x07\x00"
    assert ws.mqtt(len(publish)) == publish
    # A text frame is not MQTT: the connection is closed.
    ws.send(ws_frame(1, b"text"))
    assert ws.closed()


def test_mqttv31_subprotocol_and_wss(deployment: Deployment, uid: str) -> None:
    ws = RawWS(deployment.ports["ws"], protocol="mqttv3.1")
    assert ws.status == 101 and ws.headers["sec-websocket-protocol"] == "mqttv3.1"
    c = deployment.connect(uid, "wss")
    assert c.subscribe(f"s/{uid}", 1)
    c.disconnect()


def test_wrong_path_and_garbage_http_leave_the_listener_working(
    deployment: Deployment, uid: str
) -> None:
    port = deployment.ports["ws"]
    assert RawWS(port, path="/other").status == 404
    with socket.create_connection(("127.0.0.1", port), timeout=3) as s:
        s.sendall(b"\x10\x00garbage\r\n\r\n")
        reply = s.recv(4096)
        assert reply.startswith(b"HTTP/1.") and reply.split(b" ")[1] == b"400"
    plain = RawWS(port, protocol="mqtt", path="/mqtt")
    assert plain.status == 101
    deployment.connect(uid, "ws").disconnect()


def test_x_forwarded_for_only_where_enabled(deployment: Deployment, uid: str) -> None:
    for listener in ("ws:proxied", "ws"):
        ws = RawWS(
            deployment.ports[listener],
            X_Forwarded_For="203.0.113.9, 10.0.0.1",
            X_Forwarded_Port="5555",
        )
        ws.send(ws_frame(2, _connect_packet(f"xff-{listener}-{uid}")))
        assert ws.mqtt(4) == b"\x20\x02\x00\x00"
    log = wait_log(deployment.broker, f"client xff-ws-{uid} connected")
    assert f"client xff-ws:proxied-{uid} connected from 203.0.113.9:5555" in log
    assert f"client xff-ws-{uid} connected from 127.0.0.1:" in log


def test_proxy_protocol_v2_on_tcp(deployment: Deployment, uid: str) -> None:
    port = deployment.ports["tcp:proxied"]
    header = proxy_protocol.encode_v2(("2001:db8::5", 6000), ("2001:db8::1", port))
    with socket.create_connection(("127.0.0.1", port), timeout=3) as s:
        s.sendall(header + _connect_packet(f"pp-{uid}"))
        assert s.recv(4) == b"\x20\x02\x00\x00"
        wait_log(deployment.broker, f"client pp-{uid} connected from 2001:db8::5:6000")
