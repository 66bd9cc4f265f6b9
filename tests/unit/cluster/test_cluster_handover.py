"""A session's hand-over between nodes, in memory: what its old node collects goes on in
the session writes, and the new owner delivers each message once, whichever of its two
copies (handed on by the old node, or straight from the publisher's node) comes first."""

from __future__ import annotations

import asyncio

from ferrymq.cluster.broker import ClusterBroker
from ferrymq.cluster.session_writes import SessionWrites
from ferrymq.cluster.store import ClusterStore
from ferrymq.model.delivery import Delivery
from ferrymq.model.message import Message
from ferrymq.mqtt.packets import Publish, Subscribe, SubscriptionOptions
from ferrymq.storage.codec import dump_message, load_message
from memory import Peer, settle


def test_what_a_handed_over_session_collects_goes_on_in_the_writes() -> None:
    store = ClusterStore(None, asyncio.new_event_loop())  # type: ignore[arg-type]
    store.muted.add("gone")
    msg = Message("t/late", b"late", 1, publisher="pub")
    store.put_session_message("gone", 7, msg, {"q": 1, "s": "queued"})
    store.put_session_message("here", 1, msg, {"q": 1, "s": "queued"})
    store.writes.discard("gone")  # a stale copy's own writes go; what it hands on does not
    args, _ = store.writes.take()
    ops = [tuple(args[i : i + 5]) for i in range(0, len(args), 5)]
    assert ops[0][:2] == ("late", "gone") and load_message(ops[0][2]).payload == b"late"
    assert [op[:3] for op in ops[1:]] == [("put", "here", "1")]
    assert not store.writes
    store.loop.close()


def test_hand_on_alone_is_something_to_send() -> None:
    writes = SessionWrites()
    writes.hand_on("c", Message("t", b"x", 0), {"q": 0, "s": "queued"})
    assert writes
    args, deleted = writes.take()
    assert args[:2] == ["late", "c"] and not deleted and not writes


def _copy(msg: Message) -> Message:
    """The same message as it comes from another node."""
    return load_message(dump_message(msg))


async def test_each_message_reaches_a_taken_over_session_once(broker: ClusterBroker) -> None:
    mover = Peer(broker, "mover", version=5)
    other = Peer(broker, "other", version=5)
    for peer in (mover, other):
        await peer.connack()
        peer.send(Subscribe(1, [SubscriptionOptions("h/#", 1)]))
        await peer.expect()
    registry = broker.cluster_clients
    registry._watch("mover")  # as when it is taken from a live node

    first = Message("h/1", b"late first", 1, publisher="pub")
    registry._deliver_late("mover", [Delivery(_copy(first), 1, False, None)])
    broker.dispatch_remote([_copy(first)])  # the copy straight from the publisher's node
    second = Message("h/2", b"direct first", 1, publisher="pub")
    broker.publish(second)
    registry._deliver_late("mover", [Delivery(_copy(second), 1, False, None)])
    broker.publish(Message("h/3", b"new", 1, publisher="pub"))  # the skip is over
    await settle()

    def payloads(peer: Peer) -> list[bytes]:
        return [p.payload for p in peer.received() if isinstance(p, Publish)]

    assert payloads(mover) == [b"late first", b"direct first", b"new"]
    # Only the watched session is spared the second copy: other subscribers get theirs.
    assert payloads(other) == [b"late first", b"direct first", b"new"]
    await asyncio.sleep(0)
    assert not registry._skipped
