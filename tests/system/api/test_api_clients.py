"""GET/DELETE /clients against the real broker with real paho clients attached."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator

import paho.mqtt.client as mqtt
import pytest

from api_http import Api, wait_for
from clients import V5, V311, TestClient, props

TIME = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d$")

FIELDS = [
    "node",
    "clientid",
    "username",
    "proto_name",
    "proto_ver",
    "ip_address",
    "port",
    "is_bridge",
    "connected",
    "connected_at",
    "created_at",
    "zone",
    "keepalive",
    "clean_start",
    "expiry_interval",
    "subscriptions_cnt",
    "max_subscriptions",
    "inflight",
    "max_inflight",
    "mqueue_len",
    "max_mqueue",
    "mqueue_dropped",
    "awaiting_rel",
    "max_awaiting_rel",
    "recv_oct",
    "recv_cnt",
    "recv_pkt",
    "recv_msg",
    "send_oct",
    "send_cnt",
    "send_pkt",
    "send_msg",
    "mailbox_len",
    "heap_size",
    "reductions",
]


@pytest.fixture
def api(broker) -> Api:
    return Api(broker.api_port)


@pytest.fixture
def connected(broker, uid) -> Iterator[list[TestClient]]:
    """Three clients: v3.1.1 user alice, v5 user bob (persistent), v3.1.1 anonymous."""
    a = TestClient(f"{uid}-a")
    a.c.username_pw_set("alice")
    b = TestClient(f"{uid}-b", protocol=V5)
    b.c.username_pw_set("bob")
    c = TestClient(f"{uid}-c")
    a.connect(broker.port, keepalive=30)
    b.connect(broker.port, clean=False, properties=props(SessionExpiryInterval=300))
    c.connect(broker.port)
    yield [a, b, c]
    for t in (a, b, c):
        t.disconnect()


def _ids(resp) -> set[str]:
    return {item["clientid"] for item in resp.data}


def test_list_shows_live_fields(api: Api, broker, uid: str, connected) -> None:
    a = connected[0]
    a.subscribe(f"{uid}/x", 1)
    a.publish(f"{uid}/x", b"hello", qos=1)
    a.get()
    # the client's PUBACK of that delivery (its 4th packet) may still be on its way
    items = wait_for(
        lambda: [i for i in api.ok("GET", f"/clients?clientid={uid}-a") if i["recv_pkt"] >= 4]
    )
    assert len(items) == 1
    item = items[0]
    for name in FIELDS:
        assert name in item, name
    local_port = a.c.socket().getsockname()[1]
    assert item["clientid"] == f"{uid}-a"
    assert item["username"] == "alice"
    assert item["proto_name"] == "MQTT" and item["proto_ver"] == 4
    assert item["ip_address"] == "127.0.0.1" and item["port"] == local_port
    assert item["connected"] is True and item["is_bridge"] is False
    assert item["keepalive"] == 30 and item["clean_start"] is True
    assert TIME.match(item["connected_at"]) and TIME.match(item["created_at"])
    assert "disconnected_at" not in item
    assert item["subscriptions_cnt"] == 1
    assert item["recv_msg"] == 1 and item["send_msg"] == 1
    assert item["recv_pkt"] >= 4 and item["send_pkt"] >= 4  # CONNECT SUBSCRIBE PUBLISH PUBACK
    assert item["recv_oct"] > 0 and item["send_oct"] > 0 and item["recv_cnt"] > 0
    assert item["node"] == "ferrymq@127.0.0.1"
    assert item["max_mqueue"] == 1000 and item["max_inflight"] == 32
    b = api.ok("GET", f"/clients/{uid}-b")[0]
    assert b["proto_ver"] == 5 and b["clean_start"] is False and b["expiry_interval"] == 300


def test_offline_persistent_session_is_listed(api: Api, broker, uid: str) -> None:
    t = TestClient(f"{uid}-p", protocol=V5)
    t.connect(broker.port, clean=False, keepalive=42, properties=props(SessionExpiryInterval=300))
    local_port = t.c.socket().getsockname()[1]
    t.subscribe(f"{uid}/q", 1)
    online = api.ok("GET", f"/clients/{uid}-p")[0]
    t.disconnect()
    item = wait_for(lambda: [i for i in api.ok("GET", f"/clients/{uid}-p") if not i["connected"]])[
        0
    ]
    assert TIME.match(item["disconnected_at"])
    assert item["subscriptions_cnt"] == 1 and item["clean_start"] is False
    # the last connection's values, as EMQX shows them, and no traffic
    assert (item["ip_address"], item["port"]) == ("127.0.0.1", local_port)
    assert (item["proto_name"], item["proto_ver"], item["keepalive"]) == ("MQTT", 5, 42)
    assert item["connected_at"] == online["connected_at"] and item["recv_oct"] == 0
    assert _ids(api.get(f"/clients?_like_clientid={uid}&ip_address=127.0.0.1&proto_ver=5")) == {
        f"{uid}-p"
    }
    listed = api.get(f"/clients?_like_clientid={uid}&conn_state=disconnected")
    assert _ids(listed) == {f"{uid}-p"}
    assert api.ok("DELETE", f"/clients/{uid}-p") is None
    assert api.ok("GET", f"/clients/{uid}-p") == []


def test_filters(api: Api, uid: str, connected) -> None:
    def ids(query: str) -> set[str]:
        r = api.get(f"/clients?_like_clientid={uid}&{query}")
        assert r.status == 200 and r.code == 0, r
        assert r.meta["count"] == len(r.data)
        return _ids(r)

    a, b, c = (f"{uid}-{x}" for x in "abc")
    assert ids("") == {a, b, c}
    assert ids(f"clientid={b}") == {b}
    assert ids("username=alice") == {a}
    assert ids("_like_username=li") == {a}
    assert ids("_like_username=o") == {b}
    assert ids("ip_address=127.0.0.1") == {a, b, c}
    assert ids("ip_address=10.0.0.1") == set()
    assert ids("conn_state=connected") == {a, b, c}
    assert ids("conn_state=disconnected") == set()
    assert ids("clean_start=false") == {b}
    assert ids("clean_start=true") == {a, c}
    assert ids("proto_name=MQTT") == {a, b, c}
    assert ids("proto_ver=5") == {b}
    assert ids("proto_ver=4") == {a, c}
    now = int(time.time())
    assert ids(f"_gte_created_at={now - 60}&_lte_created_at={now + 60}") == {a, b, c}
    assert ids(f"_gte_created_at={now + 60}") == set()
    assert ids(f"_lte_connected_at={now - 60}") == set()
    assert ids(f"_gte_connected_at={now - 60}&proto_ver=4&username=alice") == {a}
    assert _ids(api.get(f"/clients?_like_clientid={uid}-c")) == {c}
    # EMQX 4.4's other filters: repeated clientid / username, zone, queue figures
    assert ids(f"clientid={a}&clientid={c}&clientid={uid}-none") == {a, c}
    assert ids("username=alice&username=bob") == {a, b}
    assert ids("zone=default") == {a, b, c}
    assert ids("zone=external") == set()
    assert ids("_lte_mqueue_len=0&_gte_mqueue_len=0") == {a, b, c}
    assert ids("_gte_mqueue_len=1") == set()
    assert ids("_gte_mqueue_dropped=1000") == set()  # "kick every client with ..." kicks none
    assert ids("_lte_mqueue_dropped=0") == {a, b, c}


def test_queue_filters_see_an_offline_session_fill_up(api: Api, broker, uid: str) -> None:
    t = TestClient(f"{uid}-q", protocol=V5)
    t.connect(broker.port, clean=False, properties=props(SessionExpiryInterval=300))
    t.subscribe(f"{uid}/q", 1)
    t.disconnect()
    for i in range(3):
        api.ok("POST", "/mqtt/publish", {"topic": f"{uid}/q", "payload": str(i), "qos": 1})
    r = api.get(f"/clients?_like_clientid={uid}&_gte_mqueue_len=3&_lte_mqueue_len=3")
    assert _ids(r) == {f"{uid}-q"} and r.data[0]["mqueue_len"] == 3
    assert _ids(api.get(f"/clients?_like_clientid={uid}&_gte_mqueue_len=4")) == set()
    api.ok("DELETE", f"/clients/{uid}-q")


def test_by_username_and_per_node_forms(api: Api, uid: str, connected) -> None:
    a, b = f"{uid}-a", f"{uid}-b"
    assert [
        i["clientid"] for i in api.ok("GET", "/clients/username/alice") if uid in i["clientid"]
    ] == [a]
    assert api.ok("GET", f"/clients/username/{uid}-nobody") == []
    node = "ferrymq@127.0.0.1"
    r = api.get(f"/nodes/{node}/clients?_like_clientid={uid}&proto_ver=5")
    assert r.code == 0 and _ids(r) == {b} and r.meta["count"] == 1
    assert api.ok("GET", f"/nodes/{node}/clients/{a}")[0]["clientid"] == a
    assert api.get(f"/nodes/{node}/clients/").code == 0  # trailing slash too
    assert [
        i["clientid"]
        for i in api.ok("GET", f"/nodes/{node}/clients/username/bob")
        if uid in i["clientid"]
    ] == [b]
    connected[0].subscribe(f"{uid}/n", 1)
    subs = api.ok("GET", f"/nodes/{node}/subscriptions?clientid={a}")
    assert subs == [{"node": node, "clientid": a, "topic": f"{uid}/n", "qos": 1}]
    assert api.ok("GET", f"/nodes/{node}/subscriptions/{a}") == subs
    metrics = api.ok("GET", f"/nodes/{node}/metrics")
    assert metrics["client.connected"] >= 3 and "delivery.dropped.acl" in metrics
    listeners = api.ok("GET", f"/nodes/{node}/listeners")
    assert listeners and listeners[0]["current_conns"] >= 3
    for path in ("clients", "metrics", "listeners", "subscriptions"):
        r = api.get(f"/nodes/other@host/{path}")
        assert (r.status, r.code) == (404, 102), (path, r)


@pytest.mark.parametrize(
    "query",
    [
        "conn_state=sleeping",
        "clean_start=maybe",
        "proto_ver=five",
        "_gte_created_at=yesterday",
        "_lte_connected_at=nan",
        "_page=0",
        "_page=-1",
        "_limit=0",
        "_limit=ten",
        "_page=1.5",
        "ip_address=not-an-ip",
        "_gte_mqueue_len=many",
        "_lte_mqueue_dropped=%201",
    ],
)
def test_bad_filter_values(api: Api, query: str) -> None:
    r = api.get(f"/clients?{query}")
    assert r.status == 400 and r.code == 108, r
    assert r.json["message"]


def test_paging(api: Api, uid: str, connected) -> None:
    pages = []
    for page in (1, 2, 3):
        r = api.get(f"/clients?_like_clientid={uid}&_limit=2&_page={page}")
        assert r.status == 200
        assert r.meta["page"] == page and r.meta["limit"] == 2 and r.meta["count"] == 3
        pages.append(r)
    assert [len(p.data) for p in pages] == [2, 1, 0]
    assert [p.meta["hasnext"] for p in pages] == [True, False, False]
    seen = [i["clientid"] for p in pages for i in p.data]
    assert sorted(seen) == sorted(f"{uid}-{x}" for x in "abc")
    r = api.get(f"/clients?_like_clientid={uid}")
    assert r.meta == {"page": 1, "limit": 10000, "count": 3, "hasnext": False}


def test_lookup_unknown_is_empty_list(api: Api, uid: str) -> None:
    r = api.get(f"/clients/{uid}-nobody")
    assert r.status == 200 and r.json == {"code": 0, "data": []}


def test_lookup_url_encoded_clientid(api: Api, broker, uid: str) -> None:
    t = TestClient(f"{uid}/slash id")
    t.connect(broker.port)
    try:
        items = api.ok("GET", f"/clients/{uid}%2Fslash%20id")
        assert [i["clientid"] for i in items] == [f"{uid}/slash id"]
    finally:
        t.disconnect()


def test_kick_disconnects_and_publishes_will(api: Api, broker, uid: str) -> None:
    watcher = TestClient(f"{uid}-w")
    watcher.connect(broker.port)
    watcher.subscribe(f"{uid}/will", 1)
    victim = TestClient(f"{uid}-v")
    victim.c.will_set(f"{uid}/will", b"gone", qos=1)
    victim.connect(broker.port, clean=False)
    before = api.metrics()
    assert api.ok("DELETE", f"/clients/{uid}-v") is None
    assert victim.disconnected.wait(5)
    msg = watcher.get()
    assert (msg.topic, msg.payload) == (f"{uid}/will", b"gone")
    assert api.ok("GET", f"/clients/{uid}-v") == []  # session discarded too
    after = api.metrics()
    ended = ("session.discarded", "session.terminated")
    assert sum(after[k] for k in ended) == sum(before[k] for k in ended) + 1
    assert after["client.disconnected"] == before["client.disconnected"] + 1
    victim.c.disconnect()  # no reconnect attempts; the loop thread ends by itself
    watcher.disconnect()


def test_kick_v5_client_gets_administrative_action(api: Api, broker, uid: str) -> None:
    victim = TestClient(f"{uid}-v5", protocol=V5)
    victim.connect(broker.port)
    api.ok("DELETE", f"/clients/{uid}-v5")
    reason = victim.disconnects.get(timeout=5)
    assert reason == mqtt.ReasonCode(mqtt.PacketTypes.DISCONNECT, identifier=0x98)
    victim.c.disconnect()  # no reconnect attempts; the loop thread ends by itself


def test_kick_unknown_client(api: Api, uid: str) -> None:
    r = api.delete(f"/clients/{uid}-ghost")
    assert r.status == 404 and r.code == 112, r


def test_v311_client_listed_with_proto(api: Api, broker, uid: str) -> None:
    t = TestClient(f"{uid}-31", protocol=V311)
    t.connect(broker.port)
    try:
        assert api.ok("GET", f"/clients?proto_ver=4&clientid={uid}-31")[0]["proto_ver"] == 4
    finally:
        t.disconnect()


def test_offline_values_and_admin_subscriptions_survive_a_restart(make_broker, uid: str) -> None:
    b = make_broker()
    api = Api(b.api_port)
    cid = f"{uid}-r"
    api.ok(
        "POST",
        "/acl",
        {"clientid": cid, "topic": f"{uid}/secret/#", "action": "sub", "access": "deny"},
    )
    t = TestClient(cid, protocol=V5)
    t.connect(b.port, clean=False, keepalive=42, properties=props(SessionExpiryInterval=300))
    port = t.c.socket().getsockname()[1]
    api.ok("POST", "/mqtt/subscribe", {"clientid": cid, "topic": f"{uid}/secret/x", "qos": 1})
    t.disconnect()
    b.restart()
    item = api.ok("GET", f"/clients/{cid}")[0]
    assert item["connected"] is False
    assert (item["ip_address"], item["port"], item["proto_ver"], item["keepalive"]) == (
        "127.0.0.1",
        port,
        5,
        42,
    )
    # the administrator's subscription is still exempt from the client's ACL
    api.ok("POST", "/mqtt/publish", {"topic": f"{uid}/secret/x", "payload": "kept", "qos": 1})
    again = TestClient(cid, protocol=V5)
    again.connect(b.port, clean=False, properties=props(SessionExpiryInterval=300))
    assert again.get().payload == b"kept"
    again.disconnect()
