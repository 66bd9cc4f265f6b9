"""QoS 0/1/2 end to end: downgrade, exactly-once, the inflight window, DUP redelivery, the queue."""

from __future__ import annotations

import queue
import time

import pytest

from clients import V5, V311, TestClient
from ferrymq.mqtt.packets import Puback, Pubcomp, Publish, Pubrec, Pubrel
from rawclient import RawClient


def wait_sys_metric(port: int, name: str, expected: int, timeout: float = 3.0) -> None:
    """Wait until the broker's $SYS topic for counter ``name`` publishes ``expected``."""
    c = TestClient(f"m-{time.monotonic_ns()}", V311)
    c.connect(port)
    c.subscribe("$SYS/brokers/+/metrics/" + name.replace(".", "/"), 0)
    deadline = time.monotonic() + timeout
    seen = []
    try:
        while time.monotonic() < deadline:
            seen.append(int(c.get(timeout=max(0.01, deadline - time.monotonic())).payload))
            if seen[-1] == expected:
                return
    except queue.Empty:
        pass
    finally:
        c.disconnect()
    raise AssertionError(f"{name}: expected {expected}, $SYS published {seen}")


@pytest.mark.parametrize(("pub_qos", "sub_qos"), [(q, s) for q in range(3) for s in range(3)])
def test_delivered_qos_is_the_minimum(broker, uid, pub_qos, sub_qos):
    sub = TestClient(f"s-{uid}", V5)
    sub.connect(broker.port)
    sub.subscribe(f"q/{uid}", sub_qos)
    pub = TestClient(f"p-{uid}", V5)
    pub.connect(broker.port)
    pub.publish(f"q/{uid}", b"m", pub_qos)
    msg = sub.get()
    assert msg.qos == min(pub_qos, sub_qos)
    sub.expect_nothing(0.05)
    pub.disconnect()
    sub.disconnect()


def test_qos2_duplicate_publish_is_delivered_once(broker, uid):
    """A resent QoS 2 PUBLISH (same packet id, DUP) before PUBREL is acknowledged, not re-routed."""
    topic = f"eo/{uid}"
    sub = TestClient(f"eos-{uid}", V311)
    sub.connect(broker.port)
    sub.subscribe(topic, 2)
    with RawClient(broker.port, 4) as pub:
        pub.connect(f"eop-{uid}")
        pub.publish(topic, b"once", 2, pid=7)
        assert pub.expect(Pubrec).packet_id == 7
        pub.publish(topic, b"once", 2, pid=7, dup=True)
        assert pub.expect(Pubrec).packet_id == 7
        pub.publish(topic, b"once", 2, pid=7, dup=True)
        assert pub.expect(Pubrec).packet_id == 7
        pub.send(Pubrel(7))
        assert pub.expect(Pubcomp).packet_id == 7
        # the id is free again: a new message with it is a new message
        pub.publish(topic, b"twice", 2, pid=7)
        assert pub.expect(Pubrec).packet_id == 7
        pub.send(Pubrel(7))
        assert pub.expect(Pubcomp).packet_id == 7
    assert [m.payload for m in sub.get_many(2)] == [b"once", b"twice"]
    sub.expect_nothing(0.2)
    sub.disconnect()


def test_qos2_duplicate_after_reconnect_not_redelivered(broker, uid):
    """The publisher loses its connection after PUBREC and resends with DUP on a resumed session."""
    topic = f"eor/{uid}"
    sub = TestClient(f"eors-{uid}", V311)
    sub.connect(broker.port)
    sub.subscribe(topic, 2)
    pub = RawClient(broker.port, 4)
    pub.connect(f"eorp-{uid}", clean=False)
    pub.publish(topic, b"m", 2, pid=300)
    pub.expect(Pubrec)
    pub.close()
    pub = RawClient(broker.port, 4)
    assert pub.connect(f"eorp-{uid}", clean=False).session_present
    pub.publish(topic, b"m", 2, pid=300, dup=True)
    assert pub.expect(Pubrec).packet_id == 300
    pub.send(Pubrel(300))
    assert pub.expect(Pubcomp).reason_code == 0
    pub.disconnect()
    assert sub.get().payload == b"m"
    sub.expect_nothing(0.2)
    sub.disconnect()


def test_outbound_qos2_flow_and_pubrec_error(broker, uid):
    """Outbound QoS 2 waits for PUBREC, sends PUBREL, completes on PUBCOMP; a v5 PUBREC
    with an error code ends the flow without PUBREL."""
    topic = f"o2/{uid}"
    sub = RawClient(broker.port, 5)
    sub.connect(f"o2s-{uid}", properties={"receive_maximum": 1})
    sub.subscribe(topic, 2)
    pub = TestClient(f"o2p-{uid}", V5)
    pub.connect(broker.port)
    for payload in (b"a", b"b", b"c"):
        pub.publish(topic, payload, 2)
    a = sub.expect(Publish)
    assert (a.payload, a.qos) == (b"a", 2)
    sub.nothing(0.2)  # receive maximum 1: "b" waits for "a" to complete
    sub.send(Pubrec(a.packet_id, 0x80))  # refuse "a": the flow ends here, no PUBREL
    b = sub.expect(Publish)
    assert b.payload == b"b"
    sub.send(Pubrec(b.packet_id))
    assert sub.expect(Pubrel).packet_id == b.packet_id
    sub.send(Pubcomp(b.packet_id))
    assert sub.expect(Publish).payload == b"c"
    sub.close()
    pub.disconnect()


def test_inflight_window_default_32(broker, uid):
    """With PUBACKs withheld, at most max_inflight (32) QoS 1 messages are outstanding."""
    topic = f"win/{uid}"
    sub = RawClient(broker.port, 4)
    sub.connect(f"wins-{uid}")
    sub.subscribe(topic, 1)
    pub = TestClient(f"winp-{uid}", V311)
    pub.connect(broker.port)
    for i in range(40):
        pub.publish(topic, str(i).encode(), 1)
    got = [sub.expect(Publish) for _ in range(32)]
    assert [p.payload for p in got] == [str(i).encode() for i in range(32)]
    assert len({p.packet_id for p in got}) == 32
    sub.nothing(0.2)
    sub.send(Puback(got[0].packet_id))
    sub.send(Puback(got[1].packet_id))
    more = [sub.expect(Publish) for _ in range(2)]
    assert [p.payload for p in more] == [b"32", b"33"]
    sub.nothing(0.2)
    for p in got[2:] + more:
        sub.send(Puback(p.packet_id))
    rest = [sub.expect(Publish) for _ in range(6)]
    assert [p.payload for p in rest] == [str(i).encode() for i in range(34, 40)]
    sub.close()
    pub.disconnect()


def test_inflight_window_configured_and_receive_maximum(make_broker, uid):
    b = make_broker("--max-inflight", "3")
    pub = TestClient(f"p-{uid}", V311)
    pub.connect(b.port)
    for version, props, window in ((4, None, 3), (5, {"receive_maximum": 2}, 2)):
        topic = f"w/{uid}/{version}"
        sub = RawClient(b.port, version)
        sub.connect(f"s{version}-{uid}", properties=props)
        sub.subscribe(topic, 2)
        for i in range(6):
            pub.publish(topic, str(i).encode(), 2)
        got = [sub.expect(Publish) for _ in range(window)]
        sub.nothing(0.2)
        # a QoS 2 message leaves the window only on PUBCOMP, not on PUBREC
        sub.send(Pubrec(got[0].packet_id))
        assert sub.expect(Pubrel).packet_id == got[0].packet_id
        sub.nothing(0.2)
        sub.send(Pubcomp(got[0].packet_id))
        assert sub.expect(Publish).payload == str(window).encode()
        sub.close()
    pub.disconnect()


@pytest.mark.parametrize("version", [4, 5])
def test_unacknowledged_redelivered_with_dup_on_resume(broker, uid, version):
    topic = f"dup/{uid}"
    cid = f"dup-{uid}"
    props = {"session_expiry_interval": 60} if version == 5 else None
    sub = RawClient(broker.port, version)
    sub.connect(cid, clean=False, properties=props)
    sub.subscribe(topic, 2)
    pub = TestClient(f"dupp-{uid}", V311)
    pub.connect(broker.port)
    pub.publish(topic, b"q1", 1)
    pub.publish(topic, b"q2", 2)
    pub.publish(topic, b"q2-recd", 2)
    first = [sub.expect(Publish) for _ in range(3)]
    assert [p.dup for p in first] == [False] * 3
    sub.send(Pubrec(first[2].packet_id))
    assert sub.expect(Pubrel).packet_id == first[2].packet_id
    sub.close()  # vanish with nothing acknowledged but one PUBREC

    sub = RawClient(broker.port, version)
    ack = sub.connect(cid, clean=False, properties=props)
    assert ack.session_present
    again = sub.recv_all(3)
    pubs = [p for p in again if isinstance(p, Publish)]
    rels = [p for p in again if isinstance(p, Pubrel)]
    assert [(p.payload, p.packet_id, p.qos, p.dup) for p in pubs] == [
        (b"q1", first[0].packet_id, 1, True),
        (b"q2", first[1].packet_id, 2, True),
    ]
    assert [r.packet_id for r in rels] == [first[2].packet_id]
    sub.send(Puback(first[0].packet_id))
    sub.send(Pubrec(first[1].packet_id))
    assert sub.expect(Pubrel).packet_id == first[1].packet_id
    sub.send(Pubcomp(first[1].packet_id))
    sub.send(Pubcomp(first[2].packet_id))
    sub.nothing(0.2)
    sub.disconnect(0, {"session_expiry_interval": 0} if version == 5 else None)
    pub.disconnect()


def test_queue_behind_a_full_inflight_window_is_bounded(make_broker, uid):
    b = make_broker("--max-mqueue-len", "3", "--max-inflight", "2")
    topic = f"mqo/{uid}"
    sub = RawClient(b.port, 4)
    sub.connect(f"mqo-{uid}")
    sub.subscribe(topic, 1)
    pub = TestClient(f"mqop-{uid}", V311)
    pub.connect(b.port)
    for i in range(10):
        pub.publish(topic, str(i).encode(), 1)
    first = [sub.expect(Publish) for _ in range(2)]
    assert [p.payload for p in first] == [b"0", b"1"]
    sub.nothing(0.2)
    for p in first:
        sub.send(Puback(p.packet_id))
    rest = []
    for _ in range(3):
        rest.append(sub.expect(Publish))
        sub.send(Puback(rest[-1].packet_id))
    assert [p.payload for p in rest] == [b"7", b"8", b"9"]  # the 3 newest were kept
    sub.nothing(0.2)
    sub.close()
    pub.disconnect()


def test_queue_bounded_oldest_dropped_and_counted(make_broker, uid):
    b = make_broker("--max-mqueue-len", "5", "--sys-interval", "1")
    topic = f"mq/{uid}"
    sub = TestClient(f"mqs-{uid}", V311)
    sub.connect(b.port, clean=False)
    sub.subscribe(topic, 1)
    sub.disconnect()
    pub = TestClient(f"mqp-{uid}", V311)
    pub.connect(b.port)
    for i in range(8):
        pub.publish(topic, str(i).encode(), 1)
    wait_sys_metric(b.port, "delivery.dropped.queue_full", 3)
    sub = TestClient(f"mqs-{uid}", V311)
    sub.connect(b.port, clean=False)
    assert [m.payload for m in sub.get_many(5)] == [b"3", b"4", b"5", b"6", b"7"]
    sub.expect_nothing(0.2)
    sub.disconnect()
    pub.disconnect()


@pytest.mark.parametrize("store_qos0", [True, False])
def test_qos0_queueing_for_offline_sessions_is_configurable(make_broker, uid, store_qos0):
    b = make_broker("--mqueue-store-qos0" if store_qos0 else "--no-mqueue-store-qos0")
    topic = f"q0/{uid}"
    sub = TestClient(f"q0s-{uid}", V311)
    sub.connect(b.port, clean=False)
    sub.subscribe(topic, 1)
    sub.disconnect()
    pub = TestClient(f"q0p-{uid}", V311)
    pub.connect(b.port)
    pub.publish(topic, b"zero", 0)
    pub.publish(topic, b"one", 1)
    time.sleep(0.1)
    sub = TestClient(f"q0s-{uid}", V311)
    sub.connect(b.port, clean=False)
    expected = [b"zero", b"one"] if store_qos0 else [b"one"]
    assert [m.payload for m in sub.get_many(len(expected))] == expected
    sub.expect_nothing(0.2)
    sub.disconnect()
    pub.disconnect()


def test_many_messages_in_order_per_qos(broker, uid):
    """Ordering is kept per topic for QoS 1 and 2 through a fast burst."""
    topic = f"order/{uid}"
    sub = TestClient(f"os-{uid}", V5)
    sub.connect(broker.port)
    sub.subscribe(topic, 2)
    pub = TestClient(f"op-{uid}", V5)
    pub.connect(broker.port)
    infos = [pub.publish(topic, str(i).encode(), 1 + i % 2, wait=False) for i in range(200)]
    for info in infos:
        info.wait_for_publish(5)
    got = sub.get_many(200, timeout=10)
    for qos in (1, 2):  # paho hands QoS 2 over on PUBREL, so compare order per QoS
        sent = [str(i).encode() for i in range(200) if 1 + i % 2 == qos]
        assert [m.payload for m in got if m.qos == qos] == sent
    pub.disconnect()
    sub.disconnect()
