"""The heartbeat under load: a node whose loop is saturated by local traffic stays alive for
the others (its key is extended from a thread of its own), and a node whose loop stops
answering still lets its key expire.

Real redis-server, real nodes, ``ferrymq bench`` as the load, redis-py to watch the keys."""

from __future__ import annotations

import asyncio
import threading
import time

from api_http import Api
from ferrymq.cluster.beat import KeepAlive
from ferrymq.cluster.redis_url import parse
from loadgen_cli import bench, finish, start_subscribers
from redis_server import RedisServer, connect, node_name, subscribed, wait_routed

LOAD_SECONDS = 10


class Watcher:
    """Polls Redis and node 2's API from a thread: every moment node 1's alive key, its
    route or its "Running" state was missing, as another node would have seen it."""

    def __init__(self, redis: RedisServer, api: Api, node: str, topic: str) -> None:
        self.client = redis.client()
        self.api = api
        self.node = node
        self.topic = topic
        self.gaps: list[str] = []
        self.looks = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.wait(0.1):
            self.looks += 1
            if not self.client.exists(f"ferrymq:alive:{self.node}"):
                self.gaps.append("alive key gone")
            if not self.client.hexists(f"ferrymq:route:{self.topic}", self.node):
                self.gaps.append("route gone")
            if self.looks % 10 == 0:
                status = (self.api.get(f"/nodes/{self.node}").data or {}).get("node_status")
                if status != "Running":
                    self.gaps.append(f"node 2 saw it {status}")

    def close(self) -> list[str]:
        self.stop.set()
        self.thread.join(5)
        return self.gaps


def test_a_node_under_saturating_local_load_stays_alive(make_cluster, clients, uid) -> None:
    redis, (n1, n2) = make_cluster(2)
    remote = subscribed(clients, n1.port, f"{uid}-remote", f"{uid}/x", 1)
    pub2 = connect(clients, n2.port, f"{uid}-pub2")
    wait_routed(pub2, remote, f"{uid}/x")  # a route of node 1 that node 2 must keep
    topic = f"{uid}/load"
    subs = start_subscribers(
        "-p", str(n1.port), "-c", "4", "-t", topic, "-q", "0", "-w", "1",
        "-d", str(LOAD_SECONDS + 8),
    )  # fmt: skip
    watcher = Watcher(redis, Api(n2.api_port), node_name(n1), f"{uid}/x")
    try:
        code, pub, err = bench(
            "pub", "-p", str(n1.port), "-c", "20", "-t", topic, "-q", "0", "-I", "0",
            "-w", "1", "-d", str(LOAD_SECONDS), timeout=LOAD_SECONDS + 60,
        )  # fmt: skip
    finally:
        gaps = watcher.close()
    finish(subs)
    assert code == 0, err
    assert pub["sent"] > 0
    assert watcher.looks > LOAD_SECONDS * 3, "the watcher itself ran"
    assert not gaps, f"node 1 looked down to the cluster during the load: {gaps[:5]}"
    assert "heartbeat lapsed" not in n1.log()
    assert "is down" not in n2.log()
    pub2.publish(f"{uid}/x", b"after", qos=1)  # its route held all along
    assert remote.get(timeout=10).payload == b"after"


def test_the_keepalive_stops_when_the_loop_stops_answering(tmp_path) -> None:
    """It extends the key while the loop runs, lets it expire while the loop is blocked,
    never recreates a lapsed key, and never touches another process's claim."""
    server = RedisServer(tmp_path / "redis").start()
    try:
        r = server.client()
        key = "ferrymq:alive:solo"

        async def scenario() -> dict[str, object]:
            seen: dict[str, object] = {}
            r.set(key, "token-1", px=2000)
            keep = KeepAlive(parse(server.url), key, b"token-1", 2000)
            keep.active = True
            keep.start()
            await asyncio.sleep(5.0)  # past two lifetimes of the key, the loop answering
            seen["extended"] = r.get(key)
            time.sleep(6.0)  # the loop blocked: no extensions after LOOP_STALL
            seen["stalled"] = r.get(key)
            await asyncio.sleep(2.0)  # the loop answers again: a lapsed key stays lapsed
            seen["after"] = r.get(key)
            r.set(key, "someone-else", px=2000)
            await asyncio.sleep(3.0)
            seen["other"] = r.get(key)
            keep.stop()
            return seen

        seen = asyncio.run(scenario())
    finally:
        server.stop()
    assert seen == {"extended": "token-1", "stalled": None, "after": None, "other": None}
