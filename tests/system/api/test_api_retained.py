"""GET/DELETE /retained against a real broker: list with wildcard filters, read, clear."""

from __future__ import annotations

import base64

from paho.mqtt.packettypes import PacketTypes

from api_http import Api, wait_for
from clients import V5, TestClient, props


def test_list_read_and_delete_retained(broker, uid) -> None:
    api = Api(broker.api_port)
    pub = TestClient(f"ret-pub-{uid}", protocol=V5)
    pub.connect(broker.port)
    try:
        for name in ("a", "b", "c"):
            pub.publish(f"ret/{uid}/{name}", f"payload-{name}".encode(), qos=1, retain=True)
        expiring = props(PacketTypes.PUBLISH, MessageExpiryInterval=600, ContentType="text/plain")
        pub.publish(f"ret/{uid}/deep/x", b"\x00\xff", qos=1, retain=True, properties=expiring)
        query = f"/retained?topic=ret/{uid}/%23"
        r = wait_for(lambda: (r := api.get(query)).meta["count"] == 4 and r)
        assert [i["topic"] for i in r.data] == [f"ret/{uid}/{n}" for n in ("a", "b", "c", "deep/x")]
        first = r.data[0]
        assert first["qos"] == 1 and first["from_clientid"] == f"ret-pub-{uid}"
        assert first["payload_size"] == len("payload-a") and first["expires_in"] is None
        assert "payload" not in first
        assert 590 <= r.data[3]["expires_in"] <= 600
        plus = api.get(f"/retained?topic=ret/{uid}/%2B")
        assert plus.meta["count"] == 3
        page = api.get(f"/retained?topic=ret/{uid}/%23&_limit=3&_page=2")
        assert [i["topic"] for i in page.data] == [f"ret/{uid}/deep/x"]
        exact = api.get(f"/retained?topic=ret/{uid}/b")
        assert [i["topic"] for i in exact.data] == [f"ret/{uid}/b"]

        one = api.ok("GET", f"/retained/ret%2F{uid}%2Fdeep%2Fx")
        assert base64.b64decode(one["payload"]) == b"\x00\xff"
        assert one["properties"]["content_type"] == "text/plain"

        assert api.ok("DELETE", f"/retained/ret/{uid}/a") is None
        assert api.get(f"/retained/ret/{uid}/a").status == 404
        assert api.get(f"/retained?topic=ret/{uid}/%23").meta["count"] == 3
        sub = TestClient(f"ret-sub-{uid}")
        sub.connect(broker.port)
        sub.subscribe(f"ret/{uid}/+", 1)
        got = sorted(m.topic for m in sub.get_many(2))
        assert got == [f"ret/{uid}/b", f"ret/{uid}/c"]  # the cleared one is gone for subscribers
        sub.disconnect()
    finally:
        pub.disconnect()


def test_bad_requests(broker) -> None:
    api = Api(broker.api_port)
    r = api.get("/retained?topic=a/%23/b")
    assert r.status == 400 and r.code == 115
    r = api.delete("/retained/no/such/topic")
    assert r.status == 404 and r.code == 102
    assert api.get("/retained?_limit=0").status == 400


def test_delete_survives_restart(make_broker) -> None:
    b = make_broker()
    api = Api(b.api_port)
    pub = TestClient("ret-durable")
    pub.connect(b.port)
    pub.publish("durable/one", b"1", qos=1, retain=True)
    pub.publish("durable/two", b"2", qos=1, retain=True)
    pub.disconnect()
    wait_for(lambda: api.get("/retained?topic=durable/%23").meta["count"] == 2)
    api.ok("DELETE", "/retained/durable%2Fone")
    b.restart()
    r = wait_for(lambda: (r := api.get("/retained?topic=durable/%23")).status == 200 and r)
    assert [i["topic"] for i in r.data] == ["durable/two"]
