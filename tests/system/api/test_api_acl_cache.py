"""GET/DELETE /clients/{clientid}/acl_cache with a real client whose checks fill the cache."""

from __future__ import annotations

from api_http import Api, wait_for
from clients import TestClient


def test_acl_cache_lists_and_clears_decisions(make_broker) -> None:
    b = make_broker()
    api = Api(b.api_port)
    api.ok(
        "POST",
        "/acl",
        {"clientid": "cached", "topic": "secret/#", "action": "pubsub", "access": "deny"},
    )
    c = TestClient("cached")
    c.connect(b.port)
    try:
        assert api.ok("GET", "/clients/cached/acl_cache") == []
        assert c.subscribe("secret/x", 1)[0].value == 0x80
        c.subscribe("open/x", 1)
        c.publish("open/y", b"1", qos=1)
        entries = wait_for(lambda: len(e := api.ok("GET", "/clients/cached/acl_cache")) == 3 and e)
        assert sorted(entries, key=lambda e: (e["access"], e["topic"])) == [
            {"access": "publish", "topic": "open/y", "result": "allow"},
            {"access": "subscribe", "topic": "open/x", "result": "allow"},
            {"access": "subscribe", "topic": "secret/x", "result": "deny"},
        ]
        assert api.ok("DELETE", "/clients/cached/acl_cache") is None
        assert api.ok("GET", "/clients/cached/acl_cache") == []
        assert c.subscribe("secret/x", 1)[0].value == 0x80  # rules still apply, recomputed
    finally:
        c.disconnect()
    r = api.get("/clients/cached/acl_cache")
    assert (r.status, r.code) == (404, 112)
    assert api.delete("/clients/nobody/acl_cache").status == 404
