"""Shared subscriptions ($share/{group}/{filter}, $queue/{filter}) and their strategies."""

from __future__ import annotations

import time
from collections import Counter

import pytest

from clients import V5, V311, TestClient
from ferrymq.mqtt.packets import Subscribe, SubscriptionOptions
from rawclient import RawClient


def _members(
    port: int, uid: str, topic_filter: str, n: int, protocol: int = V5
) -> list[TestClient]:
    out = []
    for i in range(n):
        c = TestClient(f"m{i}-{uid}-{time.monotonic_ns()}", protocol)
        c.connect(port)
        c.subscribe(topic_filter, 1)
        out.append(c)
    return out


def _drain(clients: list[TestClient], wait: float = 0.2) -> list[list[bytes]]:
    """Everything each client received until ``wait`` seconds pass without a message."""
    got: list[list[bytes]] = [[] for _ in clients]
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        for i, c in enumerate(clients):
            while not c.messages.empty():
                got[i].append(c.messages.get().payload)
                deadline = time.monotonic() + wait
        time.sleep(0.01)
    return got


def _flat(lists: list[list[bytes]]) -> list[bytes]:
    return [item for items in lists for item in items]


def _publish(port: int, uid: str, topic: str, n: int, cid: str | None = None) -> list[bytes]:
    pub = TestClient(cid or f"pub-{uid}-{time.monotonic_ns()}", V311)
    pub.connect(port)
    payloads = [f"{i}".encode() for i in range(n)]
    for p in payloads:
        pub.publish(topic, p, 1)
    pub.disconnect()
    return payloads


@pytest.mark.parametrize(
    ("protocol", "prefix"),
    [(V5, "$share/g/"), (V311, "$share/g/"), (V5, "$queue/"), (V311, "$queue/")],
    ids=["v5-share", "v311-share", "v5-queue", "v311-queue"],
)
def test_each_message_to_exactly_one_member_round_robin(broker, uid, protocol, prefix):
    topic = f"sh/{uid}/t"
    members = _members(broker.port, uid, prefix + f"sh/{uid}/+", 3, protocol)
    plain = _members(broker.port, uid, topic, 1, protocol)
    sent = _publish(broker.port, uid, topic, 9)
    got = _drain(members)
    assert sorted(_flat(got)) == sorted(sent)  # every message once, none twice
    assert [len(g) for g in got] == [3, 3, 3]  # round robin spreads evenly
    assert sorted(_drain(plain)[0]) == sorted(sent)  # a normal subscription gets them all
    for c in members + plain:
        c.disconnect()


def test_two_groups_each_get_every_message(broker, uid):
    topic = f"sg/{uid}"
    a = _members(broker.port, uid, f"$share/a/{topic}", 2)
    b = _members(broker.port, uid, f"$share/b/{topic}", 2)
    sent = _publish(broker.port, uid, topic, 6)
    assert sorted(_flat(_drain(a))) == sorted(sent)
    assert sorted(_flat(_drain(b))) == sorted(sent)
    for c in a + b:
        c.disconnect()


def test_member_leaving_and_no_retained_for_shared(broker, uid):
    topic = f"sl/{uid}"
    pub = TestClient(f"slp-{uid}", V311)
    pub.connect(broker.port)
    pub.publish(topic, b"retained", 1, retain=True)
    members = _members(broker.port, uid, f"$share/g/{topic}", 2)
    assert _drain(members, 0.2) == [[], []]  # retained messages skip shared subscriptions
    members[0].unsubscribe(f"$share/g/{topic}")
    members[1].disconnect()
    rest = _members(broker.port, uid, f"$share/g/{topic}", 1)
    sent = _publish(broker.port, uid, topic, 4)
    assert _drain(members[:1] + rest) == [[], sent]
    pub.publish(topic, b"", 1, retain=True)
    pub.disconnect()
    members[0].disconnect()
    rest[0].disconnect()


def test_offline_persistent_member_is_skipped_while_others_are_online(broker, uid):
    topic = f"so/{uid}"
    away = TestClient(f"away-{uid}", V311)
    away.connect(broker.port, clean=False)
    away.subscribe(f"$share/g/{topic}", 1)
    away.disconnect()
    online = _members(broker.port, uid, f"$share/g/{topic}", 1)
    sent = _publish(broker.port, uid, topic, 4)
    assert _drain(online) == [sent]
    away = TestClient(f"away-{uid}", V311)
    away.connect(broker.port, clean=True)
    away.expect_nothing(0.1)
    away.disconnect()
    online[0].disconnect()


def test_no_local_on_shared_subscription_is_protocol_error(broker, uid):
    with RawClient(broker.port, 5) as c:
        c.connect(f"nl-{uid}")
        c.send(Subscribe(1, [SubscriptionOptions(f"$share/g/nl/{uid}", 0, no_local=True)]))
        assert [p.reason_code for p in c.closed_after()] == [0x82]


def test_shared_subscriptions_can_be_disabled(make_broker, uid):
    b = make_broker("--no-shared-subscription")
    with RawClient(b.port, 5) as c:
        assert c.connect(f"ns-{uid}").properties["shared_subscription_available"] == 0
        assert c.subscribe("$share/g/x", 0).reason_codes == [0x9E]
        assert c.subscribe("$queue/x", 0).reason_codes == [0x9E]


def test_strategy_random(make_broker, uid):
    b = make_broker("--shared-subscription-strategy", "random")
    members = _members(b.port, uid, "$share/g/r", 3)
    sent = _publish(b.port, uid, "r", 60)
    got = _drain(members)
    assert sorted(_flat(got)) == sorted(sent)
    assert all(len(g) > 0 for g in got)  # 60 picks among 3: each one gets some
    for c in members:
        c.disconnect()


def test_strategy_sticky(make_broker, uid):
    b = make_broker("--shared-subscription-strategy", "sticky")
    members = _members(b.port, uid, "$share/g/s", 3)
    sent = _publish(b.port, uid, "s", 10)
    got = _drain(members)
    assert sorted(len(g) for g in got) == [0, 0, 10]
    chosen = next(i for i, g in enumerate(got) if g)
    assert got[chosen] == sent
    members[chosen].disconnect()  # the sticky member leaves: another takes over
    _publish(b.port, uid, "s", 4)
    rest = [m for i, m in enumerate(members) if i != chosen]
    assert sorted(len(g) for g in _drain(rest)) == [0, 4]
    for c in rest:
        c.disconnect()


def test_strategy_hash_clientid(make_broker, uid):
    b = make_broker("--shared-subscription-strategy", "hash_clientid")
    members = _members(b.port, uid, "$share/g/h", 3)
    winners = Counter()
    for n in range(4):
        _publish(b.port, uid, "h", 3, cid=f"publisher-{n}")
        got = _drain(members, 0.15)
        assert sorted(len(g) for g in got) == [0, 0, 3]  # one publisher, one member
        winners[next(i for i, g in enumerate(got) if g)] += 1
        _publish(b.port, uid, "h", 2, cid=f"publisher-{n}")
        assert [len(g) for g in _drain(members, 0.15)] == [len(g) * 2 // 3 for g in got]
    assert len(winners) > 1  # different publishers land on different members
    for c in members:
        c.disconnect()
