"""Retained messages through the real broker: store, replace, clear, deliver, expire."""

from __future__ import annotations

import time

import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.subscribeoptions import SubscribeOptions

from clients import V5, V31, V311, TestClient, props
from ferrymq.mqtt.packets import Publish
from rawclient import RawClient


def _pub(port: int, uid: str, protocol: int = V311) -> TestClient:
    c = TestClient(f"rp-{uid}-{time.monotonic_ns()}"[:23], protocol)
    c.connect(port)
    return c


@pytest.mark.parametrize("protocol", [V31, V311, V5])
def test_stored_replaced_cleared(broker, uid, protocol):
    topic = f"ret/{uid}/a"
    pub = _pub(broker.port, uid, protocol)
    pub.publish(topic, b"v1", 1, retain=True)
    pub.publish(topic, b"v2", 1, retain=True)  # replaces v1

    s1 = TestClient(f"r1-{uid}"[:23], protocol)
    s1.connect(broker.port)
    s1.subscribe(f"ret/{uid}/+", 1)
    msg = s1.get()
    assert (msg.topic, msg.payload, msg.retain, msg.qos) == (topic, b"v2", True, 1)
    s1.expect_nothing(0.1)

    # live delivery to an existing subscription: retain flag cleared (v3/v4 rule, v5 default)
    pub.publish(topic, b"v3", 1, retain=True)
    live = s1.get()
    assert (live.payload, live.retain) == (b"v3", False)

    pub.publish(topic, b"", 1, retain=True)  # clears; still forwarded to current subscribers
    assert s1.get().payload == b""
    s2 = TestClient(f"r2-{uid}"[:23], protocol)
    s2.connect(broker.port)
    s2.subscribe(f"ret/{uid}/#", 1)
    s2.expect_nothing(0.2)
    for c in (pub, s1, s2):
        c.disconnect()


def test_retained_qos_is_downgraded_and_wildcards_select(broker, uid):
    pub = _pub(broker.port, uid)
    pub.publish(f"rw/{uid}/x/1", b"a", 2, retain=True)
    pub.publish(f"rw/{uid}/y/1", b"b", 1, retain=True)
    pub.publish(f"rw/{uid}/x/2/deep", b"c", 0, retain=True)
    pub.publish(f"rw/{uid}/x/1/nonretained", b"d", 1)
    sub = TestClient(f"rws-{uid}")
    sub.connect(broker.port)
    sub.subscribe(f"rw/{uid}/x/#", 1)
    got = {m.topic: (m.payload, m.qos, m.retain) for m in sub.get_many(2)}
    assert got == {
        f"rw/{uid}/x/1": (b"a", 1, True),
        f"rw/{uid}/x/2/deep": (b"c", 0, True),
    }
    sub.expect_nothing(0.2)
    sub.subscribe(f"rw/{uid}/+/1", 2)
    got = {m.topic: (m.payload, m.qos) for m in sub.get_many(2)}
    assert got == {f"rw/{uid}/x/1": (b"a", 2), f"rw/{uid}/y/1": (b"b", 1)}
    sub.disconnect()
    pub.disconnect()


def test_retain_handling_options(broker, uid):
    topic = f"rh/{uid}"
    pub = _pub(broker.port, uid)
    pub.publish(topic, b"kept", 1, retain=True)  # QoS 1: retained before the SUBSCRIBEs
    sub = TestClient(f"rhs-{uid}", V5)
    sub.connect(broker.port)

    sub.subscribe(topic, options=SubscribeOptions(qos=0, retainHandling=2))
    sub.expect_nothing(0.2)  # 2: never send retained messages on subscribe
    sub.unsubscribe(topic)

    sub.subscribe(topic, options=SubscribeOptions(qos=0, retainHandling=1))
    assert sub.get().payload == b"kept"  # 1: only when the subscription is new
    sub.subscribe(topic, options=SubscribeOptions(qos=0, retainHandling=1))
    sub.expect_nothing(0.2)

    sub.subscribe(topic, options=SubscribeOptions(qos=0, retainHandling=0))
    assert sub.get().payload == b"kept"  # 0: on every subscribe
    sub.subscribe(topic, options=SubscribeOptions(qos=0, retainHandling=0))
    assert sub.get().payload == b"kept"
    sub.disconnect()
    pub.disconnect()


def test_retain_as_published(broker, uid):
    topic = f"rap/{uid}"
    rap = TestClient(f"rap1-{uid}", V5)
    plain = TestClient(f"rap0-{uid}", V5)
    for c, flag in ((rap, True), (plain, False)):
        c.connect(broker.port)
        c.subscribe(topic, options=SubscribeOptions(qos=1, retainAsPublished=flag))
    pub = _pub(broker.port, uid, V5)
    pub.publish(topic, b"r", 1, retain=True)
    pub.publish(topic, b"n", 1, retain=False)
    assert [(m.payload, m.retain) for m in rap.get_many(2)] == [(b"r", True), (b"n", False)]
    assert [(m.payload, m.retain) for m in plain.get_many(2)] == [(b"r", False), (b"n", False)]
    pub.publish(topic, b"", 1, retain=True)
    for c in (rap, plain, pub):
        c.disconnect()


def test_retained_message_expiry(broker, uid):
    topic = f"rexp/{uid}"
    pub = _pub(broker.port, uid, V5)
    pub.publish(
        topic,
        b"short",
        1,
        retain=True,
        properties=props(PacketTypes.PUBLISH, MessageExpiryInterval=1),
    )
    pub.publish(
        topic + "/long",
        b"long",
        1,
        retain=True,
        properties=props(PacketTypes.PUBLISH, MessageExpiryInterval=100),
    )
    with RawClient(broker.port, 5) as early:
        early.connect(f"re-{uid}")
        early.subscribe(topic + "/long", 0)
        msg = early.expect(Publish)
        assert msg.retain and 99 <= msg.properties["message_expiry_interval"] <= 100
    time.sleep(1.1)
    late = TestClient(f"rl-{uid}", V5)
    late.connect(broker.port)
    late.subscribe(f"{topic}/#", 0)
    msg = late.get()
    assert msg.payload == b"long"
    remaining = msg.properties.MessageExpiryInterval
    assert 97 <= remaining <= 99  # decremented by the time it waited
    late.expect_nothing(0.2)
    late.disconnect()
    pub.disconnect()


def test_dollar_topics_not_matched_by_leading_wildcards(broker, uid):
    pub = _pub(broker.port, uid)
    pub.publish(f"$app/{uid}/state", b"dollar", 0, retain=True)
    sub = TestClient(f"rd-{uid}")
    sub.connect(broker.port)
    sub.subscribe([("#", 0), ("+/" + uid + "/state", 0)])
    deadline = time.monotonic() + 0.5
    while time.monotonic() < deadline:
        try:
            msg = sub.get(timeout=0.1)
        except Exception:
            continue
        assert not msg.topic.startswith("$"), msg.topic
    sub.unsubscribe(["#", "+/" + uid + "/state"])
    sub.subscribe(f"$app/{uid}/+", 0)
    assert sub.get().payload == b"dollar"
    pub.publish(f"$app/{uid}/state", b"", 0, retain=True)
    sub.disconnect()
    pub.disconnect()


def test_retain_not_available(make_broker, uid):
    b = make_broker("--no-retain-available")
    with RawClient(b.port, 5) as c:
        ack = c.connect(f"rna-{uid}")
        assert ack.properties["retain_available"] == 0
        c.publish(f"rna/{uid}", b"x", 0, retain=True)
        packets = c.closed_after()
        assert [p.reason_code for p in packets] == [0x9A]
