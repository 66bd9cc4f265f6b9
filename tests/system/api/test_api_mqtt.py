"""/mqtt/subscribe, /mqtt/unsubscribe, /mqtt/publish and their batch forms, end to end."""

from __future__ import annotations

import base64
from collections.abc import Iterator

import pytest

from api_http import Api
from clients import V5, TestClient


@pytest.fixture
def api(broker) -> Api:
    return Api(broker.api_port)


@pytest.fixture
def sub(broker, uid) -> Iterator[TestClient]:
    t = TestClient(f"{uid}-sub")
    t.connect(broker.port)
    yield t
    t.disconnect()


@pytest.fixture
def sub5(broker, uid) -> Iterator[TestClient]:
    t = TestClient(f"{uid}-sub5", protocol=V5)
    t.connect(broker.port)
    yield t
    t.disconnect()


def test_subscribe_on_behalf_then_receive(api: Api, broker, uid: str, sub: TestClient) -> None:
    before = api.metrics()
    r = api.post("/mqtt/subscribe", {"clientid": sub.client_id, "topic": f"{uid}/t", "qos": 1})
    assert r.status == 200 and r.json == {"code": 0}, r
    subs = api.ok("GET", f"/subscriptions/{sub.client_id}")
    assert subs == [
        {"node": "ferrymq@127.0.0.1", "clientid": sub.client_id, "topic": f"{uid}/t", "qos": 1}
    ]
    pub = TestClient(f"{uid}-pub")
    pub.connect(broker.port)
    pub.publish(f"{uid}/t", b"from a client", qos=1)
    msg = sub.get()
    assert (msg.topic, msg.payload, msg.qos) == (f"{uid}/t", b"from a client", 1)
    assert api.metrics()["client.subscribe"] == before["client.subscribe"] + 1
    # unsubscribe: no more messages
    r = api.post("/mqtt/unsubscribe", {"clientid": sub.client_id, "topic": f"{uid}/t"})
    assert r.json == {"code": 0}
    assert api.ok("GET", f"/subscriptions/{sub.client_id}") == []
    assert api.metrics()["client.unsubscribe"] == before["client.unsubscribe"] + 1
    pub.publish(f"{uid}/t", b"after", qos=1)
    sub.expect_nothing(0.3)
    pub.disconnect()


def test_subscribe_several_topics_delivers_retained(
    api: Api, broker, uid: str, sub: TestClient
) -> None:
    api.ok("POST", "/mqtt/publish", {"topic": f"{uid}/r", "payload": "kept", "retain": True})
    api.ok("POST", "/mqtt/subscribe", {"clientid": sub.client_id, "topics": f"{uid}/r,{uid}/s/+"})
    msg = sub.get()
    assert (msg.topic, msg.payload, msg.retain) == (f"{uid}/r", b"kept", True)
    topics = {s["topic"] for s in api.ok("GET", f"/subscriptions/{sub.client_id}")}
    assert topics == {f"{uid}/r", f"{uid}/s/+"}
    api.ok("POST", "/mqtt/publish", {"topic": f"{uid}/r", "payload": "", "retain": True})


def test_subscribe_offline_persistent_session(api: Api, broker, uid: str) -> None:
    t = TestClient(f"{uid}-off")
    t.connect(broker.port, clean=False)
    t.disconnect()
    api.ok("POST", "/mqtt/subscribe", {"clientid": t.client_id, "topic": f"{uid}/q", "qos": 1})
    api.ok("POST", "/mqtt/publish", {"topic": f"{uid}/q", "payload": "queued", "qos": 1})
    again = TestClient(f"{uid}-off")
    again.connect(broker.port, clean=False)
    assert again.get().payload == b"queued"
    again.disconnect()
    api.ok("DELETE", f"/clients/{uid}-off")


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"clientid": "{uid}-nobody", "topic": "a"}, 404, 112),
        ({"clientid": "{sub}", "topic": "a/#/b"}, 400, 115),
        ({"clientid": "{sub}", "topic": "$share/g"}, 400, 115),
        ({"clientid": "{sub}", "topics": "ok/t,bad/#/x"}, 400, 115),
        ({"topic": "a"}, 400, 107),
        ({"clientid": "{sub}"}, 400, 107),
        ({"clientid": "{sub}", "topic": "a", "qos": 3}, 400, 108),
        ({"clientid": "{sub}", "topic": "a", "qos": "1"}, 400, 108),
        ({"clientid": 5, "topic": "a"}, 400, 108),
        ({"clientid": "{sub}", "topic": ["a"]}, 400, 108),
    ],
)
def test_subscribe_errors(api: Api, uid: str, sub: TestClient, body, status, code) -> None:
    body = {
        k: (v.format(uid=uid, sub=sub.client_id) if isinstance(v, str) else v)
        for k, v in body.items()
    }
    r = api.post("/mqtt/subscribe", body)
    assert (r.status, r.code) == (status, code), r
    assert api.ok("GET", f"/subscriptions/{sub.client_id}") == []  # nothing half-done


def test_unsubscribe_errors(api: Api, uid: str, sub: TestClient) -> None:
    r = api.post("/mqtt/unsubscribe", {"clientid": f"{uid}-nobody", "topic": "a"})
    assert (r.status, r.code) == (404, 112)
    r = api.post("/mqtt/unsubscribe", {"clientid": sub.client_id, "topic": "#/a"})
    assert (r.status, r.code) == (400, 115)


def test_batches(api: Api, uid: str, sub: TestClient, sub5: TestClient) -> None:
    data = api.ok(
        "POST",
        "/mqtt/subscribe_batch",
        [
            {"clientid": sub.client_id, "topic": f"{uid}/b1", "qos": 1},
            {"clientid": f"{uid}-ghost", "topic": f"{uid}/b1"},
            {"clientid": sub5.client_id, "topic": f"{uid}/b2", "qos": 2},
            {"clientid": sub5.client_id, "topic": "x/#/y"},
            "not an object",
        ],
    )
    assert [(d["clientid"], d["topic"], d["code"]) for d in data] == [
        (sub.client_id, f"{uid}/b1", 0),
        (f"{uid}-ghost", f"{uid}/b1", 112),
        (sub5.client_id, f"{uid}/b2", 0),
        (sub5.client_id, "x/#/y", 115),
        (None, None, 108),
    ]
    data = api.ok(
        "POST",
        "/mqtt/publish_batch",
        [
            {"topic": f"{uid}/b1", "payload": "one", "qos": 1},
            {"topic": f"{uid}/+", "payload": "bad"},
            {"topic": f"{uid}/b2", "payload": "two", "qos": 2},
        ],
    )
    assert [(d["topic"], d["code"]) for d in data] == [
        (f"{uid}/b1", 0),
        (f"{uid}/+", 115),
        (f"{uid}/b2", 0),
    ]
    assert (sub.get().payload, sub5.get().payload) == (b"one", b"two")
    data = api.ok(
        "POST",
        "/mqtt/unsubscribe_batch",
        [
            {"clientid": sub.client_id, "topic": f"{uid}/b1"},
            {"clientid": f"{uid}-ghost", "topic": f"{uid}/b1"},
        ],
    )
    assert [d["code"] for d in data] == [0, 112]
    assert api.ok("GET", f"/subscriptions/{sub.client_id}") == []
    r = api.post("/mqtt/publish_batch", {"topic": "a"})
    assert (r.status, r.code) == (400, 108)


def test_publish_plain_base64_qos_retain(api: Api, broker, uid: str, sub: TestClient) -> None:
    sub.subscribe(f"{uid}/p/#", 2)
    before = api.metrics()
    api.ok("POST", "/mqtt/publish", {"topic": f"{uid}/p/plain", "payload": "héllo"})
    msg = sub.get()
    assert (msg.topic, msg.payload, msg.qos, msg.retain) == (
        f"{uid}/p/plain",
        "héllo".encode(),
        0,
        False,
    )
    blob = bytes(range(256))
    api.ok(
        "POST",
        "/mqtt/publish",
        {
            "topic": f"{uid}/p/bin",
            "payload": base64.b64encode(blob).decode(),
            "encoding": "base64",
            "qos": 1,
        },
    )
    msg = sub.get()
    assert (msg.payload, msg.qos) == (blob, 1)
    api.ok(
        "POST",
        "/mqtt/publish",
        {"topic": f"{uid}/p/two", "payload": "2", "qos": 2, "clientid": "api"},
    )
    assert sub.get().qos == 2
    api.ok("POST", "/mqtt/publish", {"topics": f"{uid}/p/x,{uid}/p/y", "payload": "m"})
    assert sorted(m.topic for m in sub.get_many(2)) == [f"{uid}/p/x", f"{uid}/p/y"]
    api.ok(
        "POST", "/mqtt/publish", {"topic": f"{uid}/p/ret", "payload": "r", "retain": True, "qos": 1}
    )
    assert sub.get().retain is False  # live delivery to an existing subscriber
    late = TestClient(f"{uid}-late")
    late.connect(broker.port)
    late.subscribe(f"{uid}/p/ret", 1)
    msg = late.get()
    assert (msg.payload, msg.retain, msg.qos) == (b"r", True, 1)
    late.disconnect()
    after = api.metrics()
    assert after["messages.qos1.received"] == before["messages.qos1.received"] + 2
    assert after["messages.qos2.received"] == before["messages.qos2.received"] + 1
    assert after["messages.qos1.sent"] >= before["messages.qos1.sent"] + 3
    assert after["messages.retained"] >= before["messages.retained"] + 1
    api.ok("POST", "/mqtt/publish", {"topic": f"{uid}/p/ret", "payload": "", "retain": True})


def test_publish_mqtt5_properties(api: Api, uid: str, sub5: TestClient) -> None:
    sub5.subscribe(f"{uid}/v5", 1)
    api.ok(
        "POST",
        "/mqtt/publish",
        {
            "topic": f"{uid}/v5",
            "payload": "{}",
            "qos": 1,
            "properties": {
                "message_expiry_interval": 60,
                "user_properties": {"a": "1", "b": "two"},
                "content_type": "application/json",
                "response_topic": f"{uid}/reply",
                "correlation_data": "corr-1",
                "payload_format_indicator": 1,
            },
        },
    )
    msg = sub5.get()
    p = msg.properties
    assert msg.payload == b"{}"
    assert sorted(p.UserProperty) == [("a", "1"), ("b", "two")]
    assert p.ContentType == "application/json"
    assert p.ResponseTopic == f"{uid}/reply"
    assert p.CorrelationData == b"corr-1"
    assert p.PayloadFormatIndicator == 1
    assert 58 <= p.MessageExpiryInterval <= 60


def test_publish_with_no_subscriber_counts_dropped(api: Api, uid: str) -> None:
    before = api.metrics()
    api.ok("POST", "/mqtt/publish", {"topic": f"{uid}/nobody", "payload": "x", "qos": 1})
    after = api.metrics()
    assert after["messages.dropped.no_subscribers"] >= before["messages.dropped.no_subscribers"] + 1


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"topic": "a/+", "payload": "x"}, 115),
        ({"topic": "a/#", "payload": "x"}, 115),
        ({"topics": "a/+,b/#", "payload": "x"}, 115),
        ({"topic": "a/+,,b/#", "payload": "x"}, 115),
        ({"topic": "", "payload": "x"}, 107),
        ({"payload": "x"}, 107),
        ({"topic": "a", "payload": "not base64!", "encoding": "base64"}, 108),
        ({"topic": "a", "payload": "x", "encoding": "hex"}, 108),
        ({"topic": "a", "payload": 5}, 108),
        ({"topic": "a", "payload": True}, 108),
        ({"topic": "a", "qos": 3}, 108),
        ({"topic": "a", "qos": 1.5}, 108),
        ({"topic": "a", "retain": "yes"}, 108),
        ({"topic": "a", "properties": {"no_such": 1}}, 108),
        ({"topic": "a", "properties": []}, 108),
        ({"topic": "a", "properties": {"message_expiry_interval": -1}}, 108),
        ({"topic": "a", "properties": {"user_properties": {"k": [1]}}}, 108),
        ({"topic": "a", "properties": {"user_properties": {"k": None}}}, 108),
        ({"topic": "a", "user_properties": "k=v"}, 108),
        ({"topic": "a", "properties": {"response_topic": "r/#"}}, 115),
        ({"topic": "a", "properties": {"payload_format_indicator": 2}}, 108),
        (
            {
                "topic": "a",
                "payload": "/w==",
                "encoding": "base64",
                "properties": {"payload_format_indicator": 1},
            },
            108,
        ),
    ],
)
def test_publish_errors(api: Api, body, code) -> None:
    r = api.post("/mqtt/publish", body)
    assert (r.status, r.code) == (400, code), r
    assert isinstance(r.json["message"], str) and r.json["message"]


def test_publish_emqx_forms(api: Api, broker, uid: str, sub5: TestClient) -> None:
    """EMQX 4.4's /mqtt/publish: JSON payloads, comma topics, return, older user_properties."""
    sub5.subscribe(f"{uid}/j/#", 0)
    api.ok("POST", "/mqtt/publish", {"topic": f"{uid}/j/1", "payload": {"a": [1, "é"]}})
    assert sub5.get().payload == '{"a":[1,"é"]}'.encode()
    api.ok("POST", "/mqtt/publish", {"topic": f"{uid}/j/2", "payload": [1, 2]})
    assert sub5.get().payload == b"[1,2]"
    # a topic with commas is several topics (invalid entries skipped); so is topics
    data = api.ok(
        "POST", "/mqtt/publish", {"topic": f"{uid}/j/3,{uid}/j/#,{uid}/j/4", "return": True}
    )
    assert set(data) == {"msgid"} and len(data["msgid"]) == 32
    assert {m.topic for m in sub5.get_many(2)} == {f"{uid}/j/3", f"{uid}/j/4"}
    data = api.ok(
        "POST", "/mqtt/publish", {"topics": f"{uid}/j/5,{uid}/j/6", "payload": "x", "return": True}
    )
    assert len(data["msgids"]) == 2 and len(set(data["msgids"])) == 2
    sub5.get_many(2)
    assert api.post("/mqtt/publish", {"topic": f"{uid}/j/7"}).json == {"code": 0}
    sub5.get()
    # user properties at the top level come first; numbers and booleans as text
    api.ok(
        "POST",
        "/mqtt/publish",
        {
            "topic": f"{uid}/j/8",
            "payload": "p",
            "user_properties": {"old": 1.5},
            "properties": {"user_properties": {"n": 7, "b": True, "s": "t"}},
        },
    )
    got = sub5.get().properties.UserProperty
    assert got == [("old", "1.5"), ("n", "7"), ("b", "true"), ("s", "t")]


def test_admin_subscribe_bypasses_the_acl(api: Api, broker, uid: str, sub: TestClient) -> None:
    rule = {
        "clientid": sub.client_id,
        "topic": f"{uid}/secret/#",
        "action": "sub",
        "access": "deny",
    }
    api.ok("POST", "/acl", rule)
    try:
        assert [int(c.value) for c in sub.subscribe(f"{uid}/secret/x", 0)] == [0x80]
        api.ok("POST", "/mqtt/subscribe", {"clientid": sub.client_id, "topic": f"{uid}/secret/x"})
        api.ok("POST", "/mqtt/publish", {"topic": f"{uid}/secret/x", "payload": "for you"})
        assert sub.get().payload == b"for you"  # no delivery check on an admin subscription
    finally:
        api.delete(f"/acl/clientid/{sub.client_id}/topic/{uid}%2Fsecret%2F%23")
