"""SUBACKs held until the routes they follow are in Redis, in memory: the gate's order and
bounds, and a clustered broker's client whose SUBACK waits for the route write."""

from __future__ import annotations

import asyncio

from ferrymq.cluster.broker import clustered_broker
from ferrymq.cluster.subacks import SubackGate, entry_id
from ferrymq.config import Settings
from ferrymq.mqtt.packets import Suback, Subscribe, SubscriptionOptions
from memory import Peer, settle, until


async def test_nothing_is_held_without_a_new_route() -> None:
    gate = SubackGate(bound=5.0)
    sent: list[str] = []
    assert not gate.hold("c1", lambda: sent.append("c1"))
    gate.changed()
    assert gate.hold("c1", lambda: sent.append("c1 first"))
    assert gate.hold("c2", lambda: sent.append("c2"))
    gate.written(0)  # an older write: nothing it waits for
    assert sent == [] and len(gate) == 2
    gate.written(1)
    assert sent == ["c1 first", "c2"] and len(gate) == 0


async def test_one_clients_subacks_keep_their_order() -> None:
    gate = SubackGate(bound=5.0)
    sent: list[str] = []
    gate.changed()
    assert gate.hold("c1", lambda: sent.append("route"))
    # No route of its own, but behind c1's held SUBACK: it waits too; another client does not.
    assert gate.hold("c1", lambda: sent.append("after"))
    gate.changed()
    assert gate.hold("c1", lambda: sent.append("second route"))
    gate.written(1)
    assert sent == ["route", "after"]
    gate.written(2)
    assert sent == ["route", "after", "second route"]
    assert not gate.hold("c1", lambda: None)


async def test_a_subacks_wait_is_bounded_and_an_outage_releases_all() -> None:
    gate = SubackGate(bound=0.05)
    sent: list[str] = []
    gate.changed()
    gate.hold("c1", lambda: sent.append("c1"))
    await until(lambda: sent == ["c1"])  # Redis never answered: it left after the bound
    gate.bound = 5.0
    gate.changed()
    gate.hold("c2", lambda: sent.append("c2"))
    gate.release_all()
    assert sent == ["c1", "c2"]
    assert not gate.hold("c3", lambda: None)  # nothing pending after the outage


async def test_a_clients_suback_waits_for_the_route_write() -> None:
    settings = Settings(node_name="me", sys_interval=0, cluster_redis_url="redis://unused")
    broker = clustered_broker(settings, None, asyncio.get_running_loop())
    node = broker.node
    node.up = True
    node.subacks.bound = 30.0
    try:
        peer = Peer(broker, "c", version=5)
        await peer.connack()
        peer.send(Subscribe(1, [SubscriptionOptions("new/route", 1)]))
        await asyncio.sleep(0.05)
        await settle()
        assert not [p for p in peer.received() if isinstance(p, Suback)]  # held
        node.subacks.written(node.subacks.serial)  # what the route write does when done
        await settle()
        assert [p for p in peer.received() if isinstance(p, Suback)]
        peer.send(Subscribe(2, [SubscriptionOptions("new/route", 0)]))  # no new route
        (ack,) = await peer.expect()
        assert isinstance(ack, Suback)
        node.up = False  # Redis unreachable: a new route's SUBACK leaves at once
        peer.send(Subscribe(3, [SubscriptionOptions("other", 0)]))
        (ack,) = await peer.expect()
        assert isinstance(ack, Suback)
    finally:
        broker.shutdown()


async def test_a_suback_waits_until_every_live_node_applied_its_entry() -> None:
    gate = SubackGate(bound=5.0)
    gate.set_live(["n2", "n3"])
    sent: list[str] = []
    gate.changed()
    assert gate.hold("c1", lambda: sent.append("c1"))
    gate.written(1, entry_id(b"100-0"))  # in Redis, but n2 and n3 may not have read it
    assert sent == []
    gate.applied("n2", entry_id(b"100-0"))
    gate.applied("n3", entry_id(b"99-5"))  # behind: an earlier batch
    assert sent == []
    gate.applied("n3", entry_id(b"100-1"))  # past it
    assert sent == ["c1"]
    # A later write: its SUBACK waits for its own entry, not the earlier one.
    gate.changed()
    assert gate.hold("c2", lambda: sent.append("c2"))
    gate.written(2, entry_id(b"200-0"))
    gate.applied("n2", entry_id(b"200-0"))
    assert sent == ["c1"]
    gate.set_live(["n2"])  # n3 is down: not waited for any longer
    assert sent == ["c1", "c2"]


async def test_a_write_with_no_entry_or_no_other_node_waits_for_nothing_more() -> None:
    gate = SubackGate(bound=5.0)
    sent: list[str] = []
    gate.changed()
    gate.hold("c1", lambda: sent.append("alone"))
    gate.written(1, entry_id(b"5-0"))  # no other live node
    assert sent == ["alone"]
    gate.set_live(["n2"])
    gate.changed()
    gate.hold("c1", lambda: sent.append("nothing written"))
    gate.written(2, None)  # the change was undone before its write: nothing to apply
    assert sent == ["alone", "nothing written"]


async def test_subacks_leave_in_order_and_on_the_bound_counted() -> None:
    gate = SubackGate(bound=5.0)
    gate.set_live(["n2"])
    sent: list[str] = []
    gate.changed()
    gate.hold("c1", lambda: sent.append("first"))
    gate.written(1, entry_id(b"10-0"))
    gate.hold("c1", lambda: sent.append("same client, no route"))  # behind its first
    gate.changed()
    gate.hold("c2", lambda: sent.append("second"))
    gate.written(2, entry_id(b"20-0"))
    gate.applied("n2", entry_id(b"10-0"))
    assert sent == ["first", "same client, no route"]
    gate.bound = 0.05
    gate.changed()
    gate.hold("c3", lambda: sent.append("never applied"))
    gate.applied("n2", entry_id(b"20-0"))
    assert sent == ["first", "same client, no route", "second"]
    gate.written(3, entry_id(b"30-0"))  # n2 never reports it: the bound sends it
    await until(lambda: len(sent) == 4)
    assert gate.metrics["cluster.suback.bound"] == 1 and len(gate) == 0


async def test_a_second_subscriber_waits_for_the_route_the_first_added() -> None:
    gate = SubackGate(bound=5.0)
    gate.set_live(["n2"])
    sent: list[str] = []
    gate.changed("a/#")
    assert gate.hold("c1", lambda: sent.append("c1 adds a/#"))
    gate.written(1, entry_id(b"10-0"))  # in Redis, n2 has not applied it
    gate.joined("a/#")  # c2 subscribes to a/# too: no route change of its own
    assert gate.hold("c2", lambda: sent.append("c2 joins a/#"))
    gate.joined("b")  # no route added lately: nothing to wait for
    assert not gate.hold("c3", lambda: None)
    assert sent == []
    gate.applied("n2", entry_id(b"10-0"))
    assert sent == ["c1 adds a/#", "c2 joins a/#"]
    gate.joined("a/#")  # on every node now: a third subscriber's SUBACK leaves at once
    assert not gate.hold("c4", lambda: None)


async def test_a_joined_route_is_waited_for_only_within_the_bound() -> None:
    gate = SubackGate(bound=0.05)
    gate.set_live(["n2"])
    sent: list[str] = []
    gate.changed("a/#")
    gate.written(1, entry_id(b"10-0"))  # its adder's SUBACK was not held (a revived session)
    gate.joined("a/#")
    assert gate.hold("c2", lambda: sent.append("c2"))  # still waits for n2
    await until(lambda: sent == ["c2"])  # n2 never reports: the bound sends it
    gate.joined("a/#")  # added longer ago than the bound: not waited for
    assert not gate.hold("c3", lambda: None)


async def test_a_second_clients_suback_waits_for_the_first_ones_route() -> None:
    settings = Settings(node_name="me", sys_interval=0, cluster_redis_url="redis://unused")
    broker = clustered_broker(settings, None, asyncio.get_running_loop())
    node = broker.node
    node.up = True
    node.subacks.bound = 30.0
    node.subacks.set_live(["other"])
    try:
        first, second = Peer(broker, "c1", version=5), Peer(broker, "c2", version=5)
        third = Peer(broker, "c3", version=5)
        for peer in (first, second, third):
            await peer.connack()
        plain, group = "shared/route", "$share/g/shared/route"
        first.send(Subscribe(1, [SubscriptionOptions(plain, 1), SubscriptionOptions(group, 1)]))
        await settle()
        node.subacks.written(node.subacks.serial, entry_id(b"50-0"))  # in Redis only
        second.send(Subscribe(1, [SubscriptionOptions(plain, 1)]))  # no route change
        third.send(Subscribe(1, [SubscriptionOptions(group, 1)]))  # the group's second member
        await asyncio.sleep(0.05)
        await settle()
        for peer in (first, second, third):
            assert not [p for p in peer.received() if isinstance(p, Suback)]  # held
        node.subacks.applied("other", entry_id(b"50-0"))  # the other node has the route
        await settle()
        assert [p for p in first.received() if isinstance(p, Suback)]
        assert [p for p in second.received() if isinstance(p, Suback)]
        assert [p for p in third.received() if isinstance(p, Suback)]
    finally:
        broker.shutdown()
