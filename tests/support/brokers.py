"""The real broker as a subprocess, for the system tests: its own data directory and free ports.

The fixtures that start brokers live in tests/system/conftest.py, so nothing under tests/unit
can start one by accident; this module only knows how.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.02)
    raise TimeoutError(f"nothing listening on port {port}")


# Credentials of the API app every test broker creates at start (api_http.py).
API_APP_ID = "test-app"
API_APP_SECRET = "test-secret"


def rss_kib(pid: int) -> int:
    """The resident memory of process ``pid``, in KiB (``VmRSS``)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


class BrokerProcess:
    """One ``ferrymq start`` subprocess with its own data directory and port."""

    def __init__(self, data_dir: Path, *args: str, env: dict[str, str] | None = None) -> None:
        self.data_dir = data_dir
        self.args = list(args)
        self.env = env or {}
        self.port = free_port()
        self.api_port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = data_dir / f"broker-{uuid.uuid4().hex[:6]}.log"

    def start(self) -> BrokerProcess:
        self.launch()
        return self.wait_started()

    def launch(self) -> None:
        """Start the process without waiting for it (several brokers start side by side)."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ, **self.env)
        env.setdefault("PYTHONUNBUFFERED", "1")
        env.setdefault("FERRYMQ_API_APP_ID", API_APP_ID)
        env.setdefault("FERRYMQ_API_APP_SECRET", API_APP_SECRET)
        cmd = [
            sys.executable,
            "-m",
            "ferrymq",
            "start",
            "--port",
            str(self.port),
            "--data-dir",
            str(self.data_dir),
            "--log-level",
            "debug",
            "--api-port",
            str(self.api_port),
            "--dashboard-port",  # no dashboard unless a test asks for one
            "0",
            *self.args,
        ]
        self._log = open(self.log_path, "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, env=env)

    def wait_started(self) -> BrokerProcess:
        """Wait for the listeners of a launched broker."""
        try:
            wait_port(self.port)
            # The API starts right after the MQTT listeners.
            if self._api_enabled():
                wait_port(self.api_port)
            else:
                self.wait_log("management API disabled")
        except TimeoutError:
            self.stop()
            raise RuntimeError("broker did not start:\n" + self.log()) from None
        return self

    def wait_log(self, text: str, timeout: float = 5.0) -> bool:
        """Wait until ``text`` is in the log; whether it came in time."""
        deadline = time.monotonic() + timeout
        while text not in self.log() and time.monotonic() < deadline:
            time.sleep(0.02)
        return text in self.log()

    def _api_enabled(self) -> bool:
        args = self.args
        ports = [args[i + 1] for i, a in enumerate(args[:-1]) if a == "--api-port"]
        return not ports or ports[-1] != "0"

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int:
        proc = self.proc
        if proc is None:
            return 0
        if proc.poll() is None:
            proc.send_signal(sig)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.proc = None
        self._log.close()
        return proc.returncode

    def restart(self) -> BrokerProcess:
        port = self.port
        self.stop()
        self.port = port
        return self.start()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
