"""Durable state across broker restarts (SIGTERM and SIGKILL) and clean shutdown."""

from __future__ import annotations

import signal
import socket
import sqlite3
import time

import pytest
from paho.mqtt.packettypes import PacketTypes

from clients import V5, V311, TestClient, props
from ferrymq.mqtt.packets import Disconnect, Puback, Pubcomp, Publish, Pubrec, Pubrel
from rawclient import RawClient


def test_retained_survives_restart(make_broker, uid):
    b = make_broker()
    pub = TestClient(f"p-{uid}", V5)
    pub.connect(b.port)
    pub.publish(f"keep/{uid}/a", b"A", 1, retain=True)
    pub.publish(
        f"keep/{uid}/b",
        b"B",
        2,
        retain=True,
        properties=props(PacketTypes.PUBLISH, ContentType="text/x", UserProperty=[("u", "1")]),
    )
    pub.publish(f"keep/{uid}/c", b"C", 1, retain=True)
    pub.publish(f"keep/{uid}/c", b"", 1, retain=True)  # cleared before the restart
    pub.disconnect()
    b.restart()
    sub = TestClient(f"s-{uid}", V5)
    sub.connect(b.port)
    sub.subscribe(f"keep/{uid}/#", 2)
    got = {m.topic: m for m in sub.get_many(2)}
    sub.expect_nothing(0.2)
    assert sorted(got) == [f"keep/{uid}/a", f"keep/{uid}/b"]
    b_msg = got[f"keep/{uid}/b"]
    assert (b_msg.payload, b_msg.qos, b_msg.retain) == (b"B", 2, True)
    assert b_msg.properties.ContentType == "text/x"
    assert b_msg.properties.UserProperty == [("u", "1")]
    sub.disconnect()


@pytest.mark.parametrize("protocol", [V311, V5])
def test_persistent_session_and_queue_survive_restart(make_broker, uid, protocol):
    b = make_broker()
    cid = f"ps-{uid}"
    expiry = props(SessionExpiryInterval=300) if protocol == V5 else None
    sub = TestClient(cid, protocol)
    sub.connect(b.port, clean=False, properties=expiry)
    sub.subscribe([(f"ps/{uid}/+", 2), (f"ps/{uid}/x/#", 1)])
    sub.disconnect()
    pub = TestClient(f"pp-{uid}", protocol)
    pub.connect(b.port)
    sent = [(f"ps/{uid}/{i}", f"m{i}".encode(), i % 3) for i in range(6)]
    for topic, payload, qos in sent:
        pub.publish(topic, payload, qos)
    pub.disconnect()
    time.sleep(0.1)
    b.restart()

    sub = TestClient(cid, protocol)
    flags, _, _ = sub.connect(b.port, clean=False, properties=expiry)
    assert flags.session_present
    got = [(m.topic, m.payload, m.qos) for m in sub.get_many(6)]
    assert sorted(got) == sorted(sent)  # queued QoS 0 too (mqueue_store_qos0 default)
    # the subscriptions themselves came back
    pub = TestClient(f"pp-{uid}", protocol)
    pub.connect(b.port)
    pub.publish(f"ps/{uid}/x/deep", b"after restart", 1)
    assert sub.get().payload == b"after restart"
    pub.disconnect()
    sub.disconnect()


def test_inflight_messages_survive_restart(make_broker, uid):
    """Unacknowledged QoS 1/2 deliveries and a PUBREC'd QoS 2 come back after a restart."""
    b = make_broker()
    topic = f"inf/{uid}"
    cid = f"inf-{uid}"
    sub = RawClient(b.port, 4)
    sub.connect(cid, clean=False)
    sub.subscribe(topic, 2)
    pub = TestClient(f"infp-{uid}", V311)
    pub.connect(b.port)
    for payload, qos in ((b"q1", 1), (b"q2", 2), (b"q2b", 2)):
        pub.publish(topic, payload, qos)
    pub.disconnect()
    first = [sub.expect(Publish) for _ in range(3)]
    sub.send(Pubrec(first[2].packet_id))
    sub.expect(Pubrel)
    time.sleep(0.15)  # past the flush interval
    sub.close()
    b.restart()

    sub = RawClient(b.port, 4)
    assert sub.connect(cid, clean=False).session_present
    again = sub.recv_all(3)
    pubs = {p.packet_id: p for p in again if isinstance(p, Publish)}
    rels = [p.packet_id for p in again if isinstance(p, Pubrel)]
    assert {pid: (p.payload, p.dup) for pid, p in pubs.items()} == {
        first[0].packet_id: (b"q1", True),
        first[1].packet_id: (b"q2", True),
    }
    assert rels == [first[2].packet_id]
    sub.send(Puback(first[0].packet_id))
    sub.send(Pubrec(first[1].packet_id))
    assert sub.expect(Pubrel).packet_id == first[1].packet_id
    sub.send(Pubcomp(first[1].packet_id))
    sub.send(Pubcomp(first[2].packet_id))
    sub.nothing(0.2)
    sub.close()
    b.restart()  # everything was acknowledged: nothing comes back
    sub = RawClient(b.port, 4)
    assert sub.connect(cid, clean=False).session_present
    sub.nothing(0.2)
    sub.close()


@pytest.mark.parametrize("stop", ["restart", "crash"])
def test_incoming_qos2_state_survives_restart(make_broker, uid, stop):
    """A QoS 2 PUBLISH acknowledged with PUBREC is not routed again when the client resends
    it after a restart, and its PUBREL still completes. The packet id is durable while the
    client is still connected: a SIGKILL in mid-connection does not lose it either."""
    b = make_broker()
    topic = f"in2/{uid}"
    watcher = TestClient(f"w-{uid}", V311)
    watcher.connect(b.port, clean=False)
    watcher.subscribe(topic, 2)
    c = RawClient(b.port, 4)
    c.connect(f"in2-{uid}", clean=False)
    c.publish(topic, b"once", 2, pid=11)
    c.expect(Pubrec)
    assert watcher.get().payload == b"once"
    watcher.disconnect()
    time.sleep(0.3)  # several flush intervals
    if stop == "crash":
        assert b.stop(signal.SIGKILL) == -signal.SIGKILL
        c.close()
        b.start()
    else:
        c.close()
        b.restart()
    watcher = TestClient(f"w-{uid}", V311)
    watcher.connect(b.port, clean=False)
    c = RawClient(b.port, 4)
    assert c.connect(f"in2-{uid}", clean=False).session_present
    c.publish(topic, b"once", 2, pid=11, dup=True)
    assert c.expect(Pubrec).packet_id == 11
    c.send(Pubrel(11))
    assert c.expect(Pubcomp).packet_id == 11
    watcher.expect_nothing(0.3)
    c.close()
    watcher.disconnect()


def test_session_and_message_expiry_count_across_restart(make_broker, uid):
    b = make_broker()
    for cid, expiry in ((f"short-{uid}", 1), (f"long-{uid}", 300)):
        c = TestClient(cid, V5)
        c.connect(b.port, properties=props(SessionExpiryInterval=expiry))
        c.subscribe(f"exp/{uid}", 1)
        c.disconnect()
        pub = TestClient(f"rp-{uid}", V5)
        pub.connect(b.port)
        pub.publish(
            f"rexp/{uid}/{expiry}",
            b"r",
            1,
            retain=True,
            properties=props(PacketTypes.PUBLISH, MessageExpiryInterval=expiry),
        )
        pub.disconnect()
    time.sleep(0.1)
    b.stop()
    time.sleep(1.0)  # the short session's interval runs out while the broker is down
    b.start()
    present = {}
    for cid in (f"short-{uid}", f"long-{uid}"):
        c = TestClient(cid, V5)
        flags, _, _ = c.connect(b.port, clean=False, properties=props(SessionExpiryInterval=300))
        present[cid.split("-")[0]] = flags.session_present
        c.disconnect()
    assert present == {"short": False, "long": True}
    c = TestClient(f"rs-{uid}", V5)
    c.connect(b.port)
    c.subscribe(f"rexp/{uid}/+", 1)
    msg = c.get()
    assert msg.topic == f"rexp/{uid}/300"  # the other one expired while the broker was down
    assert 297 <= msg.properties.MessageExpiryInterval <= 299
    c.expect_nothing(0.2)
    c.disconnect()


def test_sigkill_loses_little_and_never_corrupts(make_broker, uid):
    b = make_broker()
    pub = TestClient(f"k-{uid}", V311)
    pub.connect(b.port)
    sub = TestClient(f"ks-{uid}", V311)
    sub.connect(b.port, clean=False)
    sub.subscribe(f"kill/{uid}/q", 1)
    sub.disconnect()
    for i in range(50):
        pub.publish(f"kill/{uid}/r{i}", f"r{i}".encode(), 1, retain=True)
        pub.publish(f"kill/{uid}/q", f"q{i}".encode(), 1)
    time.sleep(0.4)  # several flush intervals
    pub.drop()
    assert b.stop(signal.SIGKILL) == -signal.SIGKILL
    with sqlite3.connect(b.data_dir / "ferrymq.db") as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    b.start()
    check = TestClient(f"kc-{uid}", V311)
    check.connect(b.port)
    check.subscribe(f"kill/{uid}/+", 0)
    assert len(check.get_many(50)) == 50
    check.disconnect()
    sub = TestClient(f"ks-{uid}", V311)
    flags, _, _ = sub.connect(b.port, clean=False)
    assert flags.session_present
    assert [m.payload for m in sub.get_many(50)] == [f"q{i}".encode() for i in range(50)]
    sub.disconnect()


def test_sigkill_under_load_leaves_a_sound_database(make_broker, uid):
    b = make_broker()
    pub = TestClient(f"kl-{uid}", V311)
    pub.connect(b.port)
    sub = TestClient(f"kls-{uid}", V311)
    sub.connect(b.port, clean=False)
    sub.subscribe(f"load/{uid}/#", 1)
    sub.disconnect()
    for i in range(300):
        pub.publish(f"load/{uid}/{i % 20}", b"x" * 100, 1, retain=True, wait=False)
    b.stop(signal.SIGKILL)
    pub.drop()
    with sqlite3.connect(b.data_dir / "ferrymq.db") as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    b.start()
    sub = TestClient(f"kls-{uid}", V311)
    sub.connect(b.port, clean=False)
    sub.disconnect()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_clean_shutdown(make_broker, uid, sig):
    b = make_broker()
    v5 = RawClient(b.port, 5)
    v5.connect(f"sd5-{uid}", properties={"session_expiry_interval": 60})
    v5.subscribe(f"sd/{uid}", 1)
    v3 = RawClient(b.port, 4)
    v3.connect(f"sd3-{uid}", clean=False)
    v3.subscribe(f"sd/{uid}", 1)
    pub = TestClient(f"sdp-{uid}", V311)
    pub.connect(b.port)
    pub.publish(f"sd/{uid}", b"pending", 1)
    v5.expect(Publish)
    v3.expect(Publish)  # both hold an unacknowledged message
    pub.disconnect()
    assert b.stop(sig) == 0
    assert [(type(p), p.reason_code) for p in v5.closed_after()] == [(Disconnect, 0x8B)]
    assert v3.closed_after() == []
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", b.port), timeout=0.5).close()
    assert "stopped" in b.log()
    b.start()
    for version, cid in ((5, f"sd5-{uid}"), (4, f"sd3-{uid}")):
        c = RawClient(b.port, version)
        assert c.connect(
            cid, clean=False, properties={"session_expiry_interval": 60} if version == 5 else None
        ).session_present
        msg = c.expect(Publish)
        assert (msg.payload, msg.dup) == (b"pending", True)
        c.close()
