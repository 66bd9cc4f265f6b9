"""Shared subscription groups cluster-wide, in memory: the member counts every node keeps,
the choice of the node that serves a message, the frames that name the groups, and the
broker of a clustered node serving, forwarding and passing on group messages."""

from __future__ import annotations

import collections

import pytest

from ferrymq.cluster.broker import ClusterBroker
from ferrymq.cluster.codec import frame, frame_shared, read_batch
from ferrymq.cluster.outbox import Outbox
from ferrymq.cluster.shared import Group, SharedRoutes, group_key
from ferrymq.model.message import Message
from ferrymq.mqtt.packets import Publish, Subscribe, SubscriptionOptions, Unsubscribe
from ferrymq.storage.codec import dump_message
from memory import Peer, settle


def test_group_keys_are_the_filters_clients_subscribe_to() -> None:
    assert group_key("g", "a/#") == "$share/g/a/#"
    assert group_key("$queue", "q/+") == "$queue/q/+"
    group = Group("$queue/q/+", "random")
    assert (group.name, group.filter) == ("$queue", "q/+")


def test_shared_routes_keep_counts_per_node_and_match_topics() -> None:
    routes = SharedRoutes("me")
    routes.set("me", "$share/g/a/#", 1)
    routes.set("n2", "$share/g/a/#", 2)
    routes.set("n2", "$share/h/a/b", 1)
    assert sorted(g.key for g in routes.groups_for("a/b")) == ["$share/g/a/#", "$share/h/a/b"]
    (group,) = routes.groups_for("a/c")
    assert group.counts == {"me": 1, "n2": 2}
    routes.set("n2", "$share/g/a/#", 3)  # a count change: the cached answer sees it
    assert routes.groups_for("a/c")[0].counts == {"me": 1, "n2": 3}
    routes.set("me", "$share/g/a/#", 0)
    routes.set("n2", "$share/g/a/#", 0)  # the group is gone everywhere
    assert routes.groups_for("a/c") == ()
    assert [g.key for g in routes.groups_for("a/b")] == ["$share/h/a/b"]
    routes.set("n3", "$queue/#", 1)
    assert routes.drop_node("n2") == 1
    assert [g.key for g in routes.groups_for("a/b")] == ["$queue/#"]
    assert routes.counts_of("n2") == {} and len(routes) == 1
    routes.set("n9", "$queue/#", 0)  # never had it: harmless
    assert len(routes) == 1


def test_a_node_resync_and_a_full_resync_keep_this_nodes_own_counts() -> None:
    routes = SharedRoutes("me")
    routes.set("me", "$share/g/t", 2)
    routes.set("n2", "$share/g/t", 1)
    routes.set("n2", "$share/old/t", 1)
    routes.replace_node("n2", {"$share/g/t": 4})
    assert routes.counts_of("n2") == {"$share/g/t": 4}
    routes.replace({"$share/g/t": [("n3", 1), ("me", 9)], "$queue/x": [("n3", 2)]})
    assert routes.get("$share/g/t").counts == {"n3": 1, "me": 2}  # type: ignore[union-attr]
    assert routes.counts_of("n2") == {}
    assert routes.counts_of("n3") == {"$share/g/t": 1, "$queue/x": 2}


def _spread(
    strategy: str, counts: dict[str, int], n: int, publisher: str = "p"
) -> collections.Counter[str]:
    group = Group("$share/g/t", strategy)
    group.counts.update(counts)
    return collections.Counter(group.choose(publisher) for _ in range(n))  # type: ignore[misc]


def test_round_robin_walks_every_member_cluster_wide() -> None:
    assert _spread("round_robin", {"a": 2, "b": 1}, 300) == {"a": 200, "b": 100}


def test_random_weighs_nodes_by_their_members() -> None:
    got = _spread("random", {"a": 3, "b": 1}, 4000)
    assert set(got) == {"a", "b"} and 2600 < got["a"] < 3400


def test_hash_clientid_keeps_a_publisher_on_one_node_and_sticky_sticks() -> None:
    for publisher in ("p1", "p2", "p3"):
        assert len(_spread("hash_clientid", {"a": 1, "b": 1, "c": 1}, 20, publisher)) == 1
    group = Group("$share/g/t", "sticky")
    group.counts.update({"a": 1, "b": 1})
    first = group.choose("p")
    assert all(group.choose("p") == first for _ in range(20))
    del group.counts[first]  # type: ignore[arg-type]  # its members left: another node
    assert group.choose("p") == ({"a", "b"} - {first}).pop()


def test_choose_can_skip_a_node_and_finds_none_without_members() -> None:
    group = Group("$share/g/t", "round_robin")
    assert group.choose("p") is None
    group.counts.update({"me": 5, "n2": 1})
    assert {group.choose("p", skip="me") for _ in range(10)} == {"n2"}
    assert group.choose("p", skip="n2") == "me"
    assert Group("$share/g/t", "random").choose("p", skip="x") is None


def test_frames_name_their_groups_and_plain_ones_name_none() -> None:
    a = Message("a/b", b"one", 1, publisher="p")
    b = Message("a/c", b"two", 0)
    batch = frame(a) + frame_shared(dump_message(b), ["$share/g/a/+", "$queue/a/#"], 1)
    messages, served = read_batch(batch)
    assert [(m.topic, m.payload) for m in messages] == [("a/b", b"one"), ("a/c", b"two")]
    assert served == {1: (("$share/g/a/+", "$queue/a/#"), 1)}
    assert read_batch(frame(a))[1] is None
    for cut in (3, 6, len(batch) - 1):
        with pytest.raises(ValueError):
            read_batch(batch[:cut])


def test_outbox_stores_once_and_names_groups_only_where_asked() -> None:
    box = Outbox()
    msg = Message("t", b"x", 1)
    assert box.put_shared(msg, ("n2", "n3"), {"n3": ["$share/g/t"], "n4": ["$queue/t"]}) == 3
    assert box.messages == 3
    _qos0, reliable, count = box.take()
    assert count == 3
    asked = {node: read_batch(data)[1] for node, data in reliable.items()}
    assert asked == {"n2": None, "n3": {0: (("$share/g/t",), 0)}, "n4": {0: (("$queue/t",), 0)}}


async def member(broker: ClusterBroker, client_id: str, topic_filter: str) -> Peer:
    peer = Peer(broker, client_id, version=5)
    await peer.connack()
    peer.send(Subscribe(1, [SubscriptionOptions(topic_filter, 1)]))
    await peer.expect()
    return peer


def _publishes(peer: Peer) -> list[Publish]:
    return [p for p in peer.received() if isinstance(p, Publish)]


async def test_each_message_goes_to_one_member_cluster_wide(broker: ClusterBroker) -> None:
    node = broker.node
    here = await member(broker, "m1", "$share/g/s/#")
    assert node.shared.counts_of("me") == {"$share/g/s/#": 1}
    assert node._shared_out == {"$share/g/s/#": 1}  # for Redis, with the next route write
    node.shared.set("n2", "$share/g/s/#", 1)  # one member on another node
    for i in range(10):
        broker.publish(Message("s/x", str(i).encode(), 1, publisher="p"))
    await settle()
    local = len(_publishes(here))
    _qos0, reliable, forwarded = node.outbox.take()
    assert local == 5 and forwarded == 5  # round robin over two members, one per node
    messages, served = read_batch(reliable["n2"])
    assert len(messages) == 5 and all(ask == (("$share/g/s/#",), 0) for ask in served.values())  # type: ignore[union-attr]
    assert broker.metrics["messages.dropped.no_subscribers"] == 0


async def test_a_group_only_elsewhere_is_forwarded_and_matches(broker: ClusterBroker) -> None:
    node = broker.node
    node.shared.set("n2", "$queue/q", 2)
    node.replica.add("n3", "q")  # a plain subscriber on n3 gets its copy, no group named
    pub = Peer(broker, "pub", version=5)
    await pub.connack()
    pub.send(Publish("q", b"job", 1, packet_id=1))
    await settle()
    _qos0, reliable, count = node.outbox.take()
    broker.forwarded(node.outbox.sends - 1)  # in Redis: the PUBACK leaves
    await settle()
    acks = [p for p in pub.received() if not isinstance(p, Publish)]
    assert acks[-1].reason_code == 0  # matched elsewhere: not "no matching subscribers"
    assert count == 2
    assert read_batch(reliable["n2"])[1] == {0: (("$queue/q",), 0)}
    assert read_batch(reliable["n3"])[1] is None


async def test_forwarded_messages_serve_only_the_groups_they_name(broker: ClusterBroker) -> None:
    g = await member(broker, "g1", "$share/g/t")
    h = await member(broker, "h1", "$share/h/t")
    plain = await member(broker, "p1", "t")
    stored = dump_message(Message("t", b"for-g", 1, publisher="x"))
    broker.dispatch_remote(
        *read_batch(frame_shared(stored, ["$share/g/t"]) + frame(Message("t", b"plain", 1)))
    )
    await settle()
    assert [p.payload for p in _publishes(g)] == [b"for-g"]
    assert _publishes(h) == []  # its node was not picked for it: another node serves h
    assert [p.payload for p in _publishes(plain)] == [b"for-g", b"plain"]
    assert not broker.node.outbox


async def test_a_group_whose_members_left_is_passed_on_once(broker: ClusterBroker) -> None:
    node = broker.node
    node.shared.set("n2", "$share/g/t", 1)  # still has a member
    stored = dump_message(Message("t", b"orphan", 1, publisher="x"))
    broker.dispatch_remote(*read_batch(frame_shared(stored, ["$share/g/t"])))
    _qos0, reliable, count = node.outbox.take()
    assert count == 1 and read_batch(reliable["n2"])[1] == {0: (("$share/g/t",), 1)}
    assert broker.metrics["cluster.shared.passed_on"] == 1
    # Passed on already (hops 1): not again, counted as dropped.
    broker.dispatch_remote(*read_batch(frame_shared(stored, ["$share/g/t"], 1)))
    assert not node.outbox and broker.metrics["cluster.shared.dropped"] == 1


async def test_when_the_last_member_here_leaves_the_others_get_it_all(
    broker: ClusterBroker,
) -> None:
    node = broker.node
    m1 = await member(broker, "m1", "$share/g/t")
    node.shared.set("n2", "$share/g/t", 1)
    m1.send(Unsubscribe(2, ["$share/g/t"]))
    await m1.expect()
    assert node.shared.counts_of("me") == {} and node._shared_out == {"$share/g/t": 0}
    for i in range(4):
        broker.publish(Message("t", str(i).encode(), 1, publisher="p"))
    _qos0, reliable, count = node.outbox.take()
    assert count == 4 and len(read_batch(reliable["n2"])[0]) == 4
    assert _publishes(m1) == []


async def test_while_redis_is_away_local_members_serve_every_message(
    broker: ClusterBroker,
) -> None:
    node = broker.node
    here = await member(broker, "m1", "$share/g/t")
    node.shared.set("n2", "$share/g/t", 3)  # more members elsewhere, out of reach now
    node.up = False
    for i in range(6):
        broker.publish(Message("t", str(i).encode(), 1, publisher="p"))
    await settle()
    assert len(_publishes(here)) == 6
    assert broker.metrics["cluster.forward.paused"] == 0 and not node.outbox
