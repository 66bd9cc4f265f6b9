"""/acl over HTTP, and the PUBLISH / SUBSCRIBE decisions the stored rules make at once.

These tests share the broker with others, so every rule is about topics under
the test's own ``uid`` and is deleted afterwards.
"""

from __future__ import annotations

import queue
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


def test_create_list_delete(api: Api, uid: str, rules) -> None:
    cid, user = f"{uid}-c", f"{uid}-u"
    echo = add(
        api, rules, {"clientid": cid, "topic": f"{uid}/a/#", "action": "pub", "access": "allow"}
    )
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
    assert echo == {
        "all": "$all",
        "topic": f"{uid}/all",
        "action": "sub",
        "access": "deny",
        "result": "ok",
    }
    listed = api.ok("GET", "/acl/clientid")
    assert {"clientid": cid, "topic": f"{uid}/a/#", "action": "pub", "access": "allow"} in listed
    assert {"username": user, "topic": f"{uid}/%u", "action": "pubsub", "access": "deny"} in api.ok(
        "GET", "/acl/username"
    )
    assert {"all": "$all", "topic": f"{uid}/all", "action": "sub", "access": "deny"} in api.ok(
        "GET", "/acl/$all"
    )
    assert api.ok("GET", f"/acl/clientid/{cid}") == [
        {"clientid": cid, "topic": f"{uid}/a/#", "action": "pub", "access": "allow"}
    ]
    assert api.ok("GET", f"/acl/username/{user}")[0]["topic"] == f"{uid}/%u"
    assert api.ok("GET", f"/acl/clientid/{uid}-nobody") == []
    # same subject and topic: replaced, not added
    add(api, rules, {"clientid": cid, "topic": f"{uid}/a/#", "action": "sub", "access": "deny"})
    assert api.ok("GET", f"/acl/clientid/{cid}") == [
        {"clientid": cid, "topic": f"{uid}/a/#", "action": "sub", "access": "deny"}
    ]
    # delete with URL-encoded topics
    assert api.delete(f"/acl/clientid/{cid}/topic/{uid}%2Fa%2F%23").json == {"code": 0}
    assert api.ok("GET", f"/acl/clientid/{cid}") == []
    r = api.delete(f"/acl/clientid/{cid}/topic/{uid}%2Fa%2F%23")
    assert r.status == 404 and r.code != 0
    assert api.delete(f"/acl/username/{user}/topic/{uid}%2F%25u").json == {"code": 0}
    assert api.delete(f"/acl/all/$all/topic/{uid}%2Fall").json == {"code": 0}
    r = api.delete(f"/acl/$all/topic/{uid}%2Fall")
    assert r.status == 404


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


def test_publish_rules_and_levels(api: Api, broker, uid: str, rules) -> None:
    watcher = TestClient(f"{uid}-watch")
    watcher.connect(broker.port)
    watcher.subscribe(f"{uid}/#", 0)
    pub = Publisher(broker.port, f"{uid}-pub", username=f"{uid}-name")
    assert pub.publish(f"{uid}/free") == 0
    assert watcher.get().topic == f"{uid}/free"
    before = api.metrics()
    # all clients: deny publishing under uid/secret
    add(api, rules, {"topic": f"{uid}/secret/#", "action": "pub", "access": "deny"})
    assert pub.publish(f"{uid}/secret/1") == 0x87
    pub.publish(f"{uid}/secret/2", qos=0)
    watcher.expect_nothing(0.3)
    after = api.metrics()
    assert after["packets.publish.auth_error"] == before["packets.publish.auth_error"] + 2
    assert after["client.check_acl"] >= before["client.check_acl"] + 2
    # a username rule comes before the all-clients rules
    add(
        api,
        rules,
        {
            "username": f"{uid}-name",
            "topic": f"{uid}/secret/+",
            "action": "pubsub",
            "access": "allow",
        },
    )
    assert pub.publish(f"{uid}/secret/3") == 0
    assert watcher.get().topic == f"{uid}/secret/3"
    # ... and a client id rule before the username's; in one level deny beats allow
    add(
        api,
        rules,
        {"clientid": f"{uid}-pub", "topic": f"{uid}/secret/#", "action": "pub", "access": "deny"},
    )
    add(
        api,
        rules,
        {"clientid": f"{uid}-pub", "topic": f"{uid}/secret/4", "action": "pub", "access": "allow"},
    )
    assert pub.publish(f"{uid}/secret/4") == 0x87
    # deleting the rule applies at once, too
    api.ok("DELETE", f"/acl/clientid/{uid}-pub/topic/{uid}%2Fsecret%2F%23")
    assert pub.publish(f"{uid}/secret/4") == 0
    assert watcher.get().topic == f"{uid}/secret/4"
    pub.t.disconnect()
    watcher.disconnect()


def test_subscribe_rules(api: Api, broker, uid: str, rules) -> None:
    add(api, rules, {"topic": f"{uid}/#", "action": "sub", "access": "deny"})
    add(
        api,
        rules,
        {"clientid": f"{uid}-s3", "topic": f"{uid}/a/+", "action": "sub", "access": "allow"},
    )
    add(
        api,
        rules,
        {"clientid": f"{uid}-s5", "topic": f"{uid}/a/+", "action": "sub", "access": "allow"},
    )
    before = api.metrics()
    v3 = TestClient(f"{uid}-s3")
    v3.connect(broker.port)
    codes = v3.subscribe(
        [(f"{uid}/a/b", 1), (f"{uid}/a/#", 1), (f"{uid}/a/+", 0), (f"{uid}x/ok", 0)]
    )
    assert [int(c.value) for c in codes] == [1, 0x80, 0, 0]
    v5 = TestClient(f"{uid}-s5", protocol=V5)
    v5.connect(broker.port)
    codes = v5.subscribe([(f"{uid}/a/b", 1), (f"{uid}/b", 0), (f"$share/g/{uid}/a/c", 0)])
    assert [int(c.value) for c in codes] == [1, 0x87, 0]
    # a filter that only intersects the denied one is refused as well
    other = TestClient(f"{uid}-other")
    other.connect(broker.port)
    assert [int(c.value) for c in other.subscribe("+/a/b", 0)] == [0x80]
    after = api.metrics()
    assert after["packets.subscribe.auth_error"] == before["packets.subscribe.auth_error"] + 3
    # the API's own subscribe goes through the same check
    r = api.post("/mqtt/subscribe", {"clientid": f"{uid}-s5", "topic": f"{uid}/z"})
    assert (r.status, r.code) == (400, 108) and r.data[0]["topic"] == f"{uid}/z"
    for t in (v3, v5, other):
        t.disconnect()


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
            (f"{uid}/c/+/x", 0),  # can match uid/c/<me>/x
        ]
    )
    assert [int(c.value) for c in codes] == [0x87, 0, 0x87, 0, 0x87]
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
