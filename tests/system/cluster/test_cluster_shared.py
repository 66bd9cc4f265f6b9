"""Three real nodes on one real Redis: shared subscription groups deliver each message to
exactly one member cluster-wide, and a SUBACK leaves once every node has its route
(docs/cluster.md, "Shared subscriptions" and "SUBACK after every node has the route")."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from clients import TestClient
from redis_server import connect, received, subscribed, wait_until

pytestmark = pytest.mark.timeout(120)


def wait_members(pub: TestClient, members: list[TestClient], topic: str) -> None:
    """Publish probes until every member has had one (the publisher's node then knows
    each member's node), then drain them."""
    seen: set[str] = set()
    deadline = time.monotonic() + 15
    while len(seen) < len(members):
        assert time.monotonic() < deadline, "the publisher's node never saw every member"
        pub.publish(topic, b"route-probe", qos=1)
        for m in members:
            if any(msg.payload == b"route-probe" for msg in _take(m)):
                seen.add(m.client_id)
        time.sleep(0.02)
    for m in members:
        received(m, 0.3)  # the probes still on their way


def _take(member: TestClient) -> list:  # type: ignore[type-arg]
    out = []
    while not member.messages.empty():
        out.append(member.messages.get_nowait())
    return out


def payloads(members: list[TestClient], wait: float = 1.0) -> dict[str, list[bytes]]:
    return {m.client_id: [msg.payload for msg in received(m, wait)] for m in members}


@pytest.mark.parametrize("shared", ["$share/g/{uid}/jobs/+", "$queue/{uid}/jobs/+"])
def test_each_message_reaches_one_member_cluster_wide(cluster3, clients, uid, shared) -> None:
    _redis, (n1, n2, n3) = cluster3
    group_filter = shared.format(uid=uid)
    members = [
        subscribed(clients, n.port, f"{uid}-m{i}", group_filter, 1)
        for i, n in enumerate((n2, n3, n3), start=1)
    ]
    plain = subscribed(clients, n2.port, f"{uid}-plain", f"{uid}/jobs/#", 1)  # gets them all
    pub = connect(clients, n1.port, f"{uid}-pub")
    wait_members(pub, members, f"{uid}/jobs/a")
    received(plain, 0.3)
    sent = [f"job-{i}".encode() for i in range(90)]
    for payload in sent:
        pub.publish(f"{uid}/jobs/a", payload, qos=1)
    got = payloads(members)
    everything = [p for ps in got.values() for p in ps]
    assert sorted(everything) == sorted(sent)  # each exactly once, none lost
    # Round robin (the default strategy) over the three members, whichever node holds them.
    assert all(len(ps) == 30 for ps in got.values()), {k: len(v) for k, v in got.items()}
    assert sorted(m.payload for m in received(plain, 0.5)) == sorted(sent)


def test_a_group_on_the_publishers_node_and_elsewhere_shares_the_stream(
    cluster3, clients, uid
) -> None:
    _redis, (n1, n2, _n3) = cluster3
    local = subscribed(clients, n1.port, f"{uid}-local", f"$share/w/{uid}/t", 1)
    remote = subscribed(clients, n2.port, f"{uid}-remote", f"$share/w/{uid}/t", 1)
    pub = connect(clients, n1.port, f"{uid}-pub")
    wait_members(pub, [local, remote], f"{uid}/t")
    sent = [str(i).encode() for i in range(40)]
    for payload in sent:
        pub.publish(f"{uid}/t", payload, qos=1)
    got = payloads([local, remote])
    assert sorted(got[f"{uid}-local"] + got[f"{uid}-remote"]) == sorted(sent)
    assert len(got[f"{uid}-local"]) == len(got[f"{uid}-remote"]) == 20


def test_a_member_leaving_mid_stream_loses_nothing(cluster3, clients, uid) -> None:
    _redis, (n1, n2, n3) = cluster3
    stays = subscribed(clients, n2.port, f"{uid}-stays", f"$share/g/{uid}/s", 1)
    leaves = subscribed(clients, n3.port, f"{uid}-leaves", f"$share/g/{uid}/s", 1)
    pub = connect(clients, n1.port, f"{uid}-pub")
    wait_members(pub, [stays, leaves], f"{uid}/s")
    sent = [str(i).encode() for i in range(300)]
    for i, payload in enumerate(sent):
        pub.publish(f"{uid}/s", payload, qos=1, wait=False)
        if i == 100:
            leaves.unsubscribe(f"$share/g/{uid}/s")
    got = payloads([stays, leaves], 1.5)
    everything = got[f"{uid}-stays"] + got[f"{uid}-leaves"]
    assert sorted(everything) == sorted(sent), f"{len(everything)} of {len(sent)}"
    assert len(got[f"{uid}-leaves"]) < 200  # it left: the rest went to the member left


def test_suback_then_publish_on_another_node_is_delivered(cluster3, clients, uid) -> None:
    _redis, (n1, n2, _n3) = cluster3
    sub = connect(clients, n2.port, f"{uid}-sub")
    pub = connect(clients, n1.port, f"{uid}-pub")
    missed = []
    for i in range(40):
        topic = f"{uid}/fresh/{i}"  # a route no node had: its SUBACK waits for Redis
        assert sub.subscribe(topic, 1)[0].value == 1
        pub.publish(topic, b"right-after", qos=1)
        try:
            msg = sub.get(timeout=5)
        except Exception:
            missed.append(i)
            continue
        assert (msg.topic, msg.payload) == (topic, b"right-after")
    assert missed == []


def test_a_shared_groups_first_member_waits_for_redis_too(cluster3, clients, uid) -> None:
    _redis, (n1, n2, _n3) = cluster3
    sub = connect(clients, n2.port, f"{uid}-sub")
    pub = connect(clients, n1.port, f"{uid}-pub")
    for i in range(20):
        topic = f"{uid}/grp/{i}"
        sub.subscribe(f"$share/g{i}/{topic}", 1)
        pub.publish(topic, b"right-after", qos=1)
        assert sub.get(timeout=5).topic == topic


def test_suback_waits_for_a_stalled_node_to_have_the_route(make_cluster, clients, uid) -> None:
    """The publisher's node is stalled (SIGSTOP) while the SUBSCRIBE is made on another:
    the SUBACK waits until that node has applied the route, so the first message published
    there right after the SUBACK is delivered."""
    _redis, (n1, n2, _n3) = make_cluster(3)
    sub = connect(clients, n2.port, f"{uid}-sub")
    pub = connect(clients, n1.port, f"{uid}-pub")
    assert n1.proc is not None
    missed = []
    for i in range(5):
        topic = f"{uid}/stalled/{i}"
        os.kill(n1.proc.pid, signal.SIGSTOP)
        resume = threading.Timer(0.2, os.kill, (n1.proc.pid, signal.SIGCONT))
        resume.start()
        try:
            assert sub.subscribe(topic, 1)[0].value == 1
            pub.publish(topic, b"right-after", qos=1)
        finally:
            resume.join()
            os.kill(n1.proc.pid, signal.SIGCONT)
        try:
            msg = sub.get(timeout=10)
        except Exception:
            missed.append(i)
            continue
        assert (msg.topic, msg.payload) == (topic, b"right-after")
    assert missed == []


def test_suback_is_not_held_long_while_redis_hangs(make_cluster, clients, uid) -> None:
    redis, (n1, n2) = make_cluster(2)
    sub = connect(clients, n2.port, f"{uid}-sub")
    assert redis.proc is not None
    os.kill(redis.proc.pid, signal.SIGSTOP)  # Redis hangs: the route write never returns
    try:
        start = time.monotonic()
        assert sub.subscribe(f"{uid}/while-hung", 1)[0].value == 1
        assert time.monotonic() - start < 4.0  # the bound (1 s), not the 5 s socket timeout
    finally:
        os.kill(redis.proc.pid, signal.SIGCONT)
    # Redis answers again: the route reaches node 1 (at the latest at the resync).
    pub = connect(clients, n1.port, f"{uid}-pub")

    def delivered() -> bool:
        pub.publish(f"{uid}/while-hung", b"later", qos=1)
        try:
            return sub.get(timeout=0.5).payload == b"later"
        except Exception:
            return False

    assert wait_until(delivered, timeout=30)
