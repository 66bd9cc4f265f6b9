"""Persistent sessions when nodes fail: nothing confirmed is lost when a session's node is
killed under traffic, QoS 2 stays exactly once through a hand-over under traffic, and a
node whose loop stalled past its heartbeat gives up the sessions another node took in.
Real redis-server, real nodes (SIGKILL, SIGSTOP / SIGCONT), paho-mqtt."""

from __future__ import annotations

import signal
import threading
import time

import pytest
from redis import Redis

from clients import TestClient, props
from redis_server import connect, node_name, persistent, received, wait_routed, wait_until

pytestmark = pytest.mark.timeout(120)


class Publisher:
    """Publishes numbered messages to ``topic`` in a thread; ``confirmed`` are those whose
    PUBACK / PUBCOMP came back."""

    def __init__(self, client: TestClient, topic: str, qos: int, every: float = 0.002) -> None:
        self.client, self.topic, self.qos, self.every = client, topic, qos, every
        self.name = client.client_id
        self.confirmed: list[bytes] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run)

    def _run(self) -> None:
        i = 0
        while not self._stop.is_set():
            payload = f"{self.name}:{i}".encode()
            info = self.client.publish(self.topic, payload, qos=self.qos, wait=False)
            info.wait_for_publish(10)
            if info.is_published():
                self.confirmed.append(payload)
            i += 1
            time.sleep(self.every)

    def __enter__(self) -> Publisher:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


def payloads(sub: TestClient, wait: float = 2.0) -> list[bytes]:
    return [m.payload for m in received(sub, wait)]


def flagged(sub: TestClient, wait: float = 2.0) -> list[tuple[bytes, bool]]:
    """``payloads`` with the DUP flag of each (a resend of what the client had not
    acknowledged yet)."""
    return [(m.payload, bool(m.dup)) for m in received(sub, wait)]


@pytest.mark.parametrize("online", [False, True], ids=["offline", "online"])
def test_no_confirmed_message_is_lost_when_the_sessions_node_is_killed(
    make_cluster, clients, uid, online
) -> None:
    """Whatever the killed node had taken from its inbox for the session but not yet
    written to Redis is still in its inbox: the node that takes the session in gets it."""
    redis, (n1, n2, n3) = make_cluster(3)
    topic = f"{uid}/safe"
    sub = persistent(clients, n2.port, f"{uid}-s", present=False)
    sub.subscribe(topic, 1)
    pub = connect(clients, n1.port, f"{uid}-pub")
    wait_routed(pub, sub, topic)
    if not online:
        sub.disconnect()
    got: list[bytes] = []
    with Publisher(pub, topic, qos=1) as traffic:
        time.sleep(1.5)
        n2.stop(signal.SIGKILL)
        time.sleep(0.3)  # still sent to node 2's inbox: its heartbeat has not expired yet
    if online:
        got += payloads(sub, 0.05)
        sub.drop()
    r = redis.client()
    assert wait_until(lambda: r.hget(f"ferrymq:client:{uid}-s", "node") != node_name(n2), 10)
    back = persistent(clients, n3.port, f"{uid}-s", present=True)
    got += payloads(back)
    assert len(traffic.confirmed) > 100
    missing = [p for p in traffic.confirmed if p not in set(got)]
    assert not missing, f"{len(missing)} of {len(traffic.confirmed)} lost: {missing[:10]}"


@pytest.mark.parametrize("qos", [1, 2])
def test_each_message_arrives_once_while_the_session_hops_across_the_nodes(
    make_cluster, clients, uid, qos
) -> None:
    """Messages published while the session moves reach both its old node (which hands
    them on) and, once the publisher's node knows the new route, its new one: each is
    delivered once, whichever copy comes first, none lost (QoS 2 exactly once; QoS 1
    once too, a resend flagged DUP of one the client had not acknowledged aside)."""
    _, (n1, n2, n3) = make_cluster(3)
    topic = f"{uid}/hop{qos}"
    sub = persistent(clients, n2.port, f"{uid}-h", present=False)
    sub.subscribe(topic, qos)
    pub = connect(clients, n1.port, f"{uid}-pub")
    local = connect(clients, n3.port, f"{uid}-pub3")  # a publisher on a node it moves to
    wait_routed(pub, sub, topic)
    wait_routed(local, sub, topic)
    got: list[tuple[bytes, bool]] = []
    with Publisher(pub, topic, qos=qos) as far, Publisher(local, topic, qos=qos) as near:
        for port in (n3.port, n1.port, n2.port, n3.port, n2.port):
            time.sleep(0.6)
            sub.disconnected.clear()
            sub.disconnect()
            got += flagged(sub, 0.05)
            # The same client resumes: its QoS 2 state (PUBREC sent, PUBREL awaited) too.
            flags, _, _ = sub.connect(
                port, clean=False, properties=props(SessionExpiryInterval=300)
            )
            assert flags.session_present
        time.sleep(0.6)
    got += flagged(sub)
    sent = far.confirmed + near.confirmed
    assert len(sent) > 200
    first = [p for p, dup in got if not dup]
    twice = sorted({p for p in first if first.count(p) > 1})
    assert not twice, f"{len(twice)} delivered twice: {twice[:10]}"
    missing = [p for p in sent if p not in {p for p, _ in got}]
    assert not missing, f"{len(missing)} of {len(sent)} lost: {missing[:10]}"


def test_a_node_that_stalled_past_its_heartbeat_closes_the_sessions_taken_from_it(
    make_cluster, clients, uid
) -> None:
    """Frozen (SIGSTOP) for longer than its heartbeat lives, node 2 is taken for down and
    its persistent session is taken in by another node; once it runs again it closes that
    client's connection (0x8E), so the client id has one live session, the other node's."""
    redis, (n1, n2, n3) = make_cluster(3)
    topic = f"{uid}/st"
    sub = persistent(clients, n2.port, f"{uid}-st", present=False)
    sub.subscribe(topic, 1)
    pub = connect(clients, n1.port, f"{uid}-pub")
    wait_routed(pub, sub, topic)
    r = redis.client()
    n2.proc.send_signal(signal.SIGSTOP)
    try:
        assert wait_until(
            lambda: r.hget(f"ferrymq:client:{uid}-st", "node") not in (None, node_name(n2)), 15
        ), "no node took the session in"
    finally:
        n2.proc.send_signal(signal.SIGCONT)
    holder = r.hget(f"ferrymq:client:{uid}-st", "node")
    assert sub.disconnects.get(timeout=15).value == 0x8E  # session taken over
    assert "taken in by other nodes" in n2.log() or n2.wait_log("taken in by other nodes")
    # Node 2 writes nothing more of it, and the holder still has it: the client resumes
    # there with its subscription, and what is published now reaches it.
    time.sleep(0.5)
    assert r.hget(f"ferrymq:client:{uid}-st", "node") == holder
    port = next(n.port for n in (n1, n3) if node_name(n) == holder)
    back = persistent(clients, port, f"{uid}-st", present=True)
    pub.publish(topic, b"after", qos=1)
    assert payloads(back, 1.0) == [b"after"]
    assert r.hget(f"ferrymq:client:{uid}-st", "node") == holder


def _late_entries(raw: Redis, stream: str) -> int:
    """Messages waiting in a hand-over stream (``raw``: a client that does not decode)."""
    return sum(1 for _, fields in raw.xrange(stream) if fields.get(b"op") == b"late")


@pytest.mark.parametrize("restart", [False, True], ids=["taken-in", "restarted"])
def test_what_a_hand_over_hands_on_survives_the_new_owner_being_killed(
    make_cluster, clients, uid, restart
) -> None:
    """Node 3 takes the session over from node 2 and is frozen at once (SIGSTOP): what
    node 2 still collects for it waits unread in node 3's hand-over stream. Node 3 is
    killed; restarted, or once another node took its sessions in, every confirmed
    message reaches the client."""
    redis, (n1, n2, n3) = make_cluster(3)
    topic = f"{uid}/ho"
    cid = f"{uid}-ho"
    sub = persistent(clients, n2.port, cid, present=False)
    sub.subscribe(topic, 1)
    pub = connect(clients, n1.port, f"{uid}-pub")
    wait_routed(pub, sub, topic)
    r, raw = redis.client(), Redis(port=redis.port)
    stream = f"ferrymq:handover:{node_name(n3)}"
    got: list[bytes] = []
    with Publisher(pub, topic, qos=1) as traffic:
        time.sleep(0.5)
        sub.disconnect()
        got += payloads(sub, 0.05)
        moved = persistent(clients, n3.port, cid, present=True)
        n3.proc.send_signal(signal.SIGSTOP)
        try:
            assert wait_until(lambda: _late_entries(raw, stream) >= 5, 10), "nothing handed on"
        finally:
            traffic.__exit__()  # before node 2 stops collecting for the frozen node
            handed_on = _late_entries(raw, stream)
            n3.stop(signal.SIGKILL)
    got += payloads(moved, 0.05)
    moved.drop()
    if restart:
        n3.restart()

    def settled() -> bool:
        owner = r.hget(f"ferrymq:client:{cid}", "node")
        return owner not in (None, node_name(n3)) or (restart and owner is not None)

    assert wait_until(settled, 20), "no node holds the session"
    assert wait_until(lambda: _late_entries(raw, stream) == 0, 20), "hand-over stream not read"
    owner = r.hget(f"ferrymq:client:{cid}", "node")
    port = next(n.port for n in (n1, n2, n3) if node_name(n) == owner)
    back = persistent(clients, port, cid, present=True)
    got += payloads(back)
    assert handed_on >= 5 and len(traffic.confirmed) > 50
    missing = [p for p in traffic.confirmed if p not in set(got)]
    assert not missing, f"{len(missing)} of {len(traffic.confirmed)} lost: {missing[:10]}"
