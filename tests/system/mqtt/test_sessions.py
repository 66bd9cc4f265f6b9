"""Keep alive, takeover, clean session / clean start, session expiry, assigned client ids."""

from __future__ import annotations

import time

import pytest
from paho.mqtt.packettypes import PacketTypes

from clients import V5, V31, V311, TestClient, props
from ferrymq.mqtt.packets import Disconnect, Publish
from rawclient import RawClient


def test_keepalive_timeout_is_one_and_a_half_times(broker, uid):
    """Silent clients are closed after 1.5 x keep alive; one that sends PINGREQ stays."""
    start = time.monotonic()  # no later than the broker's keep alive timers start
    quiet = {v: RawClient(broker.port, v, timeout=5) for v in (3, 4, 5)}
    for version, c in quiet.items():
        c.connect(f"ka{version}-{uid}", keepalive=1)
    pinger = RawClient(broker.port, 4)
    pinger.connect(f"kp-{uid}", keepalive=1)
    for i in range(5):
        time.sleep(0.4)
        assert pinger.is_open(0.1)
        if i == 2 and time.monotonic() - start < 1.4:  # past 1 x, before 1.5 x keep alive
            assert all(c.quiet() for c in quiet.values())
    for version, c in quiet.items():
        packets = c.closed_after()
        assert time.monotonic() - start < 2.5
        if version == 5:
            assert [(type(p), p.reason_code) for p in packets] == [(Disconnect, 0x8D)]
        else:
            assert packets == []
        c.close()
    assert pinger.is_open()
    pinger.disconnect()


def test_keepalive_zero_means_no_timeout(broker, uid):
    c = RawClient(broker.port, 4)
    c.connect(f"k0-{uid}", keepalive=0)
    time.sleep(0.3)
    assert c.is_open()
    c.disconnect()


def test_server_keepalive(make_broker, uid):
    b = make_broker("--server-keepalive", "1")
    v5 = RawClient(b.port, 5, timeout=5)
    ack = v5.connect(f"sk-{uid}", keepalive=600)
    assert ack.properties["server_keep_alive"] == 1
    v3 = RawClient(b.port, 4)  # MQTT 3 clients keep their own keep alive
    v3.connect(f"sk3-{uid}", keepalive=600)
    start = time.monotonic()
    assert [p.reason_code for p in v5.closed_after()] == [0x8D]
    assert 1.2 <= time.monotonic() - start < 2.5
    assert v3.is_open()
    v3.close()
    v5.close()


def test_max_keepalive_caps_v5_clients(make_broker, uid):
    b = make_broker("--max-keepalive", "30")
    with RawClient(b.port, 5) as c:
        assert c.connect(f"mk-{uid}", keepalive=60).properties["server_keep_alive"] == 30
    with RawClient(b.port, 5) as c:
        assert "server_keep_alive" not in c.connect(f"mk2-{uid}", keepalive=20).properties


@pytest.mark.parametrize("version", [3, 4, 5])
def test_takeover_closes_old_connection(broker, uid, version):
    cid = f"to{version}-{uid}"
    old = RawClient(broker.port, version)
    old.connect(cid)
    new = RawClient(broker.port, version)
    assert new.connect(cid).reason_code == 0
    packets = old.closed_after()
    if version == 5:
        assert [(type(p), p.reason_code) for p in packets] == [(Disconnect, 0x8E)]
    else:
        assert packets == []
    assert new.is_open()
    new.disconnect()


def test_takeover_keeps_persistent_session(broker, uid):
    cid = f"tp-{uid}"
    topic = f"tp/{uid}"
    old = TestClient(cid, V5)
    expiry = props(PacketTypes.CONNECT, SessionExpiryInterval=60)
    old.connect(broker.port, clean=True, properties=expiry)
    old.subscribe(topic, 1)
    new = TestClient(cid, V5)
    flags, _, _ = new.connect(broker.port, clean=False, properties=expiry)
    assert flags.session_present
    assert old.disconnects.get(timeout=3).value == 0x8E
    pub = TestClient(f"tpp-{uid}", V311)
    pub.connect(broker.port)
    pub.publish(topic, b"to the new one", 1)
    assert new.get().payload == b"to the new one"
    old.expect_nothing(0.1)
    old.drop()  # paho would reconnect and take the session back
    new.disconnect(props(PacketTypes.DISCONNECT, SessionExpiryInterval=0))
    pub.disconnect()


@pytest.mark.parametrize("protocol", [V31, V311])
def test_clean_session_flag(broker, uid, protocol):
    cid = f"cs-{uid}"[:23]
    topic = f"cs/{uid}"
    c = TestClient(cid, protocol)
    flags, _, _ = c.connect(broker.port, clean=False)
    assert not flags.session_present
    c.subscribe(topic, 1)
    c.disconnect()
    pub = TestClient(f"csp-{uid}"[:23], protocol)
    pub.connect(broker.port)
    pub.publish(topic, b"while away", 1)
    pub.publish(topic, b"also qos0", 0)

    c = TestClient(cid, protocol)
    flags, _, _ = c.connect(broker.port, clean=False)
    assert flags.session_present
    assert [m.payload for m in c.get_many(2)] == [b"while away", b"also qos0"]
    c.disconnect()

    c = TestClient(cid, protocol)
    flags, _, _ = c.connect(broker.port, clean=True)  # discards the session
    assert not flags.session_present
    pub.publish(topic, b"nobody listens", 1)
    c.expect_nothing(0.2)
    c.disconnect()
    c = TestClient(cid, protocol)
    flags, _, _ = c.connect(broker.port, clean=False)
    assert not flags.session_present
    c.disconnect()
    c = TestClient(cid, protocol)
    c.connect(broker.port, clean=True)
    c.disconnect()
    pub.disconnect()


def test_v5_session_expiry_interval(broker, uid):
    topic = f"se/{uid}"
    pub = TestClient(f"sep-{uid}", V5)
    pub.connect(broker.port)
    for cid, expiry in ((f"se0-{uid}", 0), (f"se1-{uid}", 1), (f"se9-{uid}", 60)):
        c = TestClient(cid, V5)
        c.connect(broker.port, properties=props(SessionExpiryInterval=expiry))
        c.subscribe(topic, 1)
        c.disconnect()
    pub.publish(topic, b"queued", 1)
    time.sleep(1.2)
    results = {}
    for cid in (f"se0-{uid}", f"se1-{uid}", f"se9-{uid}"):
        c = TestClient(cid, V5)
        flags, _, _ = c.connect(broker.port, clean=False, properties=props(SessionExpiryInterval=0))
        results[cid[:3]] = flags.session_present
        if flags.session_present:
            assert c.get().payload == b"queued"
        c.disconnect()
    assert results == {"se0": False, "se1": False, "se9": True}
    pub.disconnect()


def test_v5_clean_start_discards_and_disconnect_changes_expiry(broker, uid):
    cid = f"cx-{uid}"
    c = TestClient(cid, V5)
    c.connect(broker.port, properties=props(SessionExpiryInterval=60))
    c.subscribe(f"cx/{uid}", 1)
    c.disconnect(props(PacketTypes.DISCONNECT, SessionExpiryInterval=0))  # ends it now
    c = TestClient(cid, V5)
    flags, _, _ = c.connect(broker.port, clean=False, properties=props(SessionExpiryInterval=60))
    assert not flags.session_present
    c.disconnect()
    c = TestClient(cid, V5)
    flags, _, _ = c.connect(broker.port, clean=True, properties=props(SessionExpiryInterval=60))
    assert not flags.session_present  # clean start discards what was there
    c.disconnect(props(PacketTypes.DISCONNECT, SessionExpiryInterval=0))


def test_v5_disconnect_cannot_raise_expiry_from_zero(broker, uid):
    with RawClient(broker.port, 5) as c:
        c.connect(f"z-{uid}")
        c.send(Disconnect(0, {"session_expiry_interval": 30}))
        assert [p.reason_code for p in c.closed_after()] == [0x82]


def test_max_session_expiry_interval(make_broker, uid):
    b = make_broker("--max-session-expiry-interval", "1")
    with RawClient(b.port, 5) as c:
        ack = c.connect(f"mx-{uid}", properties={"session_expiry_interval": 3600})
        assert ack.properties["session_expiry_interval"] == 1


def test_v3_session_expiry_setting(make_broker, uid):
    """Offline MQTT 3 persistent sessions are kept for session_expiry_interval seconds."""
    b = make_broker("--session-expiry-interval", "1")
    c = TestClient(f"v3e-{uid}", V311)
    c.connect(b.port, clean=False)
    c.subscribe("x", 0)
    c.disconnect()
    time.sleep(1.2)
    c = TestClient(f"v3e-{uid}", V311)
    flags, _, _ = c.connect(b.port, clean=False)
    assert not flags.session_present
    c.disconnect()


def test_assigned_client_identifiers(broker, uid):
    with RawClient(broker.port, 5) as c:
        ack = c.connect("")
        assigned = ack.properties["assigned_client_identifier"]
        assert ack.reason_code == 0 and assigned
        c.subscribe(f"as/{uid}", 0)
        other = TestClient(f"asp-{uid}", V311)
        other.connect(broker.port)
        other.publish(f"as/{uid}", b"to anonymous", 0)
        assert c.expect(Publish).payload == b"to anonymous"
        other.disconnect()
    with RawClient(broker.port, 5) as c2:
        assert c2.connect("").properties["assigned_client_identifier"] != assigned
    with RawClient(broker.port, 4) as c:  # 3.1.1 with clean session: accepted, id not reported
        ack = c.connect("", clean=True)
        assert ack.reason_code == 0
        assert c.is_open()


def test_max_clientid_len(make_broker, uid):
    b = make_broker("--max-clientid-len", "8")
    with RawClient(b.port, 5) as c:
        assert c.connect("123456789").reason_code == 0x85
    with RawClient(b.port, 4) as c:
        assert c.connect("123456789").reason_code == 2
    with RawClient(b.port, 4) as c:
        assert c.connect("12345678").reason_code == 0


def test_max_connections(make_broker, uid):
    b = make_broker("--max-connections", "2")
    a1 = RawClient(b.port, 5)
    a2 = RawClient(b.port, 4)
    assert a1.connect("one").reason_code == 0
    assert a2.connect("two").reason_code == 0
    with RawClient(b.port, 5) as c:
        assert c.connect("three").reason_code == 0x97
    with RawClient(b.port, 4) as c:
        assert c.connect("four").reason_code == 3
    again = RawClient(b.port, 4)
    assert again.connect("one").reason_code == 0  # a takeover adds no connection
    assert a1.closed_after()[0].reason_code == 0x8E
    for c in (a1, a2, again):
        c.close()
