"""``ferrymq start``: help, defaults, anonymous access by bind address, config precedence."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import fields
from pathlib import Path

import pytest

from brokers import free_port, wait_port
from clients import V311, TestClient
from ferrymq.config import Settings
from rawclient import RawClient


def _start(cwd: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("FERRYMQ_")}
    full_env["FERRYMQ_API_PORT"] = "0"  # the API has its own tests; keep port 8081 free
    full_env["FERRYMQ_DASHBOARD_PORT"] = "0"  # likewise the dashboard's port 18083
    full_env.update(env or {})
    return subprocess.Popen(
        [sys.executable, "-m", "ferrymq", "start", *args],
        cwd=cwd,
        env=full_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _stop(proc: subprocess.Popen[str]) -> tuple[int, str]:
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=10)
    return proc.returncode, out


def test_help_lists_every_setting():
    out = subprocess.run(
        [sys.executable, "-m", "ferrymq", "start", "--help"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    flat = " ".join(out.split())
    for f in fields(Settings):
        flag = "--" + f.name.replace("_", "-")
        assert flag in out, flag
        assert " ".join(f.metadata["help"].split()[:3]) in flat, f.name
    assert "--config" in out
    assert "--no-allow-anonymous" in out
    assert "FERRYMQ_" in flat  # the precedence is explained


def test_start_without_config_binds_loopback_1883(tmp_path):
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", 1883))
        except OSError:
            pytest.skip("port 1883 is in use on this machine")
    proc = _start(tmp_path)
    try:
        wait_port(1883)
    except TimeoutError:
        code, out = _stop(proc)
        if "in use" in out:
            pytest.skip("port 1883 was taken meanwhile")
        raise AssertionError(out) from None
    try:
        c = TestClient("cli-default", V311)
        c.connect(1883)  # anonymous is allowed on loopback
        c.disconnect()
        with pytest.raises(OSError):  # and it is not reachable on other addresses
            s = socket.create_connection((_non_loopback_ip(), 1883), timeout=0.5)
            s.close()
    finally:
        code, out = _stop(proc)
    assert code == 0, out
    assert "127.0.0.1:1883" in out
    assert (tmp_path / "data" / "ferrymq.db").exists()  # data_dir defaults to ./data


def _non_loopback_ip() -> str:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))  # no packet is sent for UDP connect
            ip = s.getsockname()[0]
        except OSError:
            ip = ""
    if not ip or ip.startswith("127."):
        pytest.skip("no non-loopback address on this machine")
    return ip


def test_public_bind_refuses_anonymous(tmp_path):
    port = free_port()
    proc = _start(tmp_path, "--bind", "0.0.0.0", "--port", str(port))
    try:
        wait_port(port)
        for version, refused in ((3, 5), (4, 5), (5, 0x87)):
            with RawClient(port, version) as c:
                assert c.connect(f"anon-{version}").reason_code == refused
                assert c.closed_after() == []
    finally:
        code, out = _stop(proc)
    assert code == 0
    assert "anonymous clients are refused" in out


def test_public_bind_with_allow_anonymous_in_config(tmp_path):
    port = free_port()
    cfg = tmp_path / "ferrymq.toml"
    cfg.write_text(f'bind = "0.0.0.0"\nport = {port}\nallow_anonymous = true\n')
    proc = _start(tmp_path, "--config", str(cfg))
    try:
        wait_port(port)
        c = TestClient("anon-ok", V311)
        c.connect(port)
        c.disconnect()
    finally:
        code, out = _stop(proc)
    assert code == 0, out


def test_precedence_end_to_end(tmp_path):
    """File < environment < flags, seen from outside: the port it listens on, the node name
    in $SYS topics."""
    file_port, env_port, flag_port = free_port(), free_port(), free_port()
    cfg = tmp_path / "ferrymq.toml"
    cfg.write_text(
        f'port = {file_port}\nnode_name = "from-file"\nsys_interval = 1.0\nmax_qos = 1\n'
    )
    env = {"FERRYMQ_PORT": str(env_port), "FERRYMQ_NODE_NAME": "from-env"}
    proc = _start(tmp_path, "--config", str(cfg), "--port", str(flag_port), env=env)
    try:
        wait_port(flag_port)
        for port in (file_port, env_port):
            with pytest.raises(OSError):
                socket.create_connection(("127.0.0.1", port), timeout=0.3).close()
        c = TestClient("prec", V311)
        c.connect(flag_port)
        c.subscribe("$SYS/brokers/+/version", 0)
        assert c.get().topic == "$SYS/brokers/from-env/version"
        assert c.subscribe("prec/x", 2) == [1]  # max_qos from the file
        c.disconnect()
    finally:
        code, out = _stop(proc)
    assert code == 0, out


def test_bad_settings_exit_2_with_a_message(tmp_path):
    cfg = tmp_path / "bad.toml"
    cfg.write_text("max_inflight = -5\n")
    result = subprocess.run(
        [sys.executable, "-m", "ferrymq", "start", "--config", str(cfg)],
        capture_output=True,
        text=True,
        timeout=10,
        cwd=tmp_path,
    )
    assert result.returncode == 2
    assert "max_inflight" in result.stderr
    result = subprocess.run(
        [sys.executable, "-m", "ferrymq", "start", "--max-qos", "x"],
        capture_output=True,
        text=True,
        timeout=10,
        cwd=tmp_path,
        env={**os.environ, "FERRYMQ_API_PORT": "0"},
    )
    assert result.returncode == 2 and "max_qos" in result.stderr


def test_port_in_use_exits_1(tmp_path):
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        proc = _start(tmp_path, "--port", str(port))
        out, _ = proc.communicate(timeout=10)
    assert proc.returncode == 1
    assert "cannot start" in out


def test_port_flag_with_listeners_in_the_config_is_not_silently_ignored(tmp_path):
    port = free_port()
    cfg = tmp_path / "listeners.toml"
    cfg.write_text(f'[[listeners]]\nkind = "tcp"\nbind = "127.0.0.1"\nport = {port}\n')
    proc = subprocess.Popen(
        [sys.executable, "-m", "ferrymq", "start", "--config", str(cfg), "--port", "1884"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "FERRYMQ_API_PORT": "0"},
    )
    try:
        wait_port(port, timeout=15)
    finally:
        _code, out = _stop(proc)
    assert "--port ignored" in out and "[[listeners]]" in out, out


def _maps_aiohttp(pid: int) -> bool:
    with open(f"/proc/{pid}/maps") as f:
        return "aiohttp" in f.read()


def _status_when_running(port: int, timeout: float = 10.0) -> str:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/status", timeout=10) as r:
                return r.read().decode()
        except urllib.error.HTTPError as exc:  # 503 until the restore is done
            if exc.code != 503 or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def test_the_api_server_is_loaded_on_its_first_request(tmp_path):
    """Nobody has used the API yet: no aiohttp in the process; the first request loads it."""
    api_port = free_port()
    proc = _start(
        tmp_path,
        "--port",
        str(free_port()),
        "--data-dir",
        str(tmp_path / "data"),
        "--log-level",
        "info",
        env={"FERRYMQ_API_PORT": str(api_port)},
    )
    try:
        assert proc.stdout is not None
        for line in proc.stdout:  # the URL is logged before the server is built
            if "management API on" in line:
                assert f"http://127.0.0.1:{api_port}/api/v4" in line
                break
        assert not _maps_aiohttp(proc.pid)
        assert "ferrymq is running" in _status_when_running(api_port)
        assert _maps_aiohttp(proc.pid)
    finally:
        _stop(proc)


@pytest.mark.parametrize("setting", ["FERRYMQ_API_PORT", "FERRYMQ_DASHBOARD_PORT"])
def test_a_taken_api_or_dashboard_port_fails_the_start(tmp_path, setting):
    """Their servers are built on first use, but their ports are bound at start."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = _start(
            tmp_path,
            "--port",
            str(free_port()),
            "--data-dir",
            str(tmp_path / "data"),
            env={setting: str(port)},
        )
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 1, out
    assert f"cannot bind 127.0.0.1:{port}: Address already in use" in out


def test_the_dashboard_is_loaded_on_its_first_request_and_serves_its_login(tmp_path):
    board_port = free_port()
    proc = _start(
        tmp_path,
        "--port",
        str(free_port()),
        "--data-dir",
        str(tmp_path / "data"),
        env={"FERRYMQ_DASHBOARD_PORT": str(board_port)},
    )
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if "dashboard on" in line:
                break
        assert not _maps_aiohttp(proc.pid)
        with urllib.request.urlopen(f"http://127.0.0.1:{board_port}/", timeout=30) as r:
            assert r.status == 200
            assert "<html" in r.read().decode().lower()
        assert _maps_aiohttp(proc.pid)
    finally:
        _stop(proc)
