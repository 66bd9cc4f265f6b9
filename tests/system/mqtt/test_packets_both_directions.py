"""Every control packet in both directions, for MQTT 3.1, 3.1.1 and 5.0, against the real broker."""

from __future__ import annotations

import pytest

from clients import V5, V31, V311, TestClient
from ferrymq.mqtt.packets import (
    Auth,
    Connack,
    Disconnect,
    Pingresp,
    Puback,
    Pubcomp,
    Publish,
    Pubrec,
    Pubrel,
    Suback,
    Subscribe,
    SubscriptionOptions,
    Unsuback,
)
from rawclient import RawClient

VERSIONS = [pytest.param(3, id="3.1"), pytest.param(4, id="3.1.1"), pytest.param(5, id="5.0")]
PAHO = {3: V31, 4: V311, 5: V5}


@pytest.mark.parametrize("version", VERSIONS)
def test_paho_round_trip_every_qos(broker, uid, version):
    """A real client of each version subscribes, publishes at every QoS, unsubscribes."""
    sub = TestClient(f"s{uid}"[:23], PAHO[version])
    pub = TestClient(f"p{uid}"[:23], PAHO[version])
    sub.connect(broker.port)
    pub.connect(broker.port)
    granted = sub.subscribe(f"pk/{uid}/#", 2)
    assert [getattr(g, "value", g) for g in granted] == [2]
    for qos in (0, 1, 2):
        pub.publish(f"pk/{uid}/q{qos}", f"m{qos}".encode(), qos)
        msg = sub.get()
        assert (msg.topic, msg.payload, msg.qos) == (f"pk/{uid}/q{qos}", f"m{qos}".encode(), qos)
        assert not msg.retain
    sub.unsubscribe(f"pk/{uid}/#")
    pub.publish(f"pk/{uid}/after", b"x", 1)
    sub.expect_nothing(0.2)
    pub.disconnect()
    sub.disconnect()


@pytest.mark.parametrize("version", VERSIONS)
def test_raw_packets_both_directions(broker, uid, version):
    """CONNECT, SUBSCRIBE, PUBLISH and every ack both ways, UNSUBSCRIBE, PING, DISCONNECT."""
    topic = f"raw/{uid}"
    sub = RawClient(broker.port, version)
    pub = RawClient(broker.port, version)
    ack = sub.connect(f"s{uid}")
    assert (ack.reason_code, ack.session_present) == (0, False)
    assert pub.connect(f"p{uid}").reason_code == 0
    suback = sub.subscribe(topic, 2)
    assert suback.reason_codes == [2]

    # QoS 1: PUBLISH -> PUBACK in, PUBLISH -> PUBACK out
    pid = pub.publish(topic, b"one", 1)
    puback = pub.expect(Puback)
    assert puback.packet_id == pid and puback.reason_code == 0
    out = sub.expect(Publish)
    assert (out.topic, out.payload, out.qos, out.dup) == (topic, b"one", 1, False)
    sub.send(Puback(out.packet_id))

    # QoS 2 inbound: PUBLISH -> PUBREC, PUBREL -> PUBCOMP
    pid = pub.publish(topic, b"two", 2)
    assert pub.expect(Pubrec).packet_id == pid
    pub.send(Pubrel(pid))
    assert pub.expect(Pubcomp).packet_id == pid
    # QoS 2 outbound: PUBLISH -> PUBREC, PUBREL <- , PUBCOMP ->
    out = sub.expect(Publish)
    assert (out.payload, out.qos) == (b"two", 2)
    sub.send(Pubrec(out.packet_id))
    assert sub.expect(Pubrel).packet_id == out.packet_id
    sub.send(Pubcomp(out.packet_id))

    # QoS 0 needs no acknowledgement either way
    pub.publish(topic, b"zero", 0)
    out = sub.expect(Publish)
    assert (out.payload, out.qos, out.packet_id) == (b"zero", 0, 0)

    pub.send(b"\xc0\x00")
    assert isinstance(pub.recv(), Pingresp)
    unsuback = sub.unsubscribe(topic)
    assert isinstance(unsuback, Unsuback)
    if version == 5:
        assert unsuback.reason_codes == [0]
    pub.publish(topic, b"gone", 0)
    sub.nothing(0.2)

    pub.send(Disconnect())
    assert pub.closed_after() == []
    sub.disconnect()


def test_v5_server_disconnect_and_auth_packets(broker, uid):
    """The two packets a v5 server may send unprompted, and AUTH without a method."""
    with RawClient(broker.port, 5) as c:
        assert c.connect(f"a{uid}").reason_code == 0
        c.send(Auth(0x19, {"authentication_method": "SCRAM-SHA-1"}))
        packets = c.closed_after()
        assert len(packets) == 1 and isinstance(packets[0], Disconnect)
        assert packets[0].reason_code == 0x82  # AUTH without a CONNECT method: protocol error


def test_v5_connect_with_authentication_method_is_refused(broker, uid):
    with RawClient(broker.port, 5) as c:
        ack = c.connect(f"m{uid}", properties={"authentication_method": "SCRAM-SHA-256"})
        assert ack.reason_code == 0x8C
        assert c.closed_after() == []


def test_v5_suback_and_unsuback_reason_codes(broker, uid):
    with RawClient(broker.port, 5) as c:
        c.connect(f"r{uid}")
        assert c.subscribe(f"sr/{uid}/a", 1).reason_codes == [1]
        assert c.subscribe(f"sr/{uid}/#/x", 1).reason_codes == [0x8F]
        assert c.unsubscribe(f"sr/{uid}/a").reason_codes == [0]
        assert c.unsubscribe(f"sr/{uid}/a").reason_codes == [0x11]


def test_v5_puback_no_matching_subscribers(broker, uid):
    with RawClient(broker.port, 5) as c:
        c.connect(f"n{uid}")
        pid = c.publish(f"nobody/{uid}", b"x", 1)
        ack = c.expect(Puback)
        assert (ack.packet_id, ack.reason_code) == (pid, 0x10)
        pid = c.publish(f"nobody/{uid}", b"x", 2)
        rec = c.expect(Pubrec)
        assert (rec.packet_id, rec.reason_code) == (pid, 0x10)
        c.send(Pubrel(pid))
        assert c.expect(Pubcomp).reason_code == 0


def test_unknown_pubrel_gets_pubcomp_not_found(broker, uid):
    with RawClient(broker.port, 5) as c:
        c.connect(f"u{uid}")
        c.send(Pubrel(4242))
        comp = c.expect(Pubcomp)
        assert (comp.packet_id, comp.reason_code) == (4242, 0x92)
        assert c.is_open()


def test_subscribe_with_many_filters_gets_a_code_per_filter(broker, uid):
    """One SUBSCRIBE with several filters gets one SUBACK code per filter, in order."""
    with RawClient(broker.port, 4) as c:
        assert isinstance(c.connect(f"m{uid}"), Connack)
        c.send(
            Subscribe(
                9,
                [
                    SubscriptionOptions(f"mf/{uid}/0", 0),
                    SubscriptionOptions(f"mf/{uid}/#/bad", 1),
                    SubscriptionOptions(f"mf/{uid}/2", 2),
                ],
            )
        )
        ack = c.expect(Suback)
        assert (ack.packet_id, ack.reason_codes) == (9, [0, 0x80, 2])
