"""/banned against real brokers: CONNECT refused with the right code, kicks, expiry, durability."""

from __future__ import annotations

import time

from api_http import Api, wait_for
from clients import TestClient
from rawclient import RawClient


def _connack(port: int, client_id: str, version: int = 4, username: str | None = None) -> int:
    with RawClient(port, version) as c:
        return c.connect(client_id, username=username).reason_code


def test_ban_refuses_connect_with_v3_code_5_and_v5_0x8a(broker, uid) -> None:
    api = Api(broker.api_port)
    cid = f"banned-{uid}"
    assert _connack(broker.port, cid) == 0
    ban = api.ok("POST", "/banned", {"who": cid, "as": "clientid", "reason": "test"})
    assert ban["who"] == cid and ban["as"] == "clientid" and ban["by"] == "user"
    assert ban["until"] - ban["at"] == 300 and abs(ban["at"] - time.time()) < 5
    assert _connack(broker.port, cid, 4) == 5
    assert _connack(broker.port, cid, 3) == 5
    assert _connack(broker.port, cid, 5) == 0x8A
    assert _connack(broker.port, cid + "-other", 4) == 0
    listed = api.get("/banned?_limit=10000")
    assert {
        "who": cid,
        "as": "clientid",
        "by": "user",
        "reason": "test",
        "at": ban["at"],
        "until": ban["until"],
    } in listed.data
    assert api.ok("DELETE", f"/banned/clientid/{cid}") is None
    assert _connack(broker.port, cid, 5) == 0
    r = api.delete(f"/banned/clientid/{cid}")
    assert r.status == 404


def test_username_and_peerhost_bans_kick_online_clients(make_broker) -> None:
    b = make_broker()
    api = Api(b.api_port)
    alice = TestClient("kick-alice")
    alice.c.username_pw_set("alice", "pw")
    alice.c.reconnect_delay_set(30, 30)
    alice.connect(b.port)
    bob = TestClient("kick-bob")
    bob.c.reconnect_delay_set(30, 30)
    bob.connect(b.port)
    api.ok("POST", "/banned", {"who": "alice", "as": "username"})
    assert alice.disconnected.wait(5)
    assert not bob.disconnected.is_set()
    assert _connack(b.port, "someone", username="alice") == 5
    assert _connack(b.port, "someone", username="bob") == 0

    api.ok("POST", "/banned", {"who": "::ffff:127.0.0.1", "as": "peerhost", "by": "ops"})
    assert bob.disconnected.wait(5)
    listed = {(x["as"], x["who"]) for x in api.get("/banned").data}
    assert listed == {("username", "alice"), ("peerhost", "127.0.0.1")}
    assert _connack(b.port, "anyone", 5) == 0x8A
    api.ok("DELETE", "/banned/peerhost/127.0.0.1")
    assert _connack(b.port, "anyone", 5) == 0
    alice.c.loop_stop()
    bob.c.loop_stop()


def test_bans_expire_and_survive_restart(make_broker) -> None:
    b = make_broker()
    api = Api(b.api_port)
    now = int(time.time())
    api.ok("POST", "/banned", {"who": "short", "as": "clientid", "until": now + 2})
    api.ok("POST", "/banned", {"who": "long", "as": "clientid", "at": now, "until": now + 3600})
    assert _connack(b.port, "short") == 5
    b.restart()
    wait_for(lambda: api.get("/banned").status == 200)
    assert _connack(b.port, "long") == 5
    wait_for(lambda: _connack(b.port, "short") == 0, timeout=10, interval=0.3)
    assert [x["who"] for x in api.get("/banned").data] == ["long"]
    b.restart()
    wait_for(lambda: api.get("/banned").status == 200)
    assert [x["who"] for x in api.get("/banned").data] == ["long"]  # the expired one is gone
    assert _connack(b.port, "long") == 5


def test_bad_ban_requests(broker) -> None:
    api = Api(broker.api_port)
    r = api.post("/banned", {"as": "clientid"})
    assert (r.status, r.code) == (400, 107)
    r = api.post("/banned", {"who": "x", "as": "ip"})
    assert (r.status, r.code) == (400, 108)
    r = api.post("/banned", {"who": "not-an-ip", "as": "peerhost"})
    assert (r.status, r.code) == (400, 108)
    r = api.post("/banned", {"who": "x", "as": "clientid", "until": "soon"})
    assert (r.status, r.code) == (400, 108)
    r = api.post("/banned", [1])
    assert (r.status, r.code) == (400, 108)
    r = api.delete("/banned/ip/x")
    assert (r.status, r.code) == (400, 108)
