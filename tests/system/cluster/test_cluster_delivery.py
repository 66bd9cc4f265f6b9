"""Three real nodes on one real Redis: what a client on one node gets of what is published
on another (docs/cluster.md "What works now")."""

from __future__ import annotations

import re
import time

import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from api_http import Api
from redis_server import connect, node_name, received, subscribed, wait_routed, wait_until

pytestmark = pytest.mark.timeout(60)


def test_qos_0_1_2_with_wildcards_cross_nodes_one_copy_each(cluster3, clients, uid) -> None:
    _redis, (n1, n2, n3) = cluster3
    # On node 2 one client with overlapping filters (one copy, highest QoS); on node 3 another.
    s2 = subscribed(clients, n2.port, f"{uid}-s2", [(f"{uid}/+/x", 2), (f"{uid}/#", 1)])
    s3 = subscribed(clients, n3.port, f"{uid}-s3", f"{uid}/a/+", 2)
    pub = connect(clients, n1.port, f"{uid}-pub")
    wait_routed(pub, s2, f"{uid}/a/x")
    wait_routed(pub, s3, f"{uid}/a/x")
    expiry = Properties(PacketTypes.PUBLISH)
    expiry.MessageExpiryInterval = 60
    for qos in (0, 1, 2):
        pub.publish(f"{uid}/a/x", f"m{qos}".encode(), qos=qos, properties=expiry)
    got2 = received(s2, 1.0)
    got3 = received(s3, 0.3)
    assert sorted((m.payload, m.qos) for m in got2) == [(b"m0", 0), (b"m1", 1), (b"m2", 2)]
    assert sorted((m.payload, m.qos) for m in got3) == [(b"m0", 0), (b"m1", 1), (b"m2", 2)]
    for m in got2 + got3:  # the expiry travelled with the message, counting down
        assert 55 <= m.properties.MessageExpiryInterval <= 60
    # A topic only node 2 subscribes to does not reach node 3.
    pub.publish(f"{uid}/b/y", b"only-2", qos=1)
    assert [m.payload for m in received(s2, 1.0)] == [b"only-2"]
    assert received(s3, 0.3) == []


def test_puback_counts_remote_subscribers(cluster3, clients, uid) -> None:
    _redis, (n1, n2, _n3) = cluster3
    s2 = subscribed(clients, n2.port, f"{uid}-s2", f"{uid}/t", 1)
    pub = connect(clients, n1.port, f"{uid}-pub")
    wait_routed(pub, s2, f"{uid}/t")
    info = pub.publish(f"{uid}/t", b"x", qos=1)
    assert info.rc == 0 and info.is_published()
    api = Api(n1.api_port)
    metrics = api.get("/metrics").data[0]["metrics"]
    assert metrics["cluster.forwarded"] >= 1


def test_no_local_holds_across_nodes(cluster3, clients, uid) -> None:
    _redis, (n1, n2, _n3) = cluster3
    # The same client id on two nodes (no cluster-wide takeover yet): its own messages,
    # published on node 1, do not come back through its no-local subscription on node 2.
    mine = subscribed(
        clients, n2.port, f"{uid}-me", f"{uid}/nl", options=SubscribeOptions(qos=1, noLocal=True)
    )
    other = subscribed(clients, n2.port, f"{uid}-other", f"{uid}/nl", 1)
    helper = connect(clients, n1.port, f"{uid}-helper")
    wait_routed(helper, other, f"{uid}/nl")
    received(mine, 0.2)  # the helper's probes reach it: they are not its own
    me_on_1 = connect(clients, n1.port, f"{uid}-me")
    me_on_1.publish(f"{uid}/nl", b"own", qos=1)
    assert [m.payload for m in received(other, 1.0)] == [b"own"]
    assert received(mine, 0.3) == []


def test_retained_messages_are_cluster_wide(cluster3, clients, uid) -> None:
    _redis, (n1, n2, n3) = cluster3
    pub = connect(clients, n1.port, f"{uid}-pub")
    pub.publish(f"{uid}/r", b"kept", qos=1, retain=True)
    started = time.monotonic()

    def seen_on(port: int, client_id: str) -> list:  # type: ignore[type-arg]
        c = connect(clients, port, client_id)
        c.subscribe(f"{uid}/r", 1)
        got = received(c, 0.2)
        c.disconnect()
        clients.remove(c)
        return got

    assert wait_until(lambda: [m.payload for m in seen_on(n3.port, f"{uid}-r3")] == [b"kept"])
    assert time.monotonic() - started < 1.5
    assert [(m.payload, m.retain) for m in seen_on(n2.port, f"{uid}-r2")] == [(b"kept", True)]
    # Cleared on node 2: gone on node 1 and 3 too.
    clearer = connect(clients, n2.port, f"{uid}-clear")
    clearer.publish(f"{uid}/r", b"", qos=1, retain=True)
    assert wait_until(lambda: seen_on(n1.port, f"{uid}-c1") == [], timeout=3)
    assert seen_on(n3.port, f"{uid}-c3") == []


def test_retain_as_published_across_nodes(cluster3, clients, uid) -> None:
    _redis, (n1, n2, _n3) = cluster3
    rap = subscribed(
        clients,
        n2.port,
        f"{uid}-rap",
        f"{uid}/p",
        options=SubscribeOptions(qos=1, retainAsPublished=True),
    )
    plain = subscribed(clients, n2.port, f"{uid}-plain", f"{uid}/p", 1)
    pub = connect(clients, n1.port, f"{uid}-pub")
    wait_routed(pub, plain, f"{uid}/p")
    received(rap, 0.2)
    pub.publish(f"{uid}/p", b"live", qos=1, retain=True)
    assert [(m.payload, m.retain) for m in received(rap, 1.0)] == [(b"live", True)]
    assert [(m.payload, m.retain) for m in received(plain, 0.3)] == [(b"live", False)]
    pub.publish(f"{uid}/p", b"", qos=1, retain=True)


def test_route_leaves_with_the_last_local_subscriber(cluster3, clients, uid) -> None:
    redis, (n1, n2, _n3) = cluster3
    r = redis.client()
    key = f"ferrymq:route:{uid}/gone/#"
    a = subscribed(clients, n2.port, f"{uid}-a", f"{uid}/gone/#", 1)
    b = subscribed(clients, n2.port, f"{uid}-b", f"{uid}/gone/#", 0)
    assert wait_until(lambda: r.hkeys(key) == [node_name(n2)], timeout=2)
    a.unsubscribe(f"{uid}/gone/#")
    time.sleep(0.2)
    assert r.hkeys(key) == [node_name(n2)]  # b still subscribes
    b.disconnect()
    clients.remove(b)
    assert wait_until(lambda: r.hkeys(key) == [], timeout=2)
    assert f"{uid}/gone/#" not in r.smembers(f"ferrymq:node-routes:{node_name(n2)}")
    # Node 1 no longer forwards there: published and counted as having no subscriber.
    pub = connect(clients, n1.port, f"{uid}-pub")
    before = Api(n1.api_port).get("/metrics").data[0]["metrics"]["cluster.forwarded"]
    time.sleep(0.2)
    pub.publish(f"{uid}/gone/x", b"x", qos=1)
    after = Api(n1.api_port).get("/metrics").data[0]["metrics"]["cluster.forwarded"]
    assert after == before


def test_nodes_and_brokers_list_every_node(cluster3) -> None:
    _redis, nodes = cluster3
    names = sorted(node_name(n) for n in nodes)
    for node in nodes:
        api = Api(node.api_port)
        assert wait_until(lambda api=api: len(api.get("/nodes").data) == 3, timeout=3)
        listed = api.get("/nodes").data
        assert sorted(n["node"] for n in listed) == names
        assert {n["node_status"] for n in listed} == {"Running"}
        assert listed[0]["node"] == node_name(node)  # this node first
        brokers = api.get("/brokers").data
        assert sorted(b["node"] for b in brokers) == names
        assert {b["node_status"] for b in brokers} == {"Running"}
        other = names[0] if names[0] != node_name(node) else names[1]
        one = api.get(f"/nodes/{other}")
        assert one.status == 200 and one.data["node"] == other
        assert api.get(f"/brokers/{other}").data["node_status"] == "Running"
        assert api.get("/nodes/nope@nowhere").status == 404
        scrape = api.get("/emqx_prometheus?type=prometheus").raw.decode()
        assert re.search(r"^emqx_cluster_nodes_running 3(\.0)?$", scrape, re.MULTILINE)
