"""/acl over HTTP, and the PUBLISH / SUBSCRIBE decisions the stored rules make at once.

These tests share the broker with others, so every rule is about topics under
the test's own ``uid`` and is deleted afterwards.
"""

from __future__ import annotations

import queue
import time
from collections.abc import Iterator
from urllib.parse import quote

import pytest

from api_http import Api
from clients import V5, TestClient


@pytest.fixture
def api(broker) -> Api:
    return Api(broker.api_port)


@pytest.fixture
def rules(api: Api) -> Iterator[list[dict]]:
    """Rules added through ``rules.append(rule)`` after posting; all deleted at the end."""
    added: list[dict] = []
    yield added
    for rule in added:
        topic = quote(rule["topic"], safe="")
        if "clientid" in rule:
            path = f"/acl/clientid/{quote(rule['clientid'], safe='')}/topic/{topic}"
        elif "username" in rule:
            path = f"/acl/username/{quote(rule['username'], safe='')}/topic/{topic}"
        else:
            path = f"/acl/$all/topic/{topic}"
        api.delete(path)


def add(api: Api, rules: list[dict], rule: dict) -> dict:
    data = api.ok("POST", "/acl", rule)
    rules.append(rule)
    return data


def _strip(items: list[dict]) -> list[dict]:
    """Listed rules without created_at (checked on its own)."""
    return [{k: v for k, v in item.items() if k != "created_at"} for item in items]


def test_create_list_delete(api: Api, uid: str, rules) -> None:
    cid, user = f"{uid}-c", f"{uid}-u"
    before_ms = int(time.time() * 1000)
    echo = add(
        api, rules, {"clientid": cid, "topic": f"{uid}/a/#", "action": "pub", "access": "allow"}
    )
    assert echo.pop("created_at") >= before_ms - 1000
    assert echo == {
        "clientid": cid,
        "topic": f"{uid}/a/#",
        "action": "pub",
        "access": "allow",
        "result": "ok",
    }
    echo = add(
        api, rules, {"username": user, "topic": f"{uid}/%u", "action": "subpub", "access": "deny"}
    )
    assert echo["action"] == "pubsub" and echo["username"] == user
    echo = add(api, rules, {"topic": f"{uid}/all", "action": "sub", "access": "deny"})
    assert echo["all"] == "$all" and echo["result"] == "ok"
    listed = api.ok("GET", f"/acl/clientid?clientid={cid}")
    assert _strip(listed) == [
        {"clientid": cid, "topic": f"{uid}/a/#", "action": "pub", "access": "allow"}
    ]
    assert before_ms - 1000 <= listed[0]["created_at"] <= int(time.time() * 1000) + 1000
    # a pubsub rule is stored as two rules, as EMQX 4.4 does
    assert _strip(api.ok("GET", f"/acl/username/{user}")) == [
        {"username": user, "topic": f"{uid}/%u", "action": "sub", "access": "deny"},
        {"username": user, "topic": f"{uid}/%u", "action": "pub", "access": "deny"},
    ]
    assert {"all": "$all", "topic": f"{uid}/all", "action": "sub", "access": "deny"} in _strip(
        api.ok("GET", "/acl/$all")
    )
    assert api.ok("GET", f"/acl/clientid/{uid}-nobody") == []
    # same subject, topic and action: replaced (and newest); another action: a new rule
    add(api, rules, {"clientid": cid, "topic": f"{uid}/a/#", "action": "sub", "access": "deny"})
    add(api, rules, {"clientid": cid, "topic": f"{uid}/a/#", "action": "pub", "access": "deny"})
    assert _strip(api.ok("GET", f"/acl/clientid/{cid}")) == [
        {"clientid": cid, "topic": f"{uid}/a/#", "action": "pub", "access": "deny"},
        {"clientid": cid, "topic": f"{uid}/a/#", "action": "sub", "access": "deny"},
    ]
    # delete with URL-encoded topics: every action of that topic
    assert api.delete(f"/acl/clientid/{cid}/topic/{uid}%2Fa%2F%23").json == {"code": 0}
    assert api.ok("GET", f"/acl/clientid/{cid}") == []
    r = api.delete(f"/acl/clientid/{cid}/topic/{uid}%2Fa%2F%23")
    assert r.status == 404 and r.code != 0
    assert api.delete(f"/acl/username/{user}/topic/{uid}%2F%25u").json == {"code": 0}
    assert api.delete(f"/acl/all/$all/topic/{uid}%2Fall").json == {"code": 0}
    r = api.delete(f"/acl/$all/topic/{uid}%2Fall")
    assert r.status == 404


def test_list_filters(api: Api, uid: str, rules) -> None:
    for i, (action, access) in enumerate([("pub", "allow"), ("sub", "deny"), ("pub", "deny")]):
        add(
            api,
            rules,
            {"clientid": f"{uid}-f{i}", "topic": f"{uid}/t", "action": action, "access": access},
        )
    add(
        api,
        rules,
        {"username": f"{uid}-fu", "topic": f"{uid}/t", "action": "sub", "access": "deny"},
    )
    add(api, rules, {"topic": f"{uid}/t", "action": "pub", "access": "deny"})

    def ids(path: str) -> list[str]:
        return [r.get("clientid") or r.get("username") or r["all"] for r in api.ok("GET", path)]

    assert ids(f"/acl/clientid?_like_clientid={uid}-f") == [f"{uid}-f2", f"{uid}-f1", f"{uid}-f0"]
    assert ids(f"/acl/clientid?_like_clientid={uid}&action=pub") == [f"{uid}-f2", f"{uid}-f0"]
    assert ids(f"/acl/clientid?_like_clientid={uid}&access=deny&action=sub") == [f"{uid}-f1"]
    assert ids(f"/acl/clientid?clientid={uid}-f0&topic={uid}/t") == [f"{uid}-f0"]
    assert ids(f"/acl/clientid?clientid={uid}-f0&topic={uid}/other") == []
    assert ids(f"/acl/username?_like_username={uid}&access=deny") == [f"{uid}-fu"]
    assert ids(f"/acl/$all?topic={uid}/t&action=pub") == ["$all"]
    for bad in ("action=pubsub", "action=read", "access=maybe"):
        r = api.get(f"/acl/clientid?{bad}")
        assert (r.status, r.code) == (400, 108), (bad, r)


def test_list_paging(api: Api, uid: str, rules) -> None:
    for i in range(3):
        add(
            api,
            rules,
            {"clientid": f"{uid}-pg", "topic": f"{uid}/{i}", "action": "pub", "access": "allow"},
        )
    r = api.get(f"/acl/clientid/{uid}-pg?_limit=2&_page=2")
    assert r.meta == {"page": 2, "limit": 2, "count": 3, "hasnext": False}
    assert len(r.data) == 1
    r = api.get("/acl/clientid?_limit=1")
    assert r.meta["count"] >= 3 and len(r.data) == 1 and r.meta["hasnext"]


def test_batch(api: Api, uid: str, rules) -> None:
    batch = [
        {"clientid": f"{uid}-b", "topic": f"{uid}/1", "action": "pub", "access": "allow"},
        {"clientid": f"{uid}-b", "topic": f"{uid}/2", "action": "jump", "access": "allow"},
        {"topic": f"{uid}/#/x", "action": "pub", "access": "deny"},
        {"username": f"{uid}-bu", "topic": f"{uid}/3", "action": "sub", "access": "deny"},
    ]
    data = api.ok("POST", "/acl", batch)
    rules.extend([batch[0], batch[3]])
    assert data[0]["result"] == "ok" and data[3]["result"] == "ok"
    assert "action" in data[1]["result"] and data[2]["result"] != "ok"
    assert len(api.ok("GET", f"/acl/clientid/{uid}-b")) == 1


@pytest.mark.parametrize(
    ("rule", "code"),
    [
        ({"clientid": "c", "topic": "a", "action": "pub"}, 107),
        ({"clientid": "c", "topic": "a", "access": "allow"}, 107),
        ({"clientid": "c", "action": "pub", "access": "allow"}, 107),
        ({"clientid": "c", "topic": "a", "action": "publish", "access": "allow"}, 108),
        ({"clientid": "c", "topic": "a", "action": "pub", "access": "maybe"}, 108),
        ({"clientid": "", "topic": "a", "action": "pub", "access": "allow"}, 108),
        ({"clientid": 7, "topic": "a", "action": "pub", "access": "allow"}, 108),
        ({"clientid": "x" * 65536, "topic": "a", "action": "pub", "access": "allow"}, 108),
        ({"username": "a\u0000b", "topic": "a", "action": "pub", "access": "allow"}, 108),
        ({"clientid": "c", "topic": "a/#/b", "action": "pub", "access": "allow"}, 115),
        ({"clientid": "c", "topic": "", "action": "pub", "access": "allow"}, 115),
        ({"clientid": "c", "topic": 1, "action": "pub", "access": "allow"}, 108),
    ],
)
def test_create_errors(api: Api, rule: dict, code: int) -> None:
    r = api.post("/acl", rule)
    assert (r.status, r.code) == (400, code), r
    assert api.ok("GET", "/acl/clientid/c") == []


class Publisher:
    """A v5 client whose QoS 1 PUBACK reason codes are collected."""

    def __init__(self, port: int, client_id: str, username: str | None = None) -> None:
        self.t = TestClient(client_id, protocol=V5)
        if username:
            self.t.c.username_pw_set(username)
        self.acks: queue.Queue[int] = queue.Queue()
        self.t.c.on_publish = lambda c, u, mid, rc, p: self.acks.put(int(rc.value))
        self.t.connect(port)

    def publish(self, topic: str, qos: int = 1) -> int:
        """The PUBACK reason code (QoS 1); paho reports QoS 0 sends as 0."""
        self.t.publish(topic, b"x", qos=qos)
        return self.acks.get(timeout=5)


def test_deny_all_then_allow_own_devices(api: Api, broker, uid: str, rules) -> None:
    """EMQX's common rule set: deny '#' for a client, then allow 'devices/%c/#'."""
    dev = f"{uid}-dev"
    add(api, rules, {"clientid": dev, "topic": "#", "action": "pubsub", "access": "deny"})
    add(
        api,
        rules,
        {"clientid": dev, "topic": f"{uid}/devices/%c/#", "action": "pubsub", "access": "allow"},
    )
    watcher = TestClient(f"{uid}-watch")
    watcher.connect(broker.port)
    watcher.subscribe(f"{uid}/#", 0)
    pub = Publisher(broker.port, dev)
    assert pub.publish(f"{uid}/devices/{dev}/temp") == 0
    assert watcher.get().topic == f"{uid}/devices/{dev}/temp"
    assert pub.publish(f"{uid}/devices/other/temp") == 0x87
    assert pub.publish(f"{uid}/elsewhere") == 0x87
    watcher.expect_nothing(0.3)
    codes = pub.t.subscribe([(f"{uid}/devices/{dev}/#", 0), (f"{uid}/devices/+/x", 0)])
    assert [int(c.value) for c in codes] == [0, 0x87]
    pub.t.disconnect()
    watcher.disconnect()


def test_groups_and_order_over_mqtt(api: Api, broker, uid: str, rules) -> None:
    watcher = TestClient(f"{uid}-watch")
    watcher.connect(broker.port)
    watcher.subscribe(f"{uid}/#", 0)
    pub = Publisher(broker.port, f"{uid}-pub", username=f"{uid}-name")
    assert pub.publish(f"{uid}/free") == 0
    assert watcher.get().topic == f"{uid}/free"
    before = api.metrics()
    add(api, rules, {"topic": f"{uid}/secret/#", "action": "pub", "access": "deny"})
    assert pub.publish(f"{uid}/secret/1") == 0x87
    pub.publish(f"{uid}/secret/2", qos=0)
    watcher.expect_nothing(0.3)
    after = api.metrics()
    assert after["packets.publish.auth_error"] == before["packets.publish.auth_error"] + 2
    assert after["client.acl.deny"] >= before["client.acl.deny"] + 2
    # the username's rules come before the all-clients rules
    add(
        api,
        rules,
        {"username": f"{uid}-name", "topic": f"{uid}/secret/+", "action": "pub", "access": "allow"},
    )
    assert pub.publish(f"{uid}/secret/3") == 0
    assert watcher.get().topic == f"{uid}/secret/3"
    # the client id's before the username's; within them the newest matching rule decides
    add(
        api,
        rules,
        {"clientid": f"{uid}-pub", "topic": f"{uid}/secret/4", "action": "pub", "access": "allow"},
    )
    add(
        api,
        rules,
        {"clientid": f"{uid}-pub", "topic": f"{uid}/secret/#", "action": "pub", "access": "deny"},
    )
    assert pub.publish(f"{uid}/secret/4") == 0x87
    add(
        api,
        rules,
        {"clientid": f"{uid}-pub", "topic": f"{uid}/secret/4", "action": "pub", "access": "allow"},
    )
    assert pub.publish(f"{uid}/secret/4") == 0  # re-added: now the newest
    assert watcher.get().topic == f"{uid}/secret/4"
    pub.t.disconnect()
    watcher.disconnect()


def test_subscribe_matches_the_filter_read_as_a_topic(api: Api, broker, uid: str, rules) -> None:
    add(api, rules, {"topic": f"{uid}/nosubscribe", "action": "sub", "access": "deny"})
    add(api, rules, {"topic": f"{uid}/a/+", "action": "sub", "access": "deny"})
    before = api.metrics()
    v3 = TestClient(f"{uid}-s3")
    v3.connect(broker.port)
    codes = v3.subscribe([(f"{uid}/nosubscribe", 0), ("#", 0), (f"{uid}/+", 0), (f"{uid}/a/+", 0)])
    assert [int(c.value) for c in codes] == [0x80, 0, 0, 0x80]
    v5 = TestClient(f"{uid}-s5", protocol=V5)
    v5.connect(broker.port)
    codes = v5.subscribe([(f"{uid}/a/b", 0), (f"{uid}/a/#", 0), (f"$share/g/{uid}/a/c", 0)])
    assert [int(c.value) for c in codes] == [0x87, 0x87, 0x87]  # a rule '+' matches '#' too
    after = api.metrics()
    assert after["packets.subscribe.auth_error"] == before["packets.subscribe.auth_error"] + 5
    for t in (v3, v5):
        t.disconnect()


def test_hash_subscriber_beside_a_deny_rule_gets_all_but_the_denied(
    api: Api, broker, uid: str, rules
) -> None:
    add(api, rules, {"topic": f"{uid}/hidden", "action": "sub", "access": "deny"})
    retained = (f"{uid}/hidden", f"{uid}/shown")
    for t in retained:
        api.ok("POST", "/mqtt/publish", {"topic": t, "payload": "r", "retain": True})
    sub = TestClient(f"{uid}-all")
    pub = Publisher(broker.port, f"{uid}-p")
    try:
        sub.connect(broker.port)
        assert [int(c.value) for c in sub.subscribe("#", 0)] == [0]
        assert read_until(sub, f"{uid}/shown") == []  # the retained hidden one is held back
        before = api.metrics()
        for topic in (f"{uid}/hidden", f"{uid}/x", f"{uid}/hidden", f"{uid}/y"):
            pub.publish(topic, qos=1)
        assert read_until(sub, f"{uid}/y") == [f"{uid}/x"]
        after = api.metrics()
        assert after["delivery.dropped.acl"] >= before["delivery.dropped.acl"] + 2
        assert after["delivery.dropped"] >= before["delivery.dropped"] + 2
        # a rule change applies to deliveries at once, both ways
        api.ok("DELETE", f"/acl/$all/topic/{uid}%2Fhidden")
        rules.clear()
        pub.publish(f"{uid}/hidden", qos=1)
        assert read_until(sub, f"{uid}/hidden") == []
        add(api, rules, {"topic": f"{uid}/+", "action": "sub", "access": "deny"})
        pub.publish(f"{uid}/x", qos=1)
        pub.publish(f"{uid}/deep/ok", qos=1)
        assert read_until(sub, f"{uid}/deep/ok") == []
    finally:
        for t in retained:
            api.ok("POST", "/mqtt/publish", {"topic": t, "payload": "", "retain": True})
        pub.t.disconnect()
        sub.disconnect()


def test_overlapping_wildcards_beside_a_deny_rule_deliver_once_and_never_the_denied(
    api: Api, broker, uid: str, rules
) -> None:
    """One copy per client through overlapping subscriptions, and the deny rule holds for it."""
    add(api, rules, {"topic": f"{uid}/hidden", "action": "sub", "access": "deny"})
    sub = TestClient(f"{uid}-ov")
    pub = Publisher(broker.port, f"{uid}-p")
    try:
        sub.connect(broker.port)
        assert [int(c.value) for c in sub.subscribe([("#", 0), (f"{uid}/+", 1)])] == [0, 1]
        for topic in (f"{uid}/hidden", f"{uid}/x", f"{uid}/y"):
            pub.publish(topic, qos=1)
        assert read_until(sub, f"{uid}/y") == [f"{uid}/x"]  # once each, hidden held back
    finally:
        pub.t.disconnect()
        sub.disconnect()


def read_until(t: TestClient, topic: str) -> list[str]:
    """Read until ``topic`` arrives; return the topics under the same uid seen before it."""
    prefix = topic.split("/")[0] + "/"
    seen = []
    while True:
        m = t.get(timeout=5)
        if m.topic == topic:
            return seen
        if m.topic.startswith(prefix):
            seen.append(m.topic)


def test_placeholders(api: Api, broker, uid: str, rules) -> None:
    add(api, rules, {"topic": f"{uid}/c/%c/#", "action": "pubsub", "access": "deny"})
    add(api, rules, {"topic": f"{uid}/u/%u/#", "action": "pubsub", "access": "deny"})
    me = f"{uid}-me"
    t = TestClient(me, protocol=V5)
    t.c.username_pw_set("someone")
    t.connect(broker.port)
    codes = t.subscribe(
        [
            (f"{uid}/c/{me}/x", 0),
            (f"{uid}/c/{uid}-you/x", 0),
            (f"{uid}/u/someone/+", 0),
            (f"{uid}/u/other/x", 0),
        ]
    )
    assert [int(c.value) for c in codes] == [0x87, 0, 0x87, 0]
    t.disconnect()
    pub = Publisher(broker.port, me, username="someone")
    assert pub.publish(f"{uid}/c/{me}/t") == 0x87
    assert pub.publish(f"{uid}/c/{uid}-you/t") == 0x10  # allowed; nobody subscribed
    assert pub.publish(f"{uid}/u/someone/t") == 0x87
    assert pub.publish(f"{uid}/u/other/t") == 0x10
    pub.t.disconnect()
    anonymous = Publisher(broker.port, f"{uid}-anon")
    assert anonymous.publish(f"{uid}/u/someone/t") == 0x10  # %u never matches without a username
    anonymous.t.disconnect()


def test_rule_change_drops_cached_decision(api: Api, broker, uid: str, rules) -> None:
    pub = Publisher(broker.port, f"{uid}-cache")
    assert pub.publish(f"{uid}/k") == 0x10  # decided (and cached): allowed
    add(
        api,
        rules,
        {"clientid": f"{uid}-cache", "topic": f"{uid}/k", "action": "pub", "access": "deny"},
    )
    assert pub.publish(f"{uid}/k") == 0x87
    api.ok(
        "POST",
        "/acl",
        {"clientid": f"{uid}-cache", "topic": f"{uid}/k", "action": "pub", "access": "allow"},
    )
    assert pub.publish(f"{uid}/k") == 0x10
    pub.t.disconnect()
