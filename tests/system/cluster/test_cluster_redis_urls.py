"""The other forms of ``cluster_redis_url`` for real: a Redis over TLS (``rediss://``), a
highly available Redis found through redis-sentinel that fails over to its replica under
running nodes, the same with TLS everywhere (``rediss+sentinel://``), and a malformed URL
refused at start."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis

from api_http import Api
from brokers import BrokerProcess, free_port, wait_port
from clients import connack_code
from ferrymq.commands.certs import write_dev_certs
from redis_server import (
    RedisServer,
    connect,
    node_name,
    received,
    start_nodes,
    subscribed,
    wait_routed,
    wait_until,
)

pytestmark = pytest.mark.timeout(120)


def crosses(clients, n1, n2, uid: str, topic: str) -> None:  # type: ignore[no-untyped-def]
    """A message published on node 1 reaches a subscriber on node 2."""
    sub = subscribed(clients, n2.port, f"{uid}-sub-{topic}", f"{uid}/{topic}/#", 1)
    pub = connect(clients, n1.port, f"{uid}-pub-{topic}")
    wait_routed(pub, sub, f"{uid}/{topic}/x", timeout=15)
    pub.publish(f"{uid}/{topic}/x", b"across", qos=1)
    assert [m.payload for m in received(sub, 1.0)] == [b"across"]


def user_spreads(n1, n2, user: str) -> None:  # type: ignore[no-untyped-def]
    """A user added on node 1 is known on node 2 (anonymous clients are allowed, so a wrong
    password refused is the sign)."""
    assert connack_code(n2.port, f"{user}-c", user, "wrong") == 0
    Api(n1.api_port).ok("POST", "/auth_username", {"username": user, "password": "pw"})
    assert wait_until(lambda: connack_code(n2.port, f"{user}-c", user, "wrong") != 0, 10)
    assert connack_code(n2.port, f"{user}-c", user, "pw") == 0


def tls_options(certs: Path) -> dict[str, str]:
    """redis-server's TLS options (``tls-...``) for the certificates in ``certs``."""
    files = {name: str(certs / name) for name in ("server.pem", "server.key", "ca.pem")}
    return {
        "tls-auth-clients": "no",
        "tls-cert-file": files["server.pem"],
        "tls-key-file": files["server.key"],
        "tls-ca-cert-file": files["ca.pem"],
        "tls-replication": "yes",  # a replica and a Sentinel reach their master over TLS
    }


def tls_server(workdir: Path, certs: Path) -> RedisServer:
    """A redis-server (not started) that will speak TLS only, on its port."""
    server = RedisServer(workdir)
    server.extra = ["--port", "0", "--tls-port", str(server.port)]
    for name, value in tls_options(certs).items():
        server.extra += [f"--{name}", value]
    return server


def tls_redis(root: Path) -> tuple[RedisServer, Path]:
    """A redis-server that speaks TLS only, with a certificate of a CA made for the test."""
    certs = root / "certs"
    write_dev_certs(certs, ["127.0.0.1"])
    return tls_server(root / "redis", certs).start(), certs


def test_nodes_join_through_a_redis_over_tls(tmp_path: Path, clients, uid) -> None:
    server, certs = tls_redis(tmp_path)
    nodes = []
    try:
        tls = f"rediss://127.0.0.1:{server.port}/0?ssl_ca_certs={certs / 'ca.pem'}"
        nodes = start_nodes(server, tmp_path, 2, url=tls)
        n1, n2 = nodes
        crosses(clients, n1, n2, uid, "tls")
        user_spreads(n1, n2, f"{uid}-tls")
        plain = redis.Redis(port=server.port, ssl=True, ssl_ca_certs=str(certs / "ca.pem"))
        # The nodes' records are in the Redis they reached over TLS.
        assert plain.exists(f"ferrymq:alive:{node_name(n1)}")
        plain.close()
    finally:
        for node in nodes:
            node.stop()
        server.stop()


def test_a_node_that_does_not_trust_the_redis_certificate_says_so(tmp_path: Path) -> None:
    server, _certs = tls_redis(tmp_path)  # the node is not told of its CA
    node = BrokerProcess(
        tmp_path / "node",
        *("--node-name", "lonely@127.0.0.1"),
        *("--cluster-redis-url", f"rediss://127.0.0.1:{server.port}/0"),
    )
    try:
        node.start()
        assert node.wait_log("unreachable", timeout=15)
        assert "certificate" in node.log().lower()
        assert connack_code(node.port, "local", "", "") == 0  # it serves its own clients
    finally:
        node.stop()
        server.stop()


def sentinel_available() -> bool:
    return shutil.which("redis-sentinel") is not None


class Sentinel:
    """``redis-sentinel`` watching one master, on a free port."""

    def __init__(
        self, workdir: Path, master_port: int, certs: Path | None = None, side: str = "both"
    ) -> None:
        """``certs``: TLS only, with those certificates, to its clients and to the master
        (``side`` "both"), to its clients alone ("sentinels") or to the master alone
        ("master")."""
        self.workdir = workdir
        self.port = free_port()
        workdir.mkdir(parents=True, exist_ok=True)
        conf = workdir / "sentinel.conf"
        tls_clients = certs is not None and side != "master"
        if certs is None:
            listen = f"port {self.port}\n"
        else:
            options = tls_options(certs)
            options["tls-replication"] = "no" if side == "sentinels" else "yes"
            ports = f"port 0\ntls-port {self.port}\n" if tls_clients else f"port {self.port}\n"
            listen = ports + "".join(f"{name} {value}\n" for name, value in options.items())
        conf.write_text(
            f"{listen}bind 127.0.0.1\ndir {workdir}\n"
            f"sentinel monitor mymaster 127.0.0.1 {master_port} 1\n"
            "sentinel down-after-milliseconds mymaster 1000\n"
            "sentinel failover-timeout mymaster 10000\n"
        )
        log = open(workdir / "sentinel.log", "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(["redis-sentinel", str(conf)], stdout=log, stderr=log)
        log.close()
        wait_port(self.port)
        tls = {"ssl": True, "ssl_ca_certs": str(certs / "ca.pem")} if tls_clients else {}
        self.client = redis.Redis(port=self.port, decode_responses=True, **tls)

    def master_port(self) -> int:
        return int(self.client.sentinel_get_master_addr_by_name("mymaster")[1])

    def replicas_ready(self) -> bool:
        replicas = self.client.sentinel_slaves("mymaster")
        return bool(replicas) and all(r["master-link-status"] == "ok" for r in replicas)

    def stop(self) -> None:
        self.client.close()
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@pytest.mark.skipif(not sentinel_available(), reason="redis-sentinel is not installed")
@pytest.mark.parametrize("tls", [False, True], ids=["plain", "tls"])
def test_nodes_follow_a_sentinel_failover_to_the_new_master(
    tmp_path: Path, clients, uid, tls: bool
) -> None:
    """With ``tls``: the master, its replica and the Sentinel speak TLS only, and the nodes
    reach all of them through ``rediss+sentinel://``."""
    certs = tmp_path / "certs"
    if tls:
        write_dev_certs(certs, ["127.0.0.1"])
        master, replica = (
            tls_server(tmp_path / "master", certs),
            tls_server(tmp_path / "replica", certs),
        )
    else:
        master, replica = RedisServer(tmp_path / "master"), RedisServer(tmp_path / "replica")
    master.start()
    replica.extra += ["--replicaof", "127.0.0.1", str(master.port)]
    replica.start()
    sentinel = Sentinel(tmp_path / "sentinel", master.port, certs if tls else None)
    nodes = []
    try:
        assert wait_until(sentinel.replicas_ready, 20), "the sentinel never saw the replica"
        url = f"redis+sentinel://127.0.0.1:{sentinel.port}/mymaster/0"
        if tls:
            url = f"rediss+sentinel://127.0.0.1:{sentinel.port}/mymaster/0"
            url += f"?ssl_ca_certs={certs / 'ca.pem'}"
        nodes = start_nodes(master, tmp_path, 2, url=url)
        n1, n2 = nodes
        crosses(clients, n1, n2, uid, "before")

        sentinel.client.execute_command("SENTINEL", "FAILOVER", "mymaster")
        assert wait_until(lambda: sentinel.master_port() == replica.port, 30), "no failover"
        promoted = replica.client()
        if tls:
            promoted = redis.Redis(
                port=replica.port,
                decode_responses=True,
                ssl=True,
                ssl_ca_certs=str(certs / "ca.pem"),
            )
        for node in nodes:  # each node reconnected to the new master and is live there
            alive = f"ferrymq:alive:{node_name(node)}"
            assert wait_until(lambda a=alive: promoted.exists(a) and promoted.pttl(a) > 0, 30)
        assert wait_until(lambda: all(n.wait_log("Redis is back", 0.1) for n in nodes), 30)
        # Routes made after the failover cross, as do admin changes.
        crosses(clients, n1, n2, uid, "after")
        user_spreads(n2, n1, f"{uid}-ha")
        assert promoted.hexists("ferrymq:admin:username", f"{uid}-ha")
        assert all(n.alive() for n in nodes)
    finally:
        for node in nodes:
            node.stop()
        sentinel.stop()
        replica.stop()
        master.stop()


@pytest.mark.skipif(not sentinel_available(), reason="redis-sentinel is not installed")
@pytest.mark.parametrize("side", ["sentinels", "master"])
def test_tls_to_one_side_of_the_sentinels(tmp_path: Path, clients, uid, side: str) -> None:
    """``ssl_for=sentinels``: Sentinels that speak only TLS in front of a plain master;
    ``ssl_for=master``: plain Sentinels in front of a master that speaks only TLS."""
    certs = tmp_path / "certs"
    write_dev_certs(certs, ["127.0.0.1"])
    master = tls_server(tmp_path / "master", certs) if side == "master" else None
    master = (master or RedisServer(tmp_path / "master")).start()
    sentinel = Sentinel(tmp_path / "sentinel", master.port, certs, side)
    nodes = []
    try:
        assert wait_until(lambda: sentinel.master_port() == master.port, 20)
        url = (
            f"rediss+sentinel://127.0.0.1:{sentinel.port}/mymaster/0"
            f"?ssl_ca_certs={certs / 'ca.pem'}&ssl_for={side}"
        )
        nodes = start_nodes(master, tmp_path, 2, url=url)
        n1, n2 = nodes
        crosses(clients, n1, n2, uid, side)
        user_spreads(n1, n2, f"{uid}-{side}")
    finally:
        for node in nodes:
            node.stop()
        sentinel.stop()
        master.stop()


def test_a_malformed_url_stops_the_start_with_the_reason(tmp_path: Path) -> None:
    started = time.monotonic()
    done = subprocess.run(
        [
            *(sys.executable, "-m", "ferrymq", "start", "--data-dir", str(tmp_path)),
            *("--port", "0", "--api-port", "0", "--dashboard-port", "0"),
            *("--cluster-redis-url", "redis+sentinel://:s3cret@s1:26379"),
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode != 0
    assert "cluster_redis_url" in done.stderr and "no master name" in done.stderr
    assert "s3cret" not in done.stderr
    assert time.monotonic() - started < 20
