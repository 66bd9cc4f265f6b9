"""MQTT 5 features: properties, expiry, topic aliases, limits, subscription options and
identifiers, reason strings, CONNACK properties, AUTH."""

from __future__ import annotations

import time

from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.subscribeoptions import SubscribeOptions

from clients import V5, V311, TestClient, props
from ferrymq.mqtt.packets import (
    Auth,
    Disconnect,
    Puback,
    Pubcomp,
    Publish,
    Pubrec,
    Pubrel,
    Suback,
    Subscribe,
    Will,
)
from ferrymq.mqtt.packets import SubscriptionOptions as SubOpts
from rawclient import RawClient


def _pair(port: int, uid: str, topic_filter: str, qos: int = 1) -> tuple[TestClient, TestClient]:
    sub = TestClient(f"s-{uid}", V5)
    sub.connect(port)
    sub.subscribe(topic_filter, qos)
    pub = TestClient(f"p-{uid}", V5)
    pub.connect(port)
    return sub, pub


def test_publish_properties_pass_through(broker, uid):
    topic = f"v5p/{uid}"
    sub, pub = _pair(broker.port, uid, topic)
    v3 = TestClient(f"s3-{uid}", V311)
    v3.connect(broker.port)
    v3.subscribe(topic, 1)
    p = props(
        PacketTypes.PUBLISH,
        ContentType="application/json",
        ResponseTopic=f"reply/{uid}",
        CorrelationData=b"\x00corr\xff",
        PayloadFormatIndicator=1,
        UserProperty=[("a", "1"), ("b", "2"), ("a", "3")],
    )
    pub.publish(topic, '{"ok": true}', 1, properties=p)
    msg = sub.get()
    got = msg.properties
    assert msg.payload == b'{"ok": true}'
    assert got.ContentType == "application/json"
    assert got.ResponseTopic == f"reply/{uid}"
    assert got.CorrelationData == b"\x00corr\xff"
    assert got.PayloadFormatIndicator == 1
    assert got.UserProperty == [("a", "1"), ("b", "2"), ("a", "3")]  # order and repeats kept
    # per-hop properties are not forwarded: no topic alias, no stray expiry
    assert not hasattr(got, "TopicAlias") and not hasattr(got, "MessageExpiryInterval")
    assert v3.get().payload == b'{"ok": true}'  # a 3.1.1 subscriber gets the bare message
    v3.disconnect()
    sub.disconnect()
    pub.disconnect()


def test_payload_format_indicator_checks_utf8(broker, uid):
    topic = f"pfi/{uid}"
    sub, _pub = _pair(broker.port, uid, topic)
    _pub.disconnect()
    with RawClient(broker.port, 5) as c:
        c.connect(f"pfi-{uid}")
        c.publish(topic, "ok ✓".encode(), 1, properties={"payload_format_indicator": 1})
        assert c.expect(Puback).reason_code == 0
        c.publish(topic, b"\xff\xfe", 1, properties={"payload_format_indicator": 1})
        ack = c.expect(Puback)
        assert ack.reason_code == 0x99
        assert ack.properties.get("reason_string")  # problem information requested by default
        c.publish(topic, b"\xff\xfe", 1, properties={"payload_format_indicator": 0})
        assert c.expect(Puback).reason_code == 0
    assert [m.payload for m in sub.get_many(2)] == ["ok ✓".encode(), b"\xff\xfe"]
    sub.expect_nothing(0.1)
    sub.disconnect()


def test_request_problem_information_zero_suppresses_reason_strings(broker, uid):
    with RawClient(broker.port, 5) as c:
        c.connect(f"rpi-{uid}", properties={"request_problem_information": 0})
        c.publish(f"rpi/{uid}", b"\xff", 1, properties={"payload_format_indicator": 1})
        ack = c.expect(Puback)
        assert ack.reason_code == 0x99 and "reason_string" not in ack.properties
        c.send(b"\xc0\x01\x00")  # malformed PINGREQ: DISCONNECT may still carry a reason
        (d,) = c.closed_after()
        assert d.reason_code == 0x81


def test_reason_string_on_disconnect_and_connack(broker, uid):
    with RawClient(broker.port, 5) as c:
        c.connect(f"rs-{uid}")
        c.send(Auth(0x18))
        (d,) = c.closed_after()
        assert d.reason_code == 0x82 and "AUTH" in d.properties["reason_string"]
    with RawClient(broker.port, 5) as c:
        ack = c.connect(f"rs2-{uid}", properties={"authentication_method": "X"})
        assert ack.reason_code == 0x8C and ack.properties["reason_string"]


def test_message_expiry_decremented_and_enforced_in_queue(broker, uid):
    topic = f"mexp/{uid}"
    cid = f"mexp-{uid}"
    expiry = props(SessionExpiryInterval=60)
    sub = TestClient(cid, V5)
    sub.connect(broker.port, properties=expiry)
    sub.subscribe(topic, 1)
    sub.disconnect()
    pub = TestClient(f"mexpp-{uid}", V5)
    pub.connect(broker.port)
    pub.publish(topic, b"short", 1, properties=props(PacketTypes.PUBLISH, MessageExpiryInterval=1))
    pub.publish(topic, b"long", 1, properties=props(PacketTypes.PUBLISH, MessageExpiryInterval=30))
    pub.publish(topic, b"forever", 1)
    time.sleep(1.5)
    sub = TestClient(cid, V5)
    sub.connect(broker.port, clean=False, properties=expiry)
    got = sub.get_many(2)
    assert [m.payload for m in got] == [b"long", b"forever"]  # "short" expired in the queue
    assert 27 <= got[0].properties.MessageExpiryInterval <= 29  # time spent waiting deducted
    assert not hasattr(got[1].properties, "MessageExpiryInterval")
    sub.disconnect(props(PacketTypes.DISCONNECT, SessionExpiryInterval=0))
    pub.disconnect()


def test_topic_alias_from_client(broker, uid):
    topic = f"alias/{uid}"
    sub, pub = _pair(broker.port, uid, f"alias/{uid}/#", 0)
    pub.disconnect()
    with RawClient(broker.port, 5) as c:
        ack = c.connect(f"al-{uid}")
        assert ack.properties["topic_alias_maximum"] == 64
        c.publish(topic + "/a", b"1", 1, properties={"topic_alias": 1})
        c.publish("", b"2", 1, properties={"topic_alias": 1})
        c.publish(topic + "/b", b"3", 1, properties={"topic_alias": 1})  # remapped
        c.publish("", b"4", 1, properties={"topic_alias": 1})
        assert [c.expect(Puback).reason_code for _ in range(4)] == [0, 0, 0, 0]
    got = [(m.topic, m.payload) for m in sub.get_many(4)]
    assert got == [
        (topic + "/a", b"1"),
        (topic + "/a", b"2"),
        (topic + "/b", b"3"),
        (topic + "/b", b"4"),
    ]
    sub.disconnect()


def test_topic_alias_to_client(broker, uid):
    """A client announcing topic_alias_maximum gets aliases: topic once, then alias only."""
    topic = f"aliasout/{uid}"
    with RawClient(broker.port, 5) as c:
        c.connect(f"ao-{uid}", properties={"topic_alias_maximum": 1})
        c.subscribe(f"aliasout/{uid}/+", 0)
        pub = TestClient(f"aop-{uid}", V5)
        pub.connect(broker.port)
        for t, payload in (("x", b"1"), ("x", b"2"), ("y", b"3"), ("x", b"4")):
            pub.publish(f"{topic}/{t}", payload, 1)
        got = [c.expect(Publish) for _ in range(4)]
        pub.disconnect()
    alias = got[0].properties["topic_alias"]
    assert alias == 1
    assert (got[0].topic, got[0].payload) == (f"{topic}/x", b"1")
    assert (got[1].topic, got[1].properties["topic_alias"], got[1].payload) == ("", alias, b"2")
    # only one alias allowed: other topics go in full
    assert (got[2].topic, got[2].properties.get("topic_alias")) == (f"{topic}/y", None)
    assert (got[3].topic, got[3].properties["topic_alias"]) == ("", alias)


def test_topic_alias_not_spent_on_a_message_too_large_to_send(broker, uid):
    topic = f"aliasbig/{uid}"
    with RawClient(broker.port, 5) as c:
        c.connect(f"ab-{uid}", properties={"topic_alias_maximum": 4, "maximum_packet_size": 100})
        c.subscribe(topic, 0)
        pub = TestClient(f"abp-{uid}", V5)
        pub.connect(broker.port)
        pub.publish(topic, b"x" * 200, 1)  # dropped for this client
        pub.publish(topic, b"small", 1)
        pub.publish(topic, b"again", 1)
        first, second = c.expect(Publish), c.expect(Publish)
        pub.disconnect()
    assert (first.topic, first.payload) == (topic, b"small")  # the alias is introduced here
    assert (second.topic, second.payload) == ("", b"again")
    assert second.properties["topic_alias"] == first.properties["topic_alias"]


def test_no_topic_alias_without_client_maximum(broker, uid):
    with RawClient(broker.port, 5) as c:
        c.connect(f"na-{uid}")
        c.subscribe(f"na/{uid}", 0)
        for _ in range(2):
            c.publish(f"na/{uid}", b"x", 0)
            msg = c.expect(Publish)
            assert msg.topic == f"na/{uid}" and "topic_alias" not in msg.properties


def test_client_maximum_packet_size(broker, uid):
    """The broker never sends a packet larger than the client's maximum packet size."""
    topic = f"mps/{uid}"
    with RawClient(broker.port, 5) as c:
        c.connect(f"mps-{uid}", properties={"maximum_packet_size": 100})
        c.subscribe(topic, 1)
        pub = TestClient(f"mpsp-{uid}", V5)
        pub.connect(broker.port)
        pub.publish(topic, b"x" * 200, 1)
        pub.publish(topic, b"small", 1)
        msg = c.expect(Publish)
        assert msg.payload == b"small"
        c.nothing(0.1)
        pub.disconnect()


def test_broker_maximum_packet_size_announced(make_broker, uid):
    b = make_broker("--max-packet-size", "512")
    with RawClient(b.port, 5) as c:
        assert c.connect(f"bm-{uid}").properties["maximum_packet_size"] == 512
        c.subscribe(f"bm/{uid}", 0)
        c.publish(f"bm/{uid}", b"y" * 400, 0)
        assert c.expect(Publish).payload == b"y" * 400
        c.publish(f"bm/{uid}", b"y" * 600, 0)
        assert [p.reason_code for p in c.closed_after()] == [0x95]


def test_no_local(broker, uid):
    topic = f"nl/{uid}"
    c = TestClient(f"nl-{uid}", V5)
    c.connect(broker.port)
    c.subscribe(topic, options=SubscribeOptions(qos=1, noLocal=True))
    c.publish(topic, b"mine", 1)
    c.expect_nothing(0.2)
    other = TestClient(f"nlo-{uid}", V5)
    other.connect(broker.port)
    other.publish(topic, b"theirs", 1)
    assert c.get().payload == b"theirs"
    other.disconnect()
    c.disconnect()


def test_subscription_identifiers(broker, uid):
    base = f"sid/{uid}"
    with RawClient(broker.port, 5) as c:
        c.connect(f"sid-{uid}")
        c.send(Subscribe(1, [SubOpts(f"{base}/+", 0)], {"subscription_identifier": 7}))
        c.expect(Suback)
        c.send(Subscribe(2, [SubOpts(f"{base}/#", 0)], {"subscription_identifier": 300000}))
        c.expect(Suback)
        c.send(Subscribe(3, [SubOpts(f"{base}/x/plain", 0)]))
        c.expect(Suback)
        pub = TestClient(f"sidp-{uid}", V5)
        pub.connect(broker.port)
        pub.publish(f"{base}/a", b"both", 1)
        # Overlapping subscriptions: one copy carrying every matching identifier.
        got = c.expect(Publish)
        assert got.payload == b"both"
        assert sorted(got.properties["subscription_identifier"]) == [7, 300000]
        c.nothing(0.3)
        pub.publish(f"{base}/x/plain", b"plain", 1)
        got = c.expect(Publish)
        assert got.properties["subscription_identifier"] == [300000]
        c.nothing(0.3)
        # re-subscribing replaces the identifier
        c.send(Subscribe(4, [SubOpts(f"{base}/+", 0)], {"subscription_identifier": 9}))
        c.expect(Suback)
        c.unsubscribe(f"{base}/#")
        pub.publish(f"{base}/b", b"re", 1)
        assert c.expect(Publish).properties["subscription_identifier"] == [9]
        pub.disconnect()


def test_subscription_identifier_in_client_publish_is_protocol_error(broker, uid):
    with RawClient(broker.port, 5) as c:
        c.connect(f"sidp-{uid}")
        c.publish(f"sidp/{uid}", b"x", 0, properties={"subscription_identifier": [3]})
        assert [p.reason_code for p in c.closed_after()] == [0x82]


def test_subscription_identifier_zero_is_protocol_error(broker, uid):
    with RawClient(broker.port, 5) as c:
        c.connect(f"sid0-{uid}")
        # SUBSCRIBE, pid 1, properties: subscription identifier (0x0B) = 0
        c.send(b"\x82\x08\x00\x01\x02\x0b\x00\x00\x01a\x00")
        assert [p.reason_code for p in c.closed_after()] in ([0x81], [0x82])


def test_default_connack_properties(broker, uid):
    with RawClient(broker.port, 5) as c:
        ack = c.connect(f"cp-{uid}", keepalive=30)
    p = ack.properties
    assert p["topic_alias_maximum"] == 64
    assert p["wildcard_subscription_available"] == 1
    assert p["shared_subscription_available"] == 1
    assert p["subscription_identifier_available"] == 1
    assert p["maximum_packet_size"] == 1048576
    assert p["receive_maximum"] >= 1
    assert "maximum_qos" not in p  # absent means 2
    assert p.get("retain_available", 1) == 1
    assert "server_keep_alive" not in p  # the client's own keep alive is used
    with RawClient(broker.port, 5) as c:  # asking for response information is fine too
        assert (
            c.connect(f"cpr-{uid}", properties={"request_response_information": 1}).reason_code == 0
        )
        assert c.is_open()


def test_maximum_qos(make_broker, uid):
    b = make_broker("--max-qos", "1")
    with RawClient(b.port, 5) as c:
        ack = c.connect(f"mq-{uid}")
        assert ack.properties["maximum_qos"] == 1
        assert c.subscribe(f"mq/{uid}", 2).reason_codes == [1]
        c.publish(f"mq/{uid}", b"q1", 1)
        assert {type(p) for p in c.recv_all(2)} == {Puback, Publish}
        c.publish(f"mq/{uid}", b"q2", 2)
        assert [p.reason_code for p in c.closed_after()] == [0x9B]
    v3 = TestClient(f"mq3-{uid}", V311)
    v3.connect(b.port)
    assert v3.subscribe(f"mq/{uid}", 2) == [1]
    v3.disconnect()


def test_qos2_to_broker_with_max_qos_0_will(make_broker, uid):
    b = make_broker("--max-qos", "0")
    with RawClient(b.port, 5) as c:
        assert c.connect(f"wq-{uid}", will=Will("w", b"x", 1)).reason_code == 0x9B


def test_auth_packet_after_connect_and_in_connect(broker, uid):
    """No enhanced authentication is configured: AUTH is a protocol error (0x82), a CONNECT
    naming a method is refused with 0x8C; other clients carry on."""
    other = TestClient(f"ao-{uid}", V5)
    other.connect(broker.port)
    for reason in (0x00, 0x18, 0x19):
        with RawClient(broker.port, 5) as c:
            c.connect(f"au{reason}-{uid}")
            c.send(Auth(reason, {"authentication_method": "SCRAM-SHA-1"} if reason else None))
            packets = c.closed_after()
            assert [(type(p), p.reason_code) for p in packets] == [(Disconnect, 0x82)]
    other.subscribe(f"ao/{uid}", 0)
    other.publish(f"ao/{uid}", b"fine", 0)
    assert other.get().payload == b"fine"
    other.disconnect()


def test_authentication_data_without_method_is_a_protocol_error(broker, uid):
    with RawClient(broker.port, 5) as c:
        ack = c.connect(f"ad-{uid}", properties={"authentication_data": b"secret"})
        assert ack.reason_code == 0x82
        assert c.closed_after() == []


def test_wildcard_response_topic_is_a_protocol_error(broker, uid):
    """Publish and will: a Response Topic is a topic name (MQTT 5 3.3.2.3.5, 3.1.3.2.5)."""
    sub = TestClient(f"rts-{uid}", V5)
    sub.connect(broker.port)
    sub.subscribe(f"rt/{uid}/#", 0)
    for bad in ("reply/+", "reply/#", "#"):
        with RawClient(broker.port, 5) as c:
            c.connect(f"rt-{uid}")
            c.publish(f"rt/{uid}/x", b"req", 1, properties={"response_topic": bad})
            assert [(type(p), p.reason_code) for p in c.closed_after()] == [(Disconnect, 0x82)]
        with RawClient(broker.port, 5) as c:
            will = Will(f"rt/{uid}/will", b"w", 0, properties={"response_topic": bad})
            assert c.connect(f"rtw-{uid}", will=will).reason_code == 0x82
            assert c.closed_after() == []
    with RawClient(broker.port, 5) as c:
        c.connect(f"rt-{uid}")
        c.publish(f"rt/{uid}/x", b"ok", 0, properties={"response_topic": "reply/a"})
        assert c.is_open()
    got = sub.get()
    assert got.payload == b"ok"  # only the valid request was routed; no will was published
    sub.expect_nothing()
    sub.disconnect()


def test_overlapping_subscriptions_deliver_one_copy_at_the_highest_qos(broker, uid):
    """One PUBLISH per client and message (MQTT 5 3.3.4, 3.1.1 3.3.5), with the highest
    granted QoS of the matching subscriptions, for v5 and v3 clients alike."""
    base = f"ov/{uid}"
    pub = TestClient(f"ovp-{uid}", V5)
    pub.connect(broker.port)
    for version in (5, 4):
        with RawClient(broker.port, version) as c:
            c.connect(f"ov{version}-{uid}")
            c.subscribe(f"{base}/+", 0)
            c.subscribe(f"{base}/#", 2)
            c.subscribe(f"{base}/a", 1)
            pub.publish(f"{base}/a", b"one", 2)
            got = c.expect(Publish)
            assert (got.payload, got.qos) == (b"one", 2)
            assert "subscription_identifier" not in (got.properties or {})
            c.send(Pubrec(got.packet_id))
            c.expect(Pubrel)
            c.send(Pubcomp(got.packet_id))
            pub.publish(f"{base}/a", b"q1", 1)  # the message's own QoS still caps it
            assert c.expect(Publish).qos == 1
            c.nothing(0.3)
    pub.disconnect()


def test_overlap_with_no_local_and_retain_as_published(broker, uid):
    """Own messages reach only the overlapping subscriptions without no local; the retain
    flag is kept when any matching subscription asks for retain as published."""
    base = f"ovl/{uid}"
    with RawClient(broker.port, 5) as c:
        c.connect(f"ovl-{uid}")
        c.send(
            Subscribe(1, [SubOpts(f"{base}/#", 2, no_local=True)], {"subscription_identifier": 1})
        )
        c.expect(Suback)
        c.send(
            Subscribe(
                2,
                [SubOpts(f"{base}/+", 1, retain_as_published=True)],
                {"subscription_identifier": 2},
            )
        )
        c.expect(Suback)
        c.publish(f"{base}/a", b"mine", 1, retain=True)
        got = [p for p in c.recv_all(2) if isinstance(p, Publish)]
        assert [(p.payload, p.qos, p.retain) for p in got] == [(b"mine", 1, True)]
        assert got[0].properties["subscription_identifier"] == [2]
        c.send(Puback(got[0].packet_id))
        c.unsubscribe(f"{base}/+")
        c.publish(f"{base}/a", b"only-nl", 0)
        c.nothing(0.3)  # its one remaining subscription is no local
        other = TestClient(f"ovlo-{uid}", V5)
        other.connect(broker.port)
        other.publish(f"{base}/a", b"", 0, retain=True)  # clear the retained message
        other.disconnect()
