"""/topic-metrics with real publishers and subscribers: counts and rates over HTTP."""

from __future__ import annotations

from api_http import Api, wait_for
from clients import TestClient


def test_counts_and_rates(make_broker) -> None:
    b = make_broker()
    api = Api(b.api_port)
    assert api.ok("GET", "/topic-metrics") == []
    assert api.ok("POST", "/topic-metrics", {"topic": "tm/a"}) is None
    assert api.ok("POST", "/topic-metrics", {"topic": "tmx/empty"}) is None
    s1, s0, pub = TestClient("tm-s1"), TestClient("tm-s0"), TestClient("tm-pub")
    for c in (s1, s0, pub):
        c.connect(b.port)
    try:
        s1.subscribe("tm/#", 1)
        s0.subscribe("tm/a", 0)
        for i in range(5):
            pub.publish("tm/a", str(i), qos=1)
        pub.publish("tm/b", b"not counted", qos=1)
        pub.publish("tmx/empty", b"nobody listens", qos=0)
        s1.get_many(6)
        s0.get_many(5)
        m = wait_for(
            lambda: (m := api.ok("GET", "/topic-metrics/tm%2Fa"))["messages.in.count"] == 5 and m
        )
        assert m["messages.qos1.in.count"] == 5 and m["messages.qos0.in.count"] == 0
        assert m["messages.out.count"] == 10
        assert m["messages.qos1.out.count"] == 5 and m["messages.qos0.out.count"] == 5
        assert m["messages.dropped.count"] == 0
        assert set(m) == {
            f"messages.{n}.{kind}"
            for n in (
                "in",
                "out",
                "dropped",
                "qos0.in",
                "qos0.out",
                "qos1.in",
                "qos1.out",
                "qos2.in",
                "qos2.out",
            )
            for kind in ("count", "rate")
        }
        wait_for(lambda: api.ok("GET", "/topic-metrics/tm%2Fa")["messages.in.rate"] > 0, timeout=10)
        listed = api.ok("GET", "/topic-metrics")
        assert [x["topic"] for x in listed] == ["tm/a", "tmx/empty"]
        empty = listed[1]["metrics"]
        assert empty["messages.in.count"] == 1 and empty["messages.dropped.count"] == 1
        assert api.get("/topic-metrics/tm%2Fb").status == 404

        r = api.post("/topic-metrics", {"topic": "tm/a"})
        assert (r.status, r.code) == (400, 108)
        r = api.post("/topic-metrics", {"topic": "tm/+"})
        assert (r.status, r.code) == (400, 115)
        r = api.post("/topic-metrics", {})
        assert (r.status, r.code) == (400, 107)

        assert api.ok("DELETE", "/topic-metrics/tm%2Fa") is None
        assert api.delete("/topic-metrics/tm%2Fa").status == 404
        assert [x["topic"] for x in api.ok("GET", "/topic-metrics")] == ["tmx/empty"]
        assert api.ok("DELETE", "/topic-metrics") is None
        assert api.ok("GET", "/topic-metrics") == []
    finally:
        for c in (s1, s0, pub):
            c.disconnect()
