"""Will messages: when they are sent, when not, will delay, will properties."""

from __future__ import annotations

import time

import pytest
from paho.mqtt.packettypes import PacketTypes

from clients import V5, V31, V311, TestClient, props
from ferrymq.mqtt.packets import Will
from rawclient import RawClient


def _watch(port: int, topic: str, uid: str) -> TestClient:
    w = TestClient(f"ww-{uid}", V5)
    w.connect(port)
    w.subscribe(topic, 1)
    return w


def _with_will(
    protocol: int, cid: str, topic: str, payload: bytes = b"gone", qos: int = 1, **will_props
) -> TestClient:
    c = TestClient(cid, protocol)
    p = props(PacketTypes.WILLMESSAGE, **will_props) if will_props else None
    c.c.will_set(topic, payload, qos, retain=False, properties=p)
    return c


@pytest.mark.parametrize("protocol", [V31, V311, V5])
def test_will_sent_when_connection_drops(broker, uid, protocol):
    topic = f"will/{uid}"
    w = _watch(broker.port, topic, uid)
    c = _with_will(protocol, f"wd-{uid}"[:23], topic)
    c.connect(broker.port)
    c.drop()
    msg = w.get()
    assert (msg.topic, msg.payload, msg.qos) == (topic, b"gone", 1)
    w.disconnect()


@pytest.mark.parametrize("protocol", [V31, V311, V5])
def test_no_will_after_normal_disconnect(broker, uid, protocol):
    topic = f"will/{uid}"
    w = _watch(broker.port, topic, uid)
    c = _with_will(protocol, f"wn-{uid}"[:23], topic)
    c.connect(broker.port)
    c.disconnect()
    w.expect_nothing(0.2)
    w.disconnect()


def test_v5_disconnect_with_will_message(broker, uid):
    topic = f"will/{uid}"
    w = _watch(broker.port, topic, uid)
    with RawClient(broker.port, 5) as c:
        c.connect(f"w4-{uid}", will=Will(topic, b"asked for", 0))
        c.disconnect(0x04)
    assert w.get().payload == b"asked for"
    w.disconnect()


def test_will_properties_and_retain(broker, uid):
    topic = f"will/{uid}/props"
    w = _watch(broker.port, topic, uid)
    will_props = {
        "content_type": "text/plain",
        "response_topic": f"reply/{uid}",
        "correlation_data": b"\x01\x02",
        "payload_format_indicator": 1,
        "user_property": [("k", "v"), ("k", "v2")],
        "message_expiry_interval": 60,
    }
    c = RawClient(broker.port, 5)
    c.connect(f"wp-{uid}", will=Will(topic, b"bye", 1, True, will_props))
    c.close()
    msg = w.get()
    p = msg.properties
    assert msg.payload == b"bye"
    assert p.ContentType == "text/plain"
    assert p.ResponseTopic == f"reply/{uid}"
    assert p.CorrelationData == b"\x01\x02"
    assert p.PayloadFormatIndicator == 1
    assert p.UserProperty == [("k", "v"), ("k", "v2")]
    assert 59 <= p.MessageExpiryInterval <= 60
    # retained: a later subscriber gets it from the store
    late = TestClient(f"wl-{uid}", V311)
    late.connect(broker.port)
    late.subscribe(topic, 0)
    got = late.get()
    assert (got.payload, got.retain) == (b"bye", True)
    late.publish(topic, b"", 0, retain=True)
    late.disconnect()
    w.disconnect()


def test_will_delay(broker, uid):
    """The will waits for its delay; a reconnect within the delay cancels it."""
    topic = f"will/{uid}/delay"
    w = _watch(broker.port, topic, uid)
    expiry = props(PacketTypes.CONNECT, SessionExpiryInterval=30)

    late = _with_will(V5, f"wdl-{uid}", topic, b"late", WillDelayInterval=1)
    late.connect(broker.port, properties=expiry)
    cancelled = _with_will(V5, f"wdc-{uid}", topic, b"cancelled", WillDelayInterval=1)
    cancelled.connect(broker.port, properties=expiry)
    late.drop()
    cancelled.drop()
    start = time.monotonic()
    back = TestClient(f"wdc-{uid}", V5)
    back.connect(broker.port, clean=False, properties=expiry)
    msg = w.get(timeout=3)
    assert msg.payload == b"late"
    assert 0.8 <= time.monotonic() - start < 2.5
    w.expect_nothing(0.2)
    back.disconnect(props(PacketTypes.DISCONNECT, SessionExpiryInterval=0))
    w.disconnect()


def test_clean_start_within_will_delay_ends_the_session_and_sends_the_will(broker, uid):
    topic = f"will/{uid}/clean"
    w = _watch(broker.port, topic, uid)
    c = _with_will(V5, f"wcs-{uid}", topic, b"old session over", WillDelayInterval=30)
    c.connect(broker.port, properties=props(PacketTypes.CONNECT, SessionExpiryInterval=60))
    c.drop()
    w.expect_nothing(0.2)  # waiting for its delay
    again = TestClient(f"wcs-{uid}", V5)
    flags, _, _ = again.connect(broker.port, clean=True)
    assert not flags.session_present
    assert w.get().payload == b"old session over"
    again.disconnect()
    w.disconnect()


def test_will_sent_when_session_ends_before_delay(broker, uid):
    """Will delay longer than the session expiry: the will goes when the session ends."""
    topic = f"will/{uid}/expiry"
    w = _watch(broker.port, topic, uid)
    c = _with_will(V5, f"we-{uid}", topic, b"session over", WillDelayInterval=30)
    c.connect(broker.port, properties=props(PacketTypes.CONNECT, SessionExpiryInterval=1))
    c.drop()
    start = time.monotonic()
    assert w.get(timeout=3).payload == b"session over"
    assert 0.8 <= time.monotonic() - start < 2.5
    w.disconnect()


def test_will_sent_on_keepalive_timeout_and_protocol_error(broker, uid):
    topic = f"will/{uid}/ka"
    w = _watch(broker.port, topic, uid)
    quiet = RawClient(broker.port, 4)
    quiet.connect(f"wk-{uid}", keepalive=1, will=Will(topic, b"timed out"))
    bad = RawClient(broker.port, 4)
    bad.connect(f"wb-{uid}", will=Will(topic, b"broke the rules"))
    bad.send(b"\x00\x00")
    assert w.get().payload == b"broke the rules"
    start = time.monotonic()
    assert w.get(timeout=3).payload == b"timed out"
    assert time.monotonic() - start < 2.0
    quiet.close()
    bad.close()
    w.disconnect()


def test_will_of_taken_over_connection(broker, uid):
    topic = f"will/{uid}/takeover"
    w = _watch(broker.port, topic, uid)
    old = RawClient(broker.port, 4)
    old.connect(f"wt-{uid}", will=Will(topic, b"old one"))
    new = RawClient(broker.port, 4)
    assert new.connect(f"wt-{uid}").reason_code == 0
    assert old.closed_after() == []
    assert w.get().payload == b"old one"
    new.disconnect()
    w.expect_nothing(0.2)
    old.close()
    w.disconnect()


def test_no_will_for_refused_connect(broker, uid):
    topic = f"will/{uid}/refused"
    w = _watch(broker.port, topic, uid)
    with RawClient(broker.port, 5) as c:
        ack = c.connect(
            f"wr-{uid}",
            will=Will(topic, b"never"),
            properties={"authentication_method": "GS2-KRB5"},
        )
        assert ack.reason_code == 0x8C
        assert c.closed_after() == []
    w.expect_nothing(0.2)
    w.disconnect()
