"""A real ``redis-server`` as a subprocess for the cluster tests (Debian's package;
``.ci/run`` installs it): its own free port, nothing saved to disk."""

from __future__ import annotations

import queue
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis

from brokers import BrokerProcess, free_port, wait_port
from clients import V5, TestClient, props


class RedisServer:
    """``redis-server --port <free> --save '' --appendonly no``; restartable on the same port."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        #: More ``redis-server`` options, after the defaults (a later one wins).
        self.extra: list[str] = []

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @staticmethod
    def available() -> bool:
        return shutil.which("redis-server") is not None

    def start(self) -> RedisServer:
        self.workdir.mkdir(parents=True, exist_ok=True)
        log = open(self.workdir / "redis.log", "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [
                *("redis-server", "--port", str(self.port), "--bind", "127.0.0.1"),
                *("--save", "", "--appendonly", "no", "--dir", str(self.workdir)),
                *self.extra,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        wait_port(self.port)
        return self

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def client(self) -> redis.Redis:
        """A blocking redis-py client, for looking at what the nodes keep."""
        return redis.Redis(port=self.port, decode_responses=True)


def start_nodes(
    server: RedisServer, root: Path, count: int, *args: str, url: str | None = None
) -> list[BrokerProcess]:
    """``count`` ferrymq nodes joined through ``server`` (at ``url`` if given: a TLS or
    Sentinel URL), started side by side."""
    nodes = [
        BrokerProcess(
            root / f"node{i}",
            "--node-name",
            f"node{i}@127.0.0.1",
            "--cluster-redis-url",
            url or server.url,
            *args,
        )
        for i in range(1, count + 1)
    ]
    for node in nodes:
        node.launch()
    for node in nodes:
        node.wait_started()
    for node in nodes:  # joined: each node logs it once its first resync is done
        node.wait_log("joined through")
    return nodes


def wait_until(predicate: Callable[[], object], timeout: float = 5.0, every: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(every)
    return bool(predicate())


PROBE = b"route-probe"


def wait_routed(
    publisher: TestClient, subscriber: TestClient, topic: str, timeout: float = 5.0
) -> None:
    """Publish probes to ``topic`` until ``subscriber`` (on another node) gets one, then
    drain the probes: the route is then in the publisher's node's replica."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        publisher.publish(topic, PROBE)
        try:
            if subscriber.get(timeout=0.1).payload == PROBE:
                break
        except queue.Empty:
            continue
    else:
        raise AssertionError(f"no route to {topic} reached the publisher's node")
    drain(subscriber)


def drain(subscriber: TestClient, wait: float = 0.3) -> None:
    """Take the probes still on their way; anything else is an error."""
    while True:
        try:
            msg = subscriber.get(timeout=wait)
        except queue.Empty:
            return
        assert msg.payload == PROBE, f"unexpected {msg.topic}: {msg.payload!r}"


def node_name(node: BrokerProcess) -> str:
    """The ``--node-name`` a node was started with."""
    return node.args[node.args.index("--node-name") + 1]


def connect(made: list[TestClient], port: int, client_id: str) -> TestClient:
    """An MQTT 5 client connected to ``port``, added to ``made`` (the ``clients`` fixture)."""
    c = TestClient(client_id, protocol=V5)
    c.connect(port)
    made.append(c)
    return c


def persistent(made: list[TestClient], port: int, client_id: str, present: bool) -> TestClient:
    """An MQTT 5 client resuming (clean start 0, expiry 300 s); asserts session present."""
    c = TestClient(client_id, protocol=V5, reconnect_on_failure=False)
    flags, _, _ = c.connect(port, clean=False, properties=props(SessionExpiryInterval=300))
    assert bool(flags.session_present) is present, f"session present on port {port}"
    made.append(c)
    return c


def subscribed(
    made: list[TestClient], port: int, client_id: str, topic: Any, qos: int = 0, **kw: Any
) -> TestClient:
    """``connect``, then subscribe to ``topic`` (a filter, or a list of (filter, QoS))."""
    c = connect(made, port, client_id)
    c.subscribe(topic, qos, **kw)
    return c


def received(sub: TestClient, wait: float = 0.3) -> list:  # type: ignore[type-arg]
    """The messages that come until none has for ``wait`` seconds, probes left out."""
    out = []
    while True:
        try:
            msg = sub.get(timeout=wait)
        except queue.Empty:
            return out
        if msg.payload != PROBE:
            out.append(msg)
