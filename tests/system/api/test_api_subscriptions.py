"""GET /subscriptions with every filter and paging, fed by real client subscriptions."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from api_http import Api
from clients import TestClient


@pytest.fixture
def api(broker) -> Api:
    return Api(broker.api_port)


@pytest.fixture
def subscribed(broker, uid) -> Iterator[tuple[TestClient, TestClient]]:
    a = TestClient(f"{uid}-a")
    b = TestClient(f"{uid}-b")
    a.connect(broker.port)
    b.connect(broker.port)
    a.subscribe([(f"{uid}/x/+", 0), (f"{uid}/y", 1), (f"$share/g{uid}/{uid}/s", 1)])
    b.subscribe([(f"{uid}/#", 2), (f"$queue/{uid}/s", 0)])
    yield a, b
    a.disconnect()
    b.disconnect()


def _pairs(r) -> set[tuple[str, str, int]]:
    assert r.status == 200 and r.code == 0, r
    assert r.meta["count"] >= len(r.data)
    return {(i["clientid"], i["topic"], i["qos"]) for i in r.data}


def test_filters(api: Api, uid: str, subscribed) -> None:
    a, b = (f"{uid}-a", f"{uid}-b")
    everything = _pairs(api.get("/subscriptions"))
    mine = {p for p in everything if p[0] in (a, b)}
    assert mine == {
        (a, f"{uid}/x/+", 0),
        (a, f"{uid}/y", 1),
        (a, f"$share/g{uid}/{uid}/s", 1),
        (b, f"{uid}/#", 2),
        (b, f"$queue/{uid}/s", 0),
    }
    assert _pairs(api.get(f"/subscriptions?clientid={a}")) == {
        (a, f"{uid}/x/+", 0),
        (a, f"{uid}/y", 1),
        (a, f"$share/g{uid}/{uid}/s", 1),
    }
    assert _pairs(api.get(f"/subscriptions?clientid={a}&qos=1")) == {
        (a, f"{uid}/y", 1),
        (a, f"$share/g{uid}/{uid}/s", 1),
    }
    assert _pairs(api.get(f"/subscriptions?topic={uid}/%23")) == {(b, f"{uid}/#", 2)}
    assert _pairs(api.get(f"/subscriptions?share=g{uid}")) == {(a, f"$share/g{uid}/{uid}/s", 1)}
    queued = _pairs(api.get("/subscriptions?share=$queue"))
    assert (b, f"$queue/{uid}/s", 0) in queued
    assert _pairs(api.get(f"/subscriptions?_match_topic={uid}/x/1")) == {
        (a, f"{uid}/x/+", 0),
        (b, f"{uid}/#", 2),
    }
    assert _pairs(api.get(f"/subscriptions?_match_topic={uid}/s")) == {
        (a, f"$share/g{uid}/{uid}/s", 1),
        (b, f"{uid}/#", 2),
        (b, f"$queue/{uid}/s", 0),
    }
    assert _pairs(api.get(f"/subscriptions?_match_topic={uid}/s&clientid={b}&qos=0")) == {
        (b, f"$queue/{uid}/s", 0)
    }
    assert _pairs(api.get(f"/subscriptions?clientid={uid}-nobody")) == set()


def test_per_client_and_paging(api: Api, uid: str, subscribed) -> None:
    r = api.get(f"/subscriptions/{uid}-b")
    assert _pairs(r) == {(f"{uid}-b", f"{uid}/#", 2), (f"{uid}-b", f"$queue/{uid}/s", 0)}
    assert r.data[0]["node"] == "ferrymq@127.0.0.1"
    assert api.ok("GET", f"/subscriptions/{uid}-nobody") == []
    first = api.get(f"/subscriptions?clientid={uid}-a&_limit=2")
    second = api.get(f"/subscriptions?clientid={uid}-a&_limit=2&_page=2")
    assert first.meta == {"page": 1, "limit": 2, "count": 3, "hasnext": True}
    assert second.meta == {"page": 2, "limit": 2, "count": 3, "hasnext": False}
    assert len(_pairs(first) | _pairs(second)) == 3


@pytest.mark.parametrize(
    ("query", "code"),
    [("qos=3", 108), ("qos=high", 108), ("_limit=-5", 108), ("_match_topic=a/%23", 115)],
)
def test_bad_values(api: Api, query: str, code: int) -> None:
    r = api.get(f"/subscriptions?{query}")
    assert (r.status, r.code) == (400, code), r
