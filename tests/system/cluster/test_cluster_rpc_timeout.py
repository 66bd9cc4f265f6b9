"""``cluster_rpc_timeout``: how long a node waits for another's answer to a cluster-wide
API request. A frozen node (SIGSTOP) fails the request with 500 / 101 once that time is
up, not after the default 5 s. Real redis-server, real nodes, real HTTP."""

from __future__ import annotations

import signal
import time

import pytest

from api_http import Api
from redis_server import connect, node_name, wait_until

pytestmark = pytest.mark.timeout(90)


def test_a_frozen_node_fails_a_cluster_query_within_the_rpc_timeout(
    make_cluster, clients, uid
) -> None:
    _redis, (n1, n2) = make_cluster(2, "--cluster-rpc-timeout", "1")
    connect(clients, n2.port, f"{uid}-on2")  # keep alive 60 s: it outlives the freeze
    api = Api(n1.api_port)
    assert wait_until(lambda: len(api.ok("GET", "/clients")) == 1, timeout=10)
    assert n2.proc is not None
    n2.proc.send_signal(signal.SIGSTOP)
    try:
        began = time.monotonic()
        r = api.get("/clients")  # node 2 is still Running for ~3 s: it is asked
        took = time.monotonic() - began
    finally:
        n2.proc.send_signal(signal.SIGCONT)
    assert (r.status, r.code) == (500, 101), r
    assert node_name(n2) in r.raw.decode()
    # The 1 s it waited (and not the default 5 s), with room for a loaded machine.
    assert 0.9 <= took < 3.0, f"the request took {took:.2f} s"
    print(f"a frozen node failed /clients after {took:.2f} s (cluster_rpc_timeout = 1)")
    # Awake again, it answers.
    assert wait_until(lambda: api.get("/clients").status == 200, timeout=20, every=0.3)
    assert [c["node"] for c in api.ok("GET", "/clients")] == [node_name(n2)]
