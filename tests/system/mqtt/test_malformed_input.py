"""Malformed and illegal input on raw sockets: that connection closes (v5: with the right
reason code first), and a bystander client keeps being served."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest

from clients import V5, TestClient
from ferrymq.mqtt.packets import Connack, Disconnect, Publish, Pubrec, Will
from rawclient import RawClient, connect_bytes, frame, utf8


class Bystander:
    """A v5 client with a live subscription that must keep working through every test."""

    def __init__(self, port: int, uid: str) -> None:
        self.topic = f"bystander/{uid}"
        self.n = 0
        self.sub = TestClient(f"bs-{uid}", V5)
        self.pub = TestClient(f"bp-{uid}", V5)
        self.sub.connect(port)
        self.pub.connect(port)
        self.sub.subscribe(self.topic, 1)

    def check(self) -> None:
        self.n += 1
        payload = f"still here {self.n}".encode()
        self.pub.publish(self.topic, payload, 1)
        assert self.sub.get().payload == payload
        assert not self.sub.disconnected.is_set() and not self.pub.disconnected.is_set()


@pytest.fixture(scope="module")
def bystander(broker) -> Iterator[Bystander]:
    b = Bystander(broker.port, f"malformed-{time.monotonic_ns()}")
    yield b
    b.sub.disconnect()
    b.pub.disconnect()


def _closed_with(c: RawClient, reason: int | tuple[int, ...] | None) -> None:
    """The broker closes ``c``; v5 connections get DISCONNECT ``reason`` (or one of them) first."""
    packets = c.closed_after()
    if reason is None:
        assert packets == []
        return
    assert len(packets) == 1 and isinstance(packets[0], Disconnect), packets
    allowed = reason if isinstance(reason, tuple) else (reason,)
    assert packets[0].reason_code in allowed


def _raw_session(port: int, version: int, uid: str, tag: str) -> RawClient:
    c = RawClient(port, version)
    assert c.connect(f"{tag}-{uid}").reason_code == 0
    return c


# --- before and during CONNECT -------------------------------------------------------------


def test_first_packet_not_connect(broker, bystander):
    with RawClient(broker.port) as c:
        c.send(b"\xc0\x00")  # PINGREQ
        assert c.closed_after() == []
    bystander.check()


def test_garbage_bytes(broker, bystander):
    with RawClient(broker.port) as c:
        c.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert c.closed_after() == []
    bystander.check()


@pytest.mark.parametrize(
    ("name", "level", "expected"),
    [(b"MQTT", 6, 1), (b"MQTT", 3, 1), (b"MQIsdp", 4, 1), (b"HTTP", 4, 1)],
)
def test_unsupported_protocol_gets_connack_1(broker, bystander, name, level, expected):
    with RawClient(broker.port, 4) as c:
        c.send(connect_bytes("x", version=level, name=name))
        packets = c.closed_after()
        assert len(packets) == 1 and isinstance(packets[0], Connack)
        assert packets[0].reason_code == expected
    bystander.check()


def test_v5_bad_connect_gets_connack_with_reason(broker, bystander):
    with RawClient(broker.port, 5) as c:
        c.send(connect_bytes("x", version=5, flags=0x03))  # reserved flag bit 0 set
        packets = c.closed_after()
        assert len(packets) == 1 and isinstance(packets[0], Connack), packets
        assert packets[0].reason_code == 0x81
    with RawClient(broker.port, 5) as c:
        # property 0x01 (payload format indicator) does not belong in CONNECT
        c.send(connect_bytes("x", version=5, props=b"\x02\x01\x01"))
        packets = c.closed_after()
        assert len(packets) == 1 and isinstance(packets[0], Connack), packets
        assert packets[0].reason_code in (0x81, 0x82)
    bystander.check()


@pytest.mark.parametrize(
    "props",
    [
        pytest.param(b"\x03\x21\x00\x00", id="receive-maximum-0"),
        pytest.param(b"\x05\x27\x00\x00\x00\x00", id="maximum-packet-size-0"),
        pytest.param(b"\x02\x17\x02", id="request-problem-information-2"),
        pytest.param(b"\x0a\x11\x00\x00\x00\x01\x11\x00\x00\x00\x01", id="expiry-twice"),
        pytest.param(b"\x05\x11\x00\x00", id="property-past-end"),
    ],
)
def test_v5_connect_property_errors_get_connack(broker, bystander, props):
    with RawClient(broker.port, 5) as c:
        c.send(connect_bytes("props", version=5, props=props))
        packets = c.closed_after()
        assert len(packets) == 1 and isinstance(packets[0], Connack), packets
        assert packets[0].reason_code in (0x81, 0x82)
    bystander.check()


@pytest.mark.parametrize("version", [3, 4])
def test_v3_connect_reserved_flag_closes_without_connack(broker, bystander, version):
    with RawClient(broker.port, version) as c:
        c.send(connect_bytes("x", version=version, flags=0x03))
        assert c.closed_after() == []
    bystander.check()


def test_v311_password_without_username(broker, bystander):
    body = utf8("MQTT") + bytes((4, 0x42)) + b"\x00\x3c" + utf8("pw") + utf8("secret")
    with RawClient(broker.port, 4) as c:
        c.send(frame(0x10, body))
        assert c.closed_after() == []
    bystander.check()


def test_will_qos_without_will_flag(broker, bystander):
    with RawClient(broker.port, 4) as c:
        c.send(connect_bytes("x", version=4, flags=0x02 | 0x08))
        assert c.closed_after() == []
    bystander.check()


def test_second_connect_is_protocol_error(broker, bystander, uid):
    c = _raw_session(broker.port, 5, uid, "twice")
    c.send(connect_bytes(f"twice-{uid}", version=5))
    _closed_with(c, 0x82)
    bystander.check()


def test_invalid_utf8_client_id(broker, bystander):
    body = utf8("MQTT") + bytes((4, 0x02)) + b"\x00\x3c" + b"\x00\x02\xc3\x28"
    with RawClient(broker.port, 4) as c:
        c.send(frame(0x10, body))
        assert c.closed_after() == []
    bystander.check()


def test_invalid_will_topic_refused(broker, bystander, uid):
    with RawClient(broker.port, 5) as c:
        ack = c.connect(f"wt-{uid}", will=Will("will/+/bad", b"x"))
        assert ack.reason_code == 0x90
        assert c.closed_after() == []
    bystander.check()


def test_client_id_rules(broker, uid):
    with RawClient(broker.port, 3) as c:  # 3.1 limits client ids to 23 characters
        assert c.connect("x" * 24).reason_code == 2
    with RawClient(broker.port, 3) as c:
        assert c.connect("").reason_code == 2
    with RawClient(broker.port, 4) as c:  # 3.1.1: an empty id needs clean session
        assert c.connect("", clean=False).reason_code == 2


# --- after CONNECT ---------------------------------------------------------------------------


BAD_AFTER_CONNECT = [
    pytest.param(b"\x00\x00", 0x81, id="reserved-type-0"),
    pytest.param(b"\x20\x02\x00\x00", 0x82, id="client-sends-connack"),
    pytest.param(b"\x90\x03\x00\x01\x00", 0x82, id="client-sends-suback"),
    pytest.param(b"\xd0\x00", 0x82, id="client-sends-pingresp"),
    pytest.param(b"\xc1\x00", 0x81, id="pingreq-flags"),
    pytest.param(b"\xc0\x01\x00", 0x81, id="pingreq-with-body"),
    pytest.param(b"\x36\x07\x00\x03a/b\x00\x01", 0x81, id="publish-qos3"),
    pytest.param(b"\x38\x05\x00\x03a/b", 0x81, id="publish-qos0-dup"),
    pytest.param(b"\x32\x07\x00\x03a/b\x00\x00", 0x81, id="publish-pid-0"),
    pytest.param(b"\x30\x04\x00\x05ab", 0x81, id="publish-topic-past-end"),
    pytest.param(b"\x30\x05\x00\x02\xc3\x28\x00", 0x81, id="publish-topic-bad-utf8"),
    pytest.param(b"\x30\x06\x00\x03a\x00b\x00", 0x81, id="publish-topic-nul"),
    pytest.param(b"\x30\x06\x00\x03a/+\x00", 0x90, id="publish-topic-wildcard"),
    pytest.param(b"\x30\x03\x00\x00\x00", 0x82, id="publish-empty-topic-no-alias"),
    pytest.param(b"\x80\x07\x00\x01\x00\x00\x01a\x00", 0x81, id="subscribe-flags"),
    pytest.param(b"\x82\x03\x00\x01\x00", 0x82, id="subscribe-no-filters"),
    pytest.param(b"\x82\x07\x00\x01\x00\x00\x01a\x03", 0x81, id="subscribe-qos3"),
    pytest.param(b"\x82\x07\x00\x01\x00\x00\x01a\x30", 0x81, id="subscribe-retain-handling-3"),
    pytest.param(b"\x82\x07\x00\x01\x00\x00\x01a\xc0", 0x81, id="subscribe-reserved-bits"),
    pytest.param(b"\xa0\x06\x00\x01\x00\x00\x01a", 0x81, id="unsubscribe-flags"),
    pytest.param(b"\xa2\x03\x00\x01\x00", 0x82, id="unsubscribe-no-filters"),
    pytest.param(b"\x40\x02\x00\x00", 0x81, id="puback-pid-0"),
    pytest.param(b"\x60\x02\x00\x01", 0x81, id="pubrel-flags"),
    pytest.param(b"\x30\xff\xff\xff\xff\x01", 0x81, id="remaining-length-5-bytes"),
    pytest.param(b"\xe1\x00", 0x81, id="disconnect-flags"),
    pytest.param(b"\x30\x08\x00\x01a\x03\x23\x00\x00x", (0x82, 0x94), id="topic-alias-0"),
    pytest.param(b"\x30\x08\x00\x01a\x03\x23\x03\xe8x", 0x94, id="topic-alias-too-big"),
    pytest.param(b"\x30\x07\x00\x00\x03\x23\x00\x05x", 0x82, id="topic-alias-unknown"),
    pytest.param(
        b"\x30\x0a\x00\x01a\x05\x11\x00\x00\x00\x01x",
        (0x81, 0x82),
        id="publish-connect-only-property",
    ),
    pytest.param(b"\x30\x09\x00\x01a\x04\x01\x01\x01\x01x", 0x82, id="publish-property-twice"),
]


@pytest.mark.parametrize(("data", "reason"), BAD_AFTER_CONNECT)
def test_v5_illegal_packet_after_connect(broker, bystander, uid, data, reason):
    c = _raw_session(broker.port, 5, uid, "bad5")
    c.send(data)
    _closed_with(c, reason)
    bystander.check()


V3_BAD = [
    pytest.param(b"\xf0\x00", id="auth-in-v3"),
    pytest.param(b"\xe0\x01\x00", id="disconnect-with-body"),
    pytest.param(b"\x40\x03\x00\x01\x00", id="puback-with-reason-code"),
    pytest.param(b"\x36\x07\x00\x03a/b\x00\x01", id="publish-qos3"),
    pytest.param(b"\x30\x06\x00\x03a/#\x00", id="publish-topic-wildcard"),
    pytest.param(b"\x82\x06\x00\x01\x00\x01a\x04", id="subscribe-reserved-qos-bits"),
    pytest.param(b"\x10\x0c\x00\x04MQTT\x04\x02\x00\x3c\x00\x00", id="second-connect"),
]


@pytest.mark.parametrize("version", [3, 4])
@pytest.mark.parametrize("data", V3_BAD)
def test_v3_illegal_packet_after_connect(broker, bystander, uid, version, data):
    c = _raw_session(broker.port, version, uid, f"bad{version}")
    c.send(data)
    _closed_with(c, None)
    bystander.check()


def test_malformed_packet_after_good_ones_in_one_segment(broker, bystander, uid):
    """Packets decoded before the bad one in the same read are still handled."""
    topic = f"seg/{uid}"
    watcher = TestClient(f"segw-{uid}", V5)
    watcher.connect(broker.port)
    watcher.subscribe(topic, 0)
    c = _raw_session(broker.port, 5, uid, "seg")
    good = frame(0x30, utf8(topic) + b"\x00" + b"first")
    c.send(good + b"\x00\x00")
    _closed_with(c, 0x81)
    assert watcher.get().payload == b"first"
    watcher.disconnect()
    bystander.check()


def test_packet_split_across_reads_is_reassembled(broker, uid):
    topic = f"split/{uid}"
    c = _raw_session(broker.port, 4, uid, "split")
    c.subscribe(topic, 0)
    data = frame(0x30, utf8(topic) + b"payload-" + b"x" * 300)
    for i in range(0, len(data), 7):
        c.send(data[i : i + 7])
        time.sleep(0.001)
    msg = c.expect(Publish)
    assert msg.payload == b"payload-" + b"x" * 300
    c.close()


def test_packet_too_large(make_broker, uid):
    b = make_broker("--max-packet-size", "256")
    c = _raw_session(b.port, 5, uid, "big")
    c.publish(f"big/{uid}", b"x" * 300)
    _closed_with(c, 0x95)
    small = _raw_session(b.port, 5, uid, "small")
    assert small.is_open()
    small.close()


def test_qos2_beyond_receive_maximum(make_broker, uid):
    """More QoS 2 PUBLISH awaiting PUBREL than the CONNACK receive maximum: 0x93."""
    b = make_broker("--max-awaiting-rel", "2")
    c = RawClient(b.port, 5)
    ack = c.connect(f"rm-{uid}")
    assert ack.properties["receive_maximum"] == 2
    for _ in range(2):
        c.publish(f"rm/{uid}", b"x", 2)
        c.expect(Pubrec)
    c.publish(f"rm/{uid}", b"x", 2)
    _closed_with(c, 0x93)


def test_connect_timeout(make_broker):
    b = make_broker("--connect-timeout", "0.5")
    s = socket.create_connection(("127.0.0.1", b.port), timeout=3)
    start = time.monotonic()
    assert s.recv(10) == b""
    assert 0.4 <= time.monotonic() - start < 2.0
    s.close()


def test_broken_clients_in_bulk_do_not_hurt_others(broker, bystander):
    """Many abrupt resets and half-sent packets at once; the broker keeps serving."""
    socks = []
    for i in range(30):
        s = socket.create_connection(("127.0.0.1", broker.port), timeout=3)
        s.sendall(connect_bytes(f"bulk-{i}-{time.monotonic_ns()}", version=4)[: 5 + i % 7])
        socks.append(s)
    for s in socks:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        s.close()
    bystander.check()
