"""Topic names and filters as the broker enforces them, including configured limits."""

from __future__ import annotations

import pytest

from clients import V5, V311, TestClient
from ferrymq.mqtt.packets import Disconnect, Publish
from rawclient import RawClient, frame, utf8

BAD_FILTERS = [
    "a/#/b",
    "a/b#",
    "a+/b",
    "+a",
    "#/",
    "$share/g",
    "$share//a",
    "$share/g+/a",
    "$queue/",
]


@pytest.mark.parametrize("version", [4, 5])
def test_invalid_filters_are_refused_per_filter(broker, uid, version):
    fail = 0x8F if version == 5 else 0x80
    with RawClient(broker.port, version) as c:
        c.connect(f"tf{version}-{uid}")
        for f in BAD_FILTERS:
            assert c.subscribe(f, 1).reason_codes == [fail], f
        assert c.subscribe(f"ok/{uid}/+/x/#", 1).reason_codes == [1]
        assert c.is_open()


def test_valid_wildcard_forms_match(broker, uid):
    sub = TestClient(f"wf-{uid}", V311)
    sub.connect(broker.port)
    filters = {
        f"t/{uid}/+": ["one"],
        f"t/{uid}/#": ["", "one", "one/two"],
        f"t/{uid}/+/two": ["one/two"],
        f"+/{uid}/+/+": ["one/two"],
    }
    pub = TestClient(f"wfp-{uid}", V311)
    pub.connect(broker.port)
    for f, expected in filters.items():
        sub.subscribe(f, 0)
        for suffix in ("", "/one", "/one/two"):
            pub.publish(f"t/{uid}{suffix}", suffix.encode(), 1)
        got = sorted(m.topic[len(f"t/{uid}/") :] for m in sub.get_many(len(expected)))
        assert got == expected, f
        sub.expect_nothing(0.05)
        sub.unsubscribe(f)
    sub.disconnect()
    pub.disconnect()


def test_unicode_topics_round_trip(broker, uid):
    topic = f"ünï/{uid}/温度/🙂"
    sub = TestClient(f"u-{uid}", V5)
    sub.connect(broker.port)
    sub.subscribe(f"ünï/{uid}/+/🙂", 1)
    pub = TestClient(f"up-{uid}", V5)
    pub.connect(broker.port)
    pub.publish(topic, "grüße".encode(), 1)
    msg = sub.get()
    assert (msg.topic, msg.payload.decode()) == (topic, "grüße")
    sub.disconnect()
    pub.disconnect()


def test_invalid_utf8_in_filter_closes(broker, uid):
    with RawClient(broker.port, 4) as c:
        c.connect(f"u8-{uid}")
        c.send(frame(0x82, b"\x00\x01" + b"\x00\x02\xed\xa0" + b"\x00"))
        assert c.closed_after() == []


def test_nul_in_filter_closes(broker, uid):
    with RawClient(broker.port, 5) as c:
        c.connect(f"nul-{uid}")
        c.send(frame(0x82, b"\x00\x01\x00" + utf8("a\x00b") + b"\x00"))
        packets = c.closed_after()
        assert [(type(p), p.reason_code) for p in packets] == [(Disconnect, 0x81)]


def test_configured_topic_limits(make_broker, uid):
    b = make_broker("--max-topic-levels", "3", "--max-topic-length", "20")
    with RawClient(b.port, 5) as c:
        c.connect(f"lim-{uid}")
        assert c.subscribe("a/b/c", 0).reason_codes == [0]
        assert c.subscribe("a/b/c/d", 0).reason_codes == [0x8F]
        assert c.subscribe("a/" + "x" * 30, 0).reason_codes == [0x8F]
        c.publish("a/b/c", b"ok", 0)
        assert c.expect(Publish).topic == "a/b/c"
        c.publish("a/b/c/d", b"too deep", 0)
        assert [p.reason_code for p in c.closed_after()] == [0x90]
    with RawClient(b.port, 5) as c:
        c.connect(f"lim2-{uid}")
        c.publish("a/" + "x" * 30, b"too long", 0)
        assert [p.reason_code for p in c.closed_after()] == [0x90]


def test_wildcard_subscriptions_can_be_disabled(make_broker, uid):
    b = make_broker("--no-wildcard-subscription")
    with RawClient(b.port, 5) as c:
        ack = c.connect(f"nw-{uid}")
        assert ack.properties["wildcard_subscription_available"] == 0
        assert c.subscribe("a/+", 0).reason_codes == [0xA2]
        assert c.subscribe("a/#", 0).reason_codes == [0xA2]
        assert c.subscribe("a/b", 0).reason_codes == [0]
    with RawClient(b.port, 4) as c:
        c.connect(f"nw3-{uid}")
        assert c.subscribe("a/+", 0).reason_codes == [0x80]


def test_dollar_topics_and_leading_wildcards(broker, uid):
    """'#' and '+/...' never match $-topics; '$x/#' does. Clients may publish to $-topics."""
    pub = TestClient(f"dp-{uid}", V311)
    pub.connect(broker.port)
    wild = TestClient(f"dw-{uid}", V311)
    wild.connect(broker.port)
    wild.subscribe([(f"+/{uid}/x", 0)])
    dollar = TestClient(f"dd-{uid}", V311)
    dollar.connect(broker.port)
    dollar.subscribe(f"$d{uid}/#", 0)
    pub.publish(f"$d{uid}/{uid}/x", b"dollar", 1)
    pub.publish(f"n{uid}/{uid}/x", b"plain", 1)
    assert dollar.get().payload == b"dollar"
    assert wild.get().payload == b"plain"
    wild.expect_nothing(0.2)
    for c in (pub, wild, dollar):
        c.disconnect()
