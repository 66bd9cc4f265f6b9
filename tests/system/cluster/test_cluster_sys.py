"""``$SYS`` of the whole cluster: a ``$SYS/#`` subscriber on any node receives every
node's ``$SYS/brokers/<node>/...``, as in EMQX. Real redis-server, real nodes, real
MQTT clients (paho and mosquitto_sub)."""

from __future__ import annotations

import queue
import shutil
import subprocess
import time

import pytest

from api_http import Api
from redis_server import connect, node_name, subscribed

pytestmark = pytest.mark.timeout(90)


def sys_values(sub, wanted: set[str], timeout: float = 20.0) -> dict[str, bytes]:  # type: ignore[no-untyped-def]
    """The payloads of the ``wanted`` topics, as they come (each node every second)."""
    seen: dict[str, bytes] = {}
    deadline = time.monotonic() + timeout
    while not wanted <= seen.keys() and time.monotonic() < deadline:
        try:
            msg = sub.get(timeout=0.5)
        except queue.Empty:
            continue
        seen[msg.topic] = msg.payload
    missing = wanted - seen.keys()
    assert not missing, f"never received {sorted(missing)}; got {sorted(seen)[:20]}"
    return seen


def test_sys_of_every_node_reaches_a_subscriber_on_any_node(make_cluster, clients, uid) -> None:
    _redis, (n1, n2) = make_cluster(2, "--sys-interval", "1")
    one, two = node_name(n1), node_name(n2)
    for i in range(3):  # clients on node 1 only
        connect(clients, n1.port, f"{uid}-on1-{i}")
    sub = subscribed(clients, n2.port, f"{uid}-sys", "$SYS/#")
    # A shared group's only member, on node 2, is served node 1's $SYS too.
    member = subscribed(clients, n2.port, f"{uid}-member", "$share/g/$SYS/brokers/+/uptime")
    conns1 = f"$SYS/brokers/{one}/stats/connections/count"
    uptime1 = f"$SYS/brokers/{one}/uptime"
    conns2 = f"$SYS/brokers/{two}/stats/connections/count"
    seen = sys_values(sub, {conns1, uptime1, conns2, f"$SYS/brokers/{one}/version"})
    # Each node's own figures, under its own name: node 1 has its three clients, node 2
    # the subscriber and the member.
    deadline = time.monotonic() + 20
    while (seen[conns1], seen[conns2]) != (b"3", b"2") and time.monotonic() < deadline:
        seen.update(sys_values(sub, {conns1, conns2}))
    assert (seen[conns1], seen[conns2]) == (b"3", b"2")
    first = int(seen[uptime1])
    later = first
    while later <= first and time.monotonic() < deadline:
        later = int(sys_values(sub, {uptime1})[uptime1])
    assert later > first, "node 1's uptime did not advance on node 2"
    assert int(sys_values(member, {uptime1})[uptime1]) >= 0

    # Node 1's $SYS messages are not traffic on node 2 either: its received counter
    # counts only what its own clients publish (here nothing).
    metrics = Api(n2.api_port).ok("GET", f"/nodes/{two}/metrics")
    assert metrics["messages.received"] == 0, metrics
    assert metrics["messages.dropped"] == 0, metrics
    assert metrics["cluster.received"] > 0


@pytest.mark.skipif(shutil.which("mosquitto_sub") is None, reason="mosquitto-clients missing")
def test_mosquitto_sub_on_node_2_sees_node_1s_uptime(make_cluster) -> None:
    _redis, (n1, n2) = make_cluster(2, "--sys-interval", "1")
    topic = f"$SYS/brokers/{node_name(n1)}/uptime"
    out = subprocess.run(
        ["mosquitto_sub", "-p", str(n2.port), "-t", topic, "-C", "2", "-W", "30", "-v"],
        capture_output=True,
        text=True,
        timeout=40,
    )
    lines = out.stdout.splitlines()
    assert len(lines) == 2, (out.returncode, out.stdout, out.stderr)
    for line in lines:
        name, value = line.split(" ")
        assert name == topic and int(value) >= 0
