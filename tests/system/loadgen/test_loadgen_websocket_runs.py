"""``ferrymq bench --ws``: real runs over ws and wss against a broker with WebSocket listeners."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from brokers import BrokerProcess, free_port
from loadgen_cli import bench, finish, start_subscribers


@pytest.fixture(scope="module")
def ws_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[dict[str, int], Path]]:
    """A broker with tcp, ws and wss listeners; the certificates from ``ferrymq certs dev``."""
    root = tmp_path_factory.mktemp("bench-ws")
    subprocess.run(
        [sys.executable, "-m", "ferrymq", "certs", "dev", "--data-dir", str(root)],
        check=True,
        capture_output=True,
    )
    certs = root / "certs"
    broker = BrokerProcess(root / "data")
    ports = {"ws": free_port(), "wss": free_port()}
    config = root / "ferrymq.toml"
    # A subscriber gets a 1,200-message burst at full speed; one that falls further behind
    # than its queue drops (the broker's slow-consumer rule), which is not under test here.
    config.write_text(
        "max_mqueue_len = 5000\n\n"
        f'[[listeners]]\nkind = "tcp"\nport = {broker.port}\n\n'
        f'[[listeners]]\nkind = "ws"\nport = {ports["ws"]}\n\n'
        f'[[listeners]]\nkind = "wss"\nport = {ports["wss"]}\n'
        f'certfile = "{certs}/server.pem"\nkeyfile = "{certs}/server.key"\n'
    )
    broker.args = ["--config", str(config)]
    broker.start()
    yield ports, certs
    assert broker.alive(), broker.log()[-3000:]
    broker.stop()


@pytest.mark.parametrize(("kind", "version"), [("ws", "5"), ("wss", "4")])
def test_publishers_and_subscribers_over_websocket(
    ws_broker: tuple[dict[str, int], Path], uid: str, kind: str, version: str
) -> None:
    ports, certs = ws_broker
    flags = ["--ws", "-p", str(ports[kind]), "-V", version, "-w", "1"]
    if kind == "wss":
        flags += ["--tls", "--cafile", str(certs / "ca.pem")]
    subs = start_subscribers(*flags, "-c", "2", "-t", f"{uid}/#", "-q", "1", "-L", "1200")
    # 1 KB payloads, a 300-message window: bursts up to 300 KB, frames with 8-byte lengths
    code, pub, _ = bench(
        "pub", *flags, "-c", "2", "-t", f"{uid}/%i", "-q", "1", "-L", "600", "-I", "0",
        "-s", "1000", "--inflight", "300",
    )  # fmt: skip
    assert code == 0, pub["errors"]
    assert (pub["transport"], pub["ready"], pub["sent"], pub["acked"]) == (kind, 2, 1200, 1200)
    code, sub = finish(subs)
    assert code == 0, sub["errors"]
    assert (sub["transport"], sub["received"], sub["lat_ms"]["n"]) == (kind, 2400, 2400)
    code, pub, _ = bench(
        "pub", *flags, "-c", "1", "-t", f"{uid}/q0", "-L", "5000", "-I", "0", "-s", "20"
    )
    assert (code, pub["sent"], pub["failed"], pub["lost"]) == (0, 5000, 0, 0)


def test_wrong_path_is_a_failed_connection(ws_broker: tuple[dict[str, int], Path]) -> None:
    ports, _ = ws_broker
    code, s, _ = bench(
        "conn", "--ws", "--ws-path", "/nope", "-p", str(ports["ws"]), "-c", "2", "-w", "1"
    )
    assert code == 1
    assert (s["ready"], s["failed"]) == (0, 2)
    assert any("HTTP 404" in e for e in s["errors"]), s["errors"]
