"""Forwarded messages in memory: frames and batches, the outbox, and the broker of a
clustered node (what it forwards, what it dispatches, what it never sends back)."""

from __future__ import annotations

import struct
import time

import pytest

from ferrymq.cluster.broker import ClusterBroker
from ferrymq.cluster.codec import count_frames, frame, frame_shared, read_batch, split
from ferrymq.cluster.node import _batch_commands
from ferrymq.cluster.outbox import HIGH, Outbox
from ferrymq.model.message import Message
from ferrymq.mqtt.packets import Publish, Subscribe, SubscriptionOptions
from memory import Peer, settle


def test_a_batch_of_frames_keeps_every_field() -> None:
    props = {"user_property": [("k", "v")], "correlation_data": b"\x00\x01"}
    msgs = [
        Message("a/b", b"zero", 0, False, None, "pub1"),
        Message("a/c", b"one", 1, True, props, "pub2", time.monotonic() + 30),
        Message("x", b"", 2, False),
    ]
    out = split(b"".join(frame(m) for m in msgs))
    assert [(m.topic, m.payload, m.qos, m.retain, m.publisher) for m in out] == [
        ("a/b", b"zero", 0, False, "pub1"),
        ("a/c", b"one", 1, True, "pub2"),
        ("x", b"", 2, False, ""),
    ]
    assert out[1].properties == props
    assert 29 <= out[1].remaining_expiry(time.monotonic()) <= 30  # type: ignore[operator]
    assert out[0].expiry_at == 0.0


def test_a_truncated_batch_is_refused() -> None:
    data = frame(Message("a", b"payload"))
    for cut in (2, len(data) - 1):
        with pytest.raises(ValueError):
            split(data[:cut])
    assert split(b"") == []


def test_frames_keep_their_layout_across_versions() -> None:
    """u32 little-endian length (top bit: groups follow as u8 hops | u16 size | keys): what
    a node of the previous version writes and reads."""
    stored = b"stored message"
    assert frame_shared(stored, ["$share/g/a", "$queue/b"], 1) == (
        struct.pack("<I", (3 + 19 + len(stored)) | 0x8000_0000)
        + struct.pack("<BH", 1, 19)
        + b"$share/g/a\x00$queue/b"
        + stored
    )
    plain = frame(Message("a", b"p"))
    assert struct.unpack_from("<I", plain)[0] == len(plain) - 4


def test_malformed_batches_are_refused() -> None:
    stored = frame(Message("a", b"payload"))[4:]
    shared = frame_shared(stored, ["$share/g/a"])
    bad = [
        b"\x01\x00\x00",  # a length cut short
        struct.pack("<I", 2**31 - 1) + stored,  # longer than the batch
        struct.pack("<I", 0x8000_0002) + b"\x00\x00",  # groups header cut short
        struct.pack("<I", 0x8000_0003) + struct.pack("<BH", 0, 9),  # groups overrun the frame
        struct.pack("<I", 0x8000_0004) + struct.pack("<BH", 0, 1) + b"\xff",  # not UTF-8
        struct.pack("<I", 3) + b"\x02\x00\x00",  # not a stored message
        shared + shared[:-1],  # the second frame truncated
    ]
    for batch in bad:
        with pytest.raises(ValueError):
            read_batch(batch)
    assert count_frames(shared + shared + shared[:5]) == 3
    assert count_frames(b"") == 0


def test_outbox_encodes_once_and_batches_per_node_and_kind() -> None:
    box = Outbox()
    m0 = Message("t", b"q0", 0)
    m1 = Message("t", b"q1", 1)
    m2 = Message("u", b"q2", 2)
    box.put(m0, ("n2", "n3"))
    box.put(m1, ("n2", "n3"))
    box.put(m2, ("n3",))
    assert box.messages == 5
    # One frame object shared by both destinations: encoded once.
    assert box.qos0["n2"][0] is box.qos0["n3"][0]
    qos0, reliable, count = box.take()
    assert count == 5 and not box
    assert set(qos0) == {"n2", "n3"} and set(reliable) == {"n2", "n3"}
    assert [m.payload for m in split(qos0["n2"])] == [b"q0"]
    assert [m.payload for m in split(reliable["n3"])] == [b"q1", b"q2"]
    assert box.take() == ({}, {}, 0)


async def subscribed(broker: ClusterBroker, client_id: str, topic_filter: str) -> Peer:
    peer = Peer(broker, client_id, version=5)
    await peer.connack()
    peer.send(Subscribe(1, [SubscriptionOptions(topic_filter, 1, no_local=True)]))
    await peer.expect()
    return peer


async def test_publish_forwards_to_matching_nodes_only(broker: ClusterBroker) -> None:
    node = broker.node
    node.replica.add("n2", "a/#")
    node.replica.add("n3", "b/#")
    pub = Peer(broker, "pub", version=5)
    await pub.connack()
    pub.send(Publish("a/1", b"x", 1, packet_id=1))
    pub.send(Publish("c/1", b"nowhere", 0))
    await settle()
    assert node.outbox.messages == 1 and list(node.outbox.reliable) == ["n2"]
    (msg,) = split(node.outbox.reliable["n2"][0])
    assert (msg.topic, msg.payload, msg.publisher) == ("a/1", b"x", "pub")
    # Matched on another node only: a success, not "no matching subscribers", not dropped;
    # it leaves once the send carrying the message is in Redis.
    assert pub.received() == []
    node.outbox.take()
    broker.forwarded(node.outbox.sends - 1)
    await settle()
    puback = [p for p in pub.received() if not isinstance(p, Publish)]
    assert puback[-1].reason_code == 0
    assert broker.metrics["messages.dropped.no_subscribers"] == 1  # c/1 only


async def test_a_topic_that_stayed_local_is_forwarded_once_another_node_subscribes(
    broker: ClusterBroker,
) -> None:
    """Local-only traffic takes the broker's own path once the topic is known to go nowhere
    else; a route another node adds later reaches that topic's next message."""
    node = broker.node
    sub = await subscribed(broker, "sub", "t/#")
    pub = Peer(broker, "pub")
    await pub.connack()
    for i in range(3):
        pub.send(Publish("t/1", b"%d" % i, 0))
    await settle()
    assert [p.payload for p in await sub.expect(3)] == [b"0", b"1", b"2"]
    assert not node.outbox
    node.replica.add("n2", "t/+")
    pub.send(Publish("t/1", b"now", 0))
    await settle()
    assert [p.payload for p in await sub.expect()] == [b"now"]
    assert [m.payload for m in split(node.outbox.qos0["n2"][0])] == [b"now"]


async def test_forwarding_while_redis_is_away_is_counted_not_queued(broker: ClusterBroker) -> None:
    broker.node.up = False
    broker.node.replica.add("n2", "#")
    broker.publish(Message("t", b"x", 0, publisher="p"))
    assert broker.metrics["cluster.forward.paused"] == 1
    assert not broker.node.outbox


async def test_dispatch_remote_delivers_locally_and_never_forwards(broker: ClusterBroker) -> None:
    node = broker.node
    node.replica.add("n2", "a/#")  # another node subscribes too: it must not get it back
    sub = await subscribed(broker, "sub", "a/#")
    me = await subscribed(broker, "me", "a/#")  # no local
    expired = Message("a/old", b"late", 1, publisher="pub", expiry_at=time.monotonic() - 1)
    fresh = Message("a/1", b"x", 1, True, publisher="me")
    broker.dispatch_remote(split(frame(expired) + frame(fresh)))
    got = await sub.expect()
    assert [(p.topic, p.payload) for p in got] == [("a/1", b"x")]
    assert me.received() == []  # its own message: no local holds across nodes
    assert not node.outbox
    assert broker.retained.get("a/1") is None  # retained state travels on its own
    assert node._retained_out == {}
    assert broker.metrics["cluster.received"] == 1
    assert broker.metrics["cluster.dropped.expired"] == 1
    # Counted once the slice is dispatched; another node's $SYS message is not counted.
    assert broker.metrics["messages.received"] == 1
    broker.dispatch_remote(split(frame(Message("$SYS/brokers/n2/uptime", b"1"))))
    assert broker.metrics["messages.received"] == 1
    assert broker.metrics["cluster.received"] == 2
    assert not broker.in_read


async def test_a_message_into_an_empty_outbox_wakes_the_sender(broker: ClusterBroker) -> None:
    """Once a topic's nodes are cached, its messages go into the outbox from the compiled
    publish; the first after a take wakes the sender, which takes what joins until it runs."""
    node = broker.node
    node.replica.add("n2", "t/#")
    msg = Message("t/x", b"x", 0, publisher="pub")
    assert broker.publish(msg) == 1  # the topic is not cached yet: publish_cluster
    assert broker.cluster_answers == {"t/x": ("n2",)}
    node.outbox.take()
    for _ in range(2):
        node._wake.clear()
        assert broker.publish(msg) == 1 and node._wake.is_set()
        node._wake.clear()
        assert broker.publish(msg) == 1 and not node._wake.is_set()  # it will run anyway
        node.outbox.take()
    assert broker.metrics["messages.dropped.no_subscribers"] == 0
    assert broker.metrics["messages.received"] == 5


async def test_retained_changes_are_announced_once(broker: ClusterBroker) -> None:
    node = broker.node
    broker.publish(Message("r/1", b"kept", 1, True, publisher="p"))
    assert list(node._retained_out) == ["r/1"]
    node._retained_out.clear()
    broker.apply_remote_retain(Message("r/2", b"theirs", 0, True))
    assert broker.retained.get("r/2") is not None
    assert node._retained_out == {}  # another node's change is not sent back
    broker.apply_remote_retain(Message("r/2", b"", 0, True))
    assert broker.retained.get("r/2") is None
    assert broker.delete_retained("r/1")
    assert node._retained_out["r/1"].payload == b""
    broker.publish(Message("$SYS/x", b"s", 0, True))
    assert "$SYS/x" not in node._retained_out


async def test_a_long_outbox_pauses_its_publishers_until_it_is_sent(broker: ClusterBroker) -> None:
    node = broker.node
    node.replica.add("n2", "t/#")
    pub = Peer(broker, "pub", version=5)
    await pub.connack()
    broker.flow.hold_saturated()  # short of CPU
    msg = Message("t/x", b"x", 0, publisher="pub")
    for _ in range(HIGH - 1):
        broker.publish(msg, pub.client)
    assert not pub.client.read_paused  # below the mark: read on
    broker.publish(msg, pub.client)
    assert pub.client.read_paused and pub.transport.reading is False
    node.outbox.take()
    broker.forwarded(node.outbox.sends - 1)  # what the sender does once Redis took the batch
    assert not pub.client.read_paused and pub.transport.reading is True


def test_one_command_per_destination_and_kind() -> None:
    commands = _batch_commands({"n2": b"q0"}, {"n2": b"q1", "n3": b"q1"})
    assert [c[:2] for c in commands] == [
        ("PUBLISH", "ferrymq:inbox0:n2"),
        ("XADD", "ferrymq:inbox:n2"),
        ("XADD", "ferrymq:inbox:n3"),
    ]
    assert commands[1][-2:] == ("m", b"q1")
