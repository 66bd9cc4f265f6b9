"""A node's QoS 1/2 inbox is acknowledged and emptied as it is dispatched, whether Redis
lets the reader skip the acknowledgements' replies (``CLIENT REPLY SKIP``) or an ACL
refuses it (cluster/stream_inbox.py). Real redis-server, two real nodes, paho clients."""

from __future__ import annotations

from pathlib import Path

import pytest

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

pytestmark = pytest.mark.timeout(60)

COUNT = 200


@pytest.mark.parametrize("reply_skip", [True, False], ids=["allowed", "refused"])
def test_qos_1_2_inbox_delivers_each_once_and_is_left_empty(
    tmp_path: Path, clients, uid, reply_skip: bool
) -> None:
    redis = RedisServer(tmp_path / "redis")
    if not reply_skip:
        redis.extra = ["--user", "default", "on", "nopass", "~*", "&*", "+@all", "-client|reply"]
    redis.start()
    try:
        n1, n2 = start_nodes(redis, tmp_path / "c", 2)
        try:
            sub = subscribed(clients, n2.port, f"{uid}-sub", [(f"{uid}/1", 1), (f"{uid}/2", 2)])
            pub = connect(clients, n1.port, f"{uid}-pub")
            wait_routed(pub, sub, f"{uid}/1")
            wait_routed(pub, sub, f"{uid}/2")
            sent = []
            for i in range(COUNT):
                qos = 1 + i % 2
                payload = f"m{i}".encode()
                pub.publish(f"{uid}/{qos}", payload, qos=qos).wait_for_publish(5)
                sent.append(payload)
            got = [m.payload for m in received(sub, 1.0)]
            assert sorted(got) == sorted(sent)  # each once, none lost
            r = redis.client()
            stream = f"ferrymq:inbox:{node_name(n2)}"
            # Acknowledged (nothing pending for the node) and deleted (nothing left to read).
            assert wait_until(lambda: r.xpending(stream, "ferrymq")["pending"] == 0, 5)
            assert r.xlen(stream) == 0
            assert n1.alive() and n2.alive()
        finally:
            n1.stop()
            n2.stop()
    finally:
        redis.stop()
