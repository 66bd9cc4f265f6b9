"""``ferrymq cluster forget NODE`` (alias ``force-leave``, as EMQX's ``cluster
force-leave``): a killed node leaves the ``Stopped`` list without being restarted; a
running or unknown node is refused. Real redis-server, real nodes, the real command."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from api_http import Api
from redis_server import node_name, wait_until

pytestmark = pytest.mark.timeout(90)


def cluster(*args: str, url: str | None = None) -> subprocess.CompletedProcess:  # type: ignore[type-arg]
    environ = {k: v for k, v in os.environ.items() if k != "FERRYMQ_CLUSTER_REDIS_URL"}
    return subprocess.run(
        [sys.executable, "-m", "ferrymq", "cluster", *args]
        + (["--cluster-redis-url", url] if url else []),
        capture_output=True,
        text=True,
        timeout=30,
        env=environ,
    )


def states(url: str) -> dict[str, str]:
    """``ferrymq cluster status``: node -> state."""
    out = cluster("status", url=url)
    assert out.returncode == 0, out.stderr
    return {line.split()[0]: line.split()[1] for line in out.stdout.splitlines()[2:]}


def listed(api: Api) -> dict[str, str]:
    return {n["node"]: n["node_status"] for n in api.ok("GET", "/nodes")}


def test_a_killed_node_is_forgotten_without_restarting_it(make_cluster) -> None:
    redis, (n1, n2, n3) = make_cluster(3)
    one, two, three = node_name(n1), node_name(n2), node_name(n3)
    api = Api(n1.api_port)
    assert wait_until(lambda: len(listed(api)) == 3, timeout=10)

    refused = cluster("forget", two, url=redis.url)
    assert refused.returncode == 1 and "is running" in refused.stderr, refused
    assert cluster("forget", "nobody@nowhere", url=redis.url).returncode == 1
    assert cluster("forget", two).returncode == 2  # no URL given

    assert n2.proc is not None
    n2.proc.send_signal(signal.SIGKILL)
    n2.proc.wait()
    assert wait_until(lambda: listed(api).get(two) == "Stopped", timeout=15, every=0.3)
    assert states(redis.url)[two] == "Stopped"

    done = cluster("force-leave", two, url=redis.url)  # EMQX's name for it
    assert done.returncode == 0, done.stderr
    assert f"node {two} removed" in done.stdout
    assert states(redis.url) == {one: "Running", three: "Running"}
    # Every node drops it from its view at once (the change stream), not only Redis.
    for node in (n1, n3):
        assert wait_until(lambda n=node: two not in listed(Api(n.api_port)), timeout=5)
    assert listed(api) == {one: "Running", three: "Running"}
    assert not redis.client().hexists("ferrymq:nodes", two)
    again = cluster("forget", two, url=redis.url)
    assert again.returncode == 1 and "no node" in again.stderr

    # Started again, it rejoins as any node does.
    n2.restart()
    assert n2.wait_log("joined through", 15)
    assert wait_until(lambda: listed(api).get(two) == "Running", timeout=15, every=0.3)
