"""Redis restarted without persistence, refilled by the nodes: each admin record and each
retained topic ends with its newest change, deletions included, whichever node reconnects
first, also when that is a node that was stopped across the changes; and a node cut off from
Redis while a retained topic was cleared elsewhere does not bring it back. Real
redis-server, real nodes, real HTTP."""

from __future__ import annotations

import base64
import contextlib
import signal
import socket
import threading
from pathlib import Path
from urllib.parse import quote

import pytest

from api_http import Api
from brokers import BrokerProcess, free_port
from clients import connack_code
from redis_server import RedisServer, start_nodes, wait_until

pytestmark = pytest.mark.timeout(150)

CLOSED = ("--no-allow-anonymous",)  # a client needs credentials: a record is visible
SPREAD = 10.0


def logs_in(node: BrokerProcess, user: str, password: str) -> bool:
    return connack_code(node.port, f"{user}-c", user, password) == 0


def users(node: BrokerProcess) -> set[str]:
    return {r["username"] for r in Api(node.api_port).ok("GET", "/auth_username")}


def retained(node: BrokerProcess, topic: str) -> bytes | None:
    r = Api(node.api_port).get(f"/retained/{quote(topic, safe='')}")
    if r.status == 404:
        return None
    assert r.status == 200, r
    return base64.b64decode(r.data["payload"])


def retain(node: BrokerProcess, topic: str, payload: str) -> None:
    Api(node.api_port).ok(
        "POST", "/mqtt/publish", {"topic": topic, "payload": payload, "retain": True}
    )


def _cont(node: BrokerProcess) -> None:
    if node.proc is not None:
        node.proc.send_signal(signal.SIGCONT)


@pytest.mark.parametrize("first", ["stale", "fresh"])
def test_a_node_stopped_across_a_deletion_does_not_bring_it_back(
    tmp_path: Path, uid: str, first: str
) -> None:
    """Node 2 is stopped while node 1 deletes one user and changes another; Redis restarts
    empty; ``first`` says which node fills it first: the stale node 2 or node 1."""
    redis = RedisServer(tmp_path / "redis").start()
    nodes = start_nodes(redis, tmp_path, 2, *CLOSED)
    n1, n2 = nodes
    a1 = Api(n1.api_port)
    try:
        for name in ("keep", "gone", "changed"):
            a1.ok("POST", "/auth_username", {"username": f"{uid}-{name}", "password": "pw"})
        cleared, changed = f"{uid}/r/cleared", f"{uid}/r/changed"
        retain(n1, cleared, "a")
        retain(n1, changed, "old")
        assert wait_until(lambda: logs_in(n2, f"{uid}-changed", "pw"), SPREAD)
        assert wait_until(lambda: retained(n2, changed) == b"old", SPREAD)
        assert retained(n2, cleared) == b"a"
        n2.stop()
        a1.ok("DELETE", f"/auth_username/{uid}-gone")
        a1.ok("PUT", f"/auth_username/{uid}-changed", {"password": "two"})
        a1.ok("DELETE", f"/retained/{quote(cleared, safe='')}")
        retain(n1, changed, "new")

        redis.stop()
        assert n1.wait_log("unreachable", timeout=15)
        if first == "stale":
            assert n1.proc is not None
            n1.proc.send_signal(signal.SIGSTOP)  # node 1 reconnects only after node 2
        redis.start()
        if first == "stale":
            assert not redis.client().exists("ferrymq:admin:username")  # it lost everything
        else:
            assert n1.wait_log("Redis is back", 20)
        n2.start()
        if first == "stale":
            # The stale copy is in Redis for now: the deleted user is back there.
            r = redis.client()
            assert wait_until(lambda: r.hexists("ferrymq:admin:username", f"{uid}-gone"), 20)
            assert wait_until(lambda: r.hexists("ferrymq:retained", cleared), 20)
            _cont(n1)

        expected = {f"{uid}-keep", f"{uid}-changed"}
        for node in nodes:
            assert wait_until(lambda node=node: users(node) == expected, 30), users(node)
            assert wait_until(lambda node=node: logs_in(node, f"{uid}-changed", "two"), SPREAD)
            assert not logs_in(node, f"{uid}-gone", "pw")
            assert not logs_in(node, f"{uid}-changed", "pw")
        assert set(redis.client().hkeys("ferrymq:admin:username")) == expected
        for node in nodes:
            assert wait_until(lambda node=node: retained(node, changed) == b"new", SPREAD)
            assert wait_until(lambda node=node: retained(node, cleared) is None, SPREAD)
        assert not redis.client().hexists("ferrymq:retained", cleared)
    finally:
        _cont(n1)
        for node in nodes:
            node.stop()
        redis.stop()


class Relay:
    """A TCP relay from a free port to Redis, which ``cut`` closes (every connection, and
    the port) and ``mend`` opens again: one node cut off from Redis, the others not."""

    def __init__(self, target_port: int) -> None:
        self.target = target_port
        self.port = free_port()
        self._server: socket.socket | None = None
        self._open: list[socket.socket] = []
        self.mend()

    def mend(self) -> None:
        server = socket.create_server(("127.0.0.1", self.port))
        self._server = server
        threading.Thread(target=self._accept, args=(server,), daemon=True).start()

    def cut(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            with contextlib.suppress(OSError):
                server.shutdown(socket.SHUT_RDWR)  # wakes the accepting thread
            server.close()
        for sock in self._open:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        self._open.clear()

    def _accept(self, server: socket.socket) -> None:
        while True:
            try:
                near, _ = server.accept()
                far = socket.create_connection(("127.0.0.1", self.target))
            except OSError:
                return
            self._open += [near, far]
            for a, b in ((near, far), (far, near)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                dst.sendall(data)
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)


def test_a_retained_topic_cleared_while_a_node_was_cut_off_stays_cleared(
    tmp_path: Path, uid: str
) -> None:
    redis = RedisServer(tmp_path / "redis").start()
    relay = Relay(redis.port)
    nodes = start_nodes(redis, tmp_path, 1)
    try:
        n1 = nodes[0]
        n2 = BrokerProcess(
            tmp_path / "node2",
            *("--node-name", "node2@127.0.0.1"),
            *("--cluster-redis-url", f"redis://127.0.0.1:{relay.port}/0"),
        )
        nodes.append(n2.start())
        assert n2.wait_log("joined through", 15)
        cleared, kept = f"{uid}/cut/cleared", f"{uid}/cut/kept"
        retain(n1, cleared, "a")
        retain(n1, kept, "b")
        assert wait_until(lambda: retained(n2, cleared) == b"a", SPREAD)

        relay.cut()
        assert n2.wait_log("unreachable", 15)
        a1 = Api(n1.api_port)
        a1.ok("DELETE", f"/retained/{quote(cleared, safe='')}")
        assert retained(n2, cleared) == b"a"  # cut off: it still has it
        relay.mend()
        assert n2.wait_log("Redis is back", 30)

        # Its resync did not bring the topic back: it cleared its own copy instead.
        assert not redis.client().hexists("ferrymq:retained", cleared)
        assert wait_until(lambda: retained(n2, cleared) is None, SPREAD)
        assert retained(n1, cleared) is None
        assert retained(n1, kept) == retained(n2, kept) == b"b"
        assert all(n.alive() for n in nodes)
    finally:
        for node in nodes:
            node.stop()
        relay.cut()
        redis.stop()
