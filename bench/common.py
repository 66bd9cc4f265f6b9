"""Shared pieces of the benchmark driver: paths, the load generator, brokers, /proc sampling.

Every broker runs pinned to BROKER_CPU and the generator to GEN_CPU, on
loopback ports 18830-18839, and each is stopped by its own process id.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
WORK = Path(os.environ.get("BENCH_WORK", BENCH / "work"))
# The C generator: a built binary (MQTTBENCH), else built from its source (MQTTBENCH_SRC).
MQTTBENCH_SRC = Path(
    os.environ.get("MQTTBENCH_SRC", ROOT.parent / "shared" / "tools" / "mqttbench" / "mqttbench.c")
)
MQTTBENCH = Path(os.environ.get("MQTTBENCH", WORK / "mqttbench"))
AMQTT_VENV = Path(os.environ.get("AMQTT_VENV", WORK / "amqtt-venv"))
MOSQUITTO = os.environ.get("MOSQUITTO", "/usr/sbin/mosquitto")
GEN_CPU = os.environ.get("GEN_CPU", "0")
BROKER_CPU = os.environ.get("BROKER_CPU", "1")
HOST = "127.0.0.1"
API_PORT = int(os.environ.get("FERRYMQ_BENCH_API_PORT", "18839"))  # ferrymq's management API


def log(msg: str) -> None:
    print(time.strftime("%H:%M:%S"), msg, file=sys.stderr, flush=True)


def ensure_mqttbench() -> Path:
    """Build the generator from its source when the binary is missing or older."""
    src = MQTTBENCH_SRC
    if MQTTBENCH.exists() and (
        not src.exists() or MQTTBENCH.stat().st_mtime >= src.stat().st_mtime
    ):
        return MQTTBENCH
    if not src.exists():
        raise SystemExit(f"no generator at {MQTTBENCH} and no source at {src} (set MQTTBENCH)")
    MQTTBENCH.parent.mkdir(parents=True, exist_ok=True)
    log(f"building {MQTTBENCH} from {src}")
    subprocess.run(
        [os.environ.get("CC", "gcc"), "-O2", "-g", "-Wall", "-o", str(MQTTBENCH), str(src), "-lm"],
        check=True,
    )
    return MQTTBENCH


def ensure_mosquitto() -> None:
    if Path(MOSQUITTO).exists():
        return
    log("mosquitto missing: apt-get install -y mosquitto")
    subprocess.run(["apt-get", "update", "-qq"], check=False)
    subprocess.run(["apt-get", "install", "-y", "-qq", "mosquitto"], check=True)
    # the package enables a system service on 1883; the benchmark runs its own instance
    subprocess.run(["systemctl", "disable", "--now", "mosquitto"], check=False, capture_output=True)


def ensure_amqtt() -> None:
    if (AMQTT_VENV / "bin" / "amqtt").exists():
        return
    log(f"amqtt missing: creating {AMQTT_VENV}")
    subprocess.run([sys.executable, "-m", "venv", str(AMQTT_VENV)], check=True)
    subprocess.run([str(AMQTT_VENV / "bin" / "pip"), "install", "-q", "amqtt"], check=True)


def port_open(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=0.5):
            return True
    except OSError:
        return False


@dataclass
class BrokerSpec:
    name: str
    port: int
    version: str = ""
    data_dir: Path | None = None
    flags: list[str] = field(default_factory=list)  # extra ferrymq flags
    persist: bool = False  # Mosquitto: persistence on (ferrymq always persists)
    cpu: str = ""  # the CPU to pin it to (default BROKER_CPU)

    def command(self, reuse: bool = False) -> list[str]:
        """The command line; ``reuse`` keeps the data directory of the last start."""
        if self.name == "ferrymq":
            if not reuse or self.data_dir is None:
                self.data_dir = Path(tempfile.mkdtemp(prefix="ferrymq-bench-", dir=WORK))
            return [
                sys.executable,
                "-m",
                "ferrymq",
                "start",
                "--port",
                str(self.port),
                "--data-dir",
                str(self.data_dir),
                "--log-level",
                "warning",
                *ferrymq_extra_flags(),
                *self.flags,
            ]
        if self.name == "mosquitto" and self.persist:
            if not reuse or self.data_dir is None:
                self.data_dir = Path(tempfile.mkdtemp(prefix="mosquitto-bench-", dir=WORK))
                self.data_dir.chmod(0o777)  # started as root, Mosquitto writes as its own user
                conf = (BENCH / "configs" / "mosquitto-persist.conf").read_text()
                (self.data_dir / "mosquitto.conf").write_text(
                    conf + f"persistence_location {self.data_dir}/\n"
                )
            return [MOSQUITTO, "-c", str(self.data_dir / "mosquitto.conf")]
        if self.name == "mosquitto":
            return [MOSQUITTO, "-c", str(BENCH / "configs" / "mosquitto.conf")]
        if self.name == "amqtt":
            return [str(AMQTT_VENV / "bin" / "amqtt"), "-c", str(BENCH / "configs" / "amqtt.yaml")]
        raise ValueError(self.name)


BROKERS = {
    "ferrymq": BrokerSpec("ferrymq", 18835),
    "mosquitto": BrokerSpec("mosquitto", 18831),
    "amqtt": BrokerSpec("amqtt", 18832),
}


def ferrymq_extra_flags() -> list[str]:
    """Flags that keep side listeners out of the way, for the settings this version has."""
    from ferrymq.config import Settings

    names = set(Settings.__dataclass_fields__)
    extra: list[str] = []
    if "api_port" in names:
        extra += ["--api-port", str(API_PORT)]
    if "dashboard_port" in names:
        extra += ["--dashboard-port", "0"]
    return extra + os.environ.get("FERRYMQ_BENCH_FLAGS", "").split()


def versions() -> dict[str, str]:
    from ferrymq import __version__, native

    # The broker runs with this process' environment: FERRYMQ_PURE_PYTHON applies to both.
    out = {"ferrymq": __version__, "python": sys.version.split()[0], "build": native.SUMMARY}
    try:
        commit = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(ROOT), "status", "--porcelain", "--", "src"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip()
        if commit:
            out["ferrymq"] += f" ({commit}{' + uncommitted changes' if dirty else ''})"
    except OSError:
        pass
    try:
        import uvloop

        out["uvloop"] = uvloop.__version__
    except ImportError:
        out["uvloop"] = "none"
    mosq = subprocess.run([MOSQUITTO, "-h"], capture_output=True, text=True, check=False)
    first = (mosq.stdout or mosq.stderr).splitlines()
    out["mosquitto"] = first[0].split()[-1] if first else "?"
    try:
        pip = subprocess.run(
            [
                str(AMQTT_VENV / "bin" / "python"),
                "-c",
                "import importlib.metadata as m;print(m.version('amqtt'))",
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        out["amqtt"] = pip.stdout.strip() or "?"
    except OSError:  # not installed: a run without amqtt
        out["amqtt"] = "-"
    return out


def machine() -> dict[str, Any]:
    model = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as f:
        mem_kb = int(f.readline().split()[1])
    return {
        "cpus": os.cpu_count(),
        "model": model,
        "mem_gib": round(mem_kb / 1048576, 1),
        "kernel": os.uname().release,
        "gen_cpu": GEN_CPU,
        "broker_cpu": BROKER_CPU,
    }


class RssSampler(threading.Thread):
    """Samples a process's VmRSS every ``interval`` seconds while a measurement runs."""

    def __init__(self, pid: int, interval: float = 0.5) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.interval = interval
        self.samples: list[int] = []
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            rss = read_rss_kb(self.pid)
            if rss:
                self.samples.append(rss)
            self._stop_event.wait(self.interval)

    def stop(self) -> list[int]:
        self._stop_event.set()
        self.join()
        return self.samples


def read_rss_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


@dataclass
class RunningBroker:
    spec: BrokerSpec
    proc: subprocess.Popen[bytes]
    log_path: Path
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def pid(self) -> int:
        return self.proc.pid


def spawn_broker(spec: BrokerSpec, reuse: bool = False) -> subprocess.Popen[bytes]:
    """Start the broker process pinned to BROKER_CPU, without waiting for it."""
    WORK.mkdir(parents=True, exist_ok=True)
    with open(WORK / f"{spec.name}.log", "ab") as logf:
        return subprocess.Popen(
            ["taskset", "-c", spec.cpu or BROKER_CPU, *spec.command(reuse)],
            stdout=logf,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )


def start_broker(spec: BrokerSpec) -> RunningBroker:
    if port_open(spec.port):
        raise RuntimeError(f"port {spec.port} is already in use; stop what listens there")
    proc = spawn_broker(spec)
    log_path = WORK / f"{spec.name}.log"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{spec.name} exited with {proc.returncode}; see {log_path}")
        if port_open(spec.port):
            time.sleep(0.3)
            return RunningBroker(spec, proc, log_path)
        time.sleep(0.05)
    stop_broker(RunningBroker(spec, proc, log_path))
    raise RuntimeError(f"{spec.name} did not start listening; see {log_path}")


def stop_process(proc: subprocess.Popen[Any], timeout: float) -> None:
    """SIGTERM, then SIGKILL if ``proc`` has not exited within ``timeout`` seconds."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def stop_broker(broker: RunningBroker) -> None:
    proc = broker.proc
    stop_process(proc, 8)
    if broker.spec.data_dir is not None:
        shutil.rmtree(broker.spec.data_dir, ignore_errors=True)
        broker.spec.data_dir = None
    deadline = time.monotonic() + 5
    while port_open(broker.spec.port) and time.monotonic() < deadline:
        time.sleep(0.1)


def run_mqttbench(broker: RunningBroker, label: str, args: list[str], limit: int = 150) -> dict:
    """One generator run pinned to GEN_CPU; always returns a result dict."""
    cmd = [
        "timeout",
        "-s",
        "INT",
        "-k",
        "5",
        str(limit),
        "taskset",
        "-c",
        GEN_CPU,
        str(MQTTBENCH),
        "-h",
        HOST,
        "-p",
        str(broker.spec.port),
        "--broker-pid",
        str(broker.pid),
        "-l",
        label,
        *args,
    ]
    sampler = RssSampler(broker.pid)
    sampler.start()
    r = subprocess.run(cmd, capture_output=True, text=True, check=False)
    rss = sampler.stop()
    line = r.stdout.strip().splitlines()[-1] if r.stdout.strip() else ""
    try:
        d = json.loads(line)
    except json.JSONDecodeError:
        d = {
            "label": label,
            "status": "generator_failed",
            "rc": r.returncode,
            "stderr": r.stderr[-500:],
        }
    if rss:
        d["rss_peak_kb"] = max(rss)
    return d
