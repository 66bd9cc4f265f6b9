"""The dashboard in a cluster: its users are cluster-wide (added, changed or deleted on
one node's data directory, in force on every node's dashboard), and a dashboard served
without the API shows every node. Real redis-server, real nodes, real HTTP."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from api_http import Api, wait_for
from brokers import BrokerProcess, free_port, wait_port
from ferrymq.cli import main
from redis_server import RedisServer, connect, node_name

pytestmark = pytest.mark.timeout(120)

SPREAD = 5.0  # generous on a loaded machine; it takes well under a second here
ENV = {"FERRYMQ_DASHBOARD_PASSWORD": "admin-pw"}


class Board:
    """One node's dashboard listener, logged in or not, as a browser uses it."""

    def __init__(self, port: int) -> None:
        self.http = Api(port, auth=None)
        self.cookie = ""

    def login(self, username: str, password: str) -> bool:
        r = self.http.post("/session", {"username": username, "password": password}, prefix="")
        if r.status == 200:
            self.cookie = r.headers["Set-Cookie"].split(";", 1)[0]
        return r.status == 200

    def get(self, path: str):  # type: ignore[no-untyped-def]
        return self.http.get(path, headers={"Cookie": self.cookie})


@pytest.fixture
def boards(tmp_path: Path) -> Iterator[list]:  # type: ignore[type-arg]
    """``boards.start(count, *args)``: nodes with dashboards, each a (node, Board)."""
    made: list[tuple[BrokerProcess, Board]] = []
    redis = RedisServer(tmp_path / "redis").start()

    def start(count: int, *args: str) -> list[tuple[BrokerProcess, Board]]:
        nodes = []
        for i in range(1, count + 1):
            port = free_port()
            node = BrokerProcess(
                tmp_path / f"node{i}",
                *("--node-name", f"node{i}@127.0.0.1", "--cluster-redis-url", redis.url),
                *("--dashboard-port", str(port), *args),
                env=ENV,
            )
            node.launch()
            nodes.append((node, port))
        for node, port in nodes:
            node.wait_started()
            wait_port(port)
            made.append((node, Board(port)))
        for node, _port in nodes:
            node.wait_log("joined through")
        return made

    out: list = [start]  # type: ignore[type-arg]
    yield out
    for node, _board in made:
        node.stop()
    redis.stop()


def test_a_dashboard_user_added_on_one_node_logs_in_on_every_node(boards, uid) -> None:
    (n1, b1), (n2, b2) = boards[0](2)
    data1 = ["--data-dir", str(n1.data_dir)]
    data2 = ["--data-dir", str(n2.data_dir)]
    user = f"{uid}-ops"
    assert not b2.login(user, "one")

    assert main(["dashboard", "users", "add", user, "-p", "one", "--desc", "on call", *data1]) == 0
    start = time.monotonic()
    wait_for(lambda: b2.login(user, "one"), timeout=SPREAD, interval=0.05)
    print(
        f"a dashboard user added on node 1 logged in on node 2 after "
        f"{(time.monotonic() - start) * 1000:.0f} ms"
    )
    assert b2.get("/clients").code == 0
    assert not Board(b2.http.port).login(user, "wrong")

    # A new password set on node 1 ends the session on node 2 (sessions re-check their
    # user every few seconds) and is the one that logs in there.
    assert main(["dashboard", "users", "passwd", user, "-p", "two", *data1]) == 0
    wait_for(lambda: b2.get("/clients").status == 401, timeout=15, interval=0.5)
    assert wait_for(lambda: b2.login(user, "two"), timeout=SPREAD, interval=0.05)
    assert not Board(b2.http.port).login(user, "one")

    # Deleted on node 2: gone from node 1 too.
    assert main(["dashboard", "users", "delete", user, *data2]) == 0
    wait_for(lambda: not Board(b1.http.port).login(user, "two"), timeout=SPREAD, interval=0.1)
    assert b1.login("admin", "admin-pw") and b2.login("admin", "admin-pw")


def test_a_dashboard_without_the_api_shows_every_node(boards, clients, uid) -> None:
    (n1, b1), (n2, b2) = boards[0](2, "--api-port", "0")
    assert b1.login("admin", "admin-pw")
    connect(clients, n2.port, f"{uid}-on2")
    connect(clients, n1.port, f"{uid}-on1")
    both = [node_name(n1), node_name(n2)]
    # A node learns of the others from their heartbeats (one a second).
    nodes = wait_for(lambda: (d := b1.get("/nodes").data) and len(d) == 2 and d, timeout=SPREAD)
    assert sorted(n["node"] for n in nodes) == both
    assert all(n["node_status"] == "Running" for n in nodes)
    listed = b1.get("/clients").data
    assert {(c["clientid"], c["node"]) for c in listed} == {
        (f"{uid}-on1", node_name(n1)),
        (f"{uid}-on2", node_name(n2)),
    }
    metrics = b1.get("/metrics").data
    assert sorted(m["node"] for m in metrics) == both
    # The node answers the others' requests too: node 2's dashboard sees node 1's client.
    assert b2.login("admin", "admin-pw")
    wait_for(lambda: len(b2.get("/nodes").data or []) == 2, timeout=SPREAD)
    on1 = b2.get(f"/nodes/{node_name(n1)}/clients").data
    assert [c["clientid"] for c in on1] == [f"{uid}-on1"]
