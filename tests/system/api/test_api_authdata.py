"""/auth_username and /auth_clientid: CRUD over HTTP and the CONNECTs they decide."""

from __future__ import annotations

import time

import pytest

from api_http import Api
from clients import V5, TestClient, raw_connect


def connect_packet(client_id: str, username: str, password: str) -> bytes:
    """A v3.1.1 CONNECT with username and password, built by hand."""

    def s(text: str) -> bytes:
        raw = text.encode()
        return len(raw).to_bytes(2, "big") + raw

    body = s("MQTT") + bytes([4, 0xC2]) + (30).to_bytes(2, "big")
    body += s(client_id) + s(username) + s(password)
    return bytes([0x10, len(body)]) + body


@pytest.fixture
def api(broker) -> Api:
    return Api(broker.api_port)


def _connect(
    port: int, client_id: str, username: str | None, password: str | None, v5: bool = False
) -> int:
    """The CONNACK reason code (paho maps v3 return codes 4 and 5 to 0x86 and 0x87)."""
    t = TestClient(client_id, protocol=V5 if v5 else 4)
    if username is not None:
        t.c.username_pw_set(username, password)
    _flags, rc, _props = t.connect(port, expect_rc=None)
    value = rc.value if hasattr(rc, "value") else rc
    if value == 0:
        t.disconnect()
    else:
        # Stop paho reconnecting; its thread then ends by itself (joining it can take 1 s).
        t.c.disconnect()
    return int(value)


@pytest.mark.parametrize("kind", ["username", "clientid"])
def test_crud(api: Api, broker, uid: str, kind: str) -> None:
    base = f"/auth_{kind}"
    name = f"{uid}-user"
    before_ms = int(time.time() * 1000)
    assert api.post(base, {kind: name, "password": "pw1"}).json == {"code": 0}
    r = api.post(base, {kind: name, "password": "other"})
    assert (r.status, r.code) == (400, 113), r
    got = api.ok("GET", f"{base}/{name}")
    # no endpoint ever returns the hash; created_at is epoch milliseconds (EMQX 4.4)
    assert set(got) == {kind, "created_at"} and got[kind] == name
    assert before_ms - 1000 <= got["created_at"] <= int(time.time() * 1000) + 1000
    assert got in api.ok("GET", base)
    assert b"sha256$" not in api.get(base).raw
    assert api.put(f"{base}/{name}", {"password": "pw2"}).json == {"code": 0}
    if kind == "username":
        assert _connect(broker.port, f"{uid}-c", name, "pw1") == 0x86
        assert _connect(broker.port, f"{uid}-c", name, "pw2") == 0
    assert api.delete(f"{base}/{name}").json == {"code": 0}
    for method in ("GET", "DELETE"):
        r = api.request(method, f"{base}/{name}")
        assert (r.status, r.code) == (404, 105), r
    r = api.put(f"{base}/{name}", {"password": "x"})
    assert (r.status, r.code) == (404, 105), r
    assert name not in [item[kind] for item in api.ok("GET", base)]


@pytest.mark.parametrize("kind", ["username", "clientid"])
def test_list_filters_and_order(api: Api, uid: str, kind: str) -> None:
    base = f"/auth_{kind}"
    names = [f"{uid}-f{i}" for i in range(3)]
    for n in names:  # one by one: distinct creation times, newest listed first
        api.ok("POST", base, {kind: n, "password": "x"})
        time.sleep(0.002)
    listed = [item[kind] for item in api.ok("GET", f"{base}?_like_{kind}={uid}-f")]
    assert listed == names[::-1]
    assert [item[kind] for item in api.ok("GET", f"{base}?{kind}={names[1]}")] == [names[1]]
    assert api.ok("GET", f"{base}?{kind}={uid}-nobody") == []


@pytest.mark.parametrize(
    "name", ["x" * 65536, "é" * 32768, "a\u0000b"], ids=["65536 bytes", "65536 UTF-8", "NUL"]
)
@pytest.mark.parametrize("kind", ["username", "clientid"])
def test_names_no_mqtt_client_can_present_are_refused(api: Api, kind: str, name: str) -> None:
    r = api.post(f"/auth_{kind}", {kind: name, "password": "x"})
    assert (r.status, r.code) == (400, 108), r


def test_list_paging(api: Api, uid: str) -> None:
    names = [f"{uid}-p{i}" for i in range(5)]
    api.ok("POST", "/auth_username", [{"username": n, "password": "x"} for n in names])
    everything = api.get("/auth_username").json
    count = everything["meta"]["count"]
    assert count >= 5 and len(everything["data"]) == count
    seen = []
    page = 1
    while True:
        r = api.get(f"/auth_username?_limit=2&_page={page}")
        assert r.meta["count"] == count and len(r.data) <= 2
        seen += [d["username"] for d in r.data]
        if not r.meta["hasnext"]:
            break
        page += 1
    assert set(names) <= set(seen) and len(seen) == count
    for n in names:
        api.ok("DELETE", f"/auth_username/{n}")


def test_batch_create(api: Api, uid: str) -> None:
    api.ok("POST", "/auth_clientid", {"clientid": f"{uid}-dup", "password": "x"})
    data = api.ok(
        "POST",
        "/auth_clientid",
        [
            {"clientid": f"{uid}-b1", "password": "x"},
            {"clientid": f"{uid}-dup", "password": "x"},
            {"clientid": f"{uid}-b2"},
            {"clientid": f"{uid}-b3", "password": ""},
            {"password": "x"},
            {"clientid": f"{uid}-b4", "password": "y"},
        ],
    )
    assert data[f"{uid}-b1"] == "ok" and data[f"{uid}-b4"] == "ok"
    assert "already exists" in data[f"{uid}-dup"]
    assert "password" in data[f"{uid}-b2"] and "empty" in data[f"{uid}-b3"]
    assert "clientid" in data["#4"]
    listed = {d["clientid"] for d in api.ok("GET", "/auth_clientid")}
    assert {f"{uid}-b1", f"{uid}-b4", f"{uid}-dup"} <= listed
    assert f"{uid}-b2" not in listed and f"{uid}-b3" not in listed


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"username": "", "password": "x"}, 104),
        ({"username": "u", "password": ""}, 104),
        ({"password": "x"}, 107),
        ({"username": "u"}, 107),
        ({"username": 5, "password": "x"}, 108),
        ({"username": "u", "password": ["x"]}, 108),
        ("just a string", 108),
    ],
)
def test_create_errors(api: Api, body, code: int) -> None:
    r = api.post("/auth_username", body)
    assert (r.status, r.code) == (400, code), r


def test_update_errors(api: Api, uid: str) -> None:
    api.ok("POST", "/auth_username", {"username": f"{uid}-e", "password": "x"})
    r = api.put(f"/auth_username/{uid}-e", {"password": ""})
    assert (r.status, r.code) == (400, 104)
    r = api.put(f"/auth_username/{uid}-e", {})
    assert (r.status, r.code) == (400, 107)
    r = api.put(f"/auth_username/{uid}-e", raw=b"{", headers={"Content-Type": "application/json"})
    assert (r.status, r.code) == (400, 109)
    api.ok("DELETE", f"/auth_username/{uid}-e")


def test_username_decides_connect(api: Api, broker, uid: str) -> None:
    user = f"{uid}-alice"
    before = api.metrics()
    api.ok("POST", "/auth_username", {"username": user, "password": "right"})
    assert _connect(broker.port, f"{uid}-1", user, "wrong") == 0x86
    assert _connect(broker.port, f"{uid}-2", user, None) == 0x86
    assert _connect(broker.port, f"{uid}-3", user, "wrong", v5=True) == 0x86
    assert _connect(broker.port, f"{uid}-4", user, "right") == 0
    assert _connect(broker.port, f"{uid}-5", user, "right", v5=True) == 0
    mid = api.metrics()
    assert mid["client.authenticate"] == before["client.authenticate"] + 5
    assert mid["packets.connack.auth_error"] == before["packets.connack.auth_error"] + 3
    assert mid["client.auth.anonymous"] == before["client.auth.anonymous"]
    # EMQX 4.4's counters, agreeing with each other
    assert mid["client.auth.failure"] == before["client.auth.failure"] + 3
    assert mid["client.auth.success"] == before["client.auth.success"] + 2
    assert mid["packets.connack.error"] == before["packets.connack.error"] + 3
    assert mid["packets.connack.error"] >= mid["packets.connack.auth_error"]
    api.ok("PUT", f"/auth_username/{user}", {"password": "new"})
    assert _connect(broker.port, f"{uid}-6", user, "right") == 0x86
    assert _connect(broker.port, f"{uid}-7", user, "new") == 0
    api.ok("DELETE", f"/auth_username/{user}")
    # no record any more: allow_anonymous (on for a loopback-only broker) decides
    assert _connect(broker.port, f"{uid}-8", user, "anything") == 0
    end = api.metrics()
    assert end["client.auth.anonymous"] == mid["client.auth.anonymous"] + 1
    assert end["client.auth.success.anonymous"] == mid["client.auth.success.anonymous"] + 1


def test_clientid_decides_connect(api: Api, broker, uid: str) -> None:
    cid = f"{uid}-device"
    api.ok("POST", "/auth_clientid", {"clientid": cid, "password": "s3cret"})
    assert _connect(broker.port, cid, "whoever", "nope") == 0x86
    assert _connect(broker.port, cid, None, None) == 0x86
    assert _connect(broker.port, cid, "whoever", "s3cret") == 0
    # a username record with another password also admits the client
    api.ok("POST", "/auth_username", {"username": f"{uid}-u", "password": "by-user"})
    assert _connect(broker.port, cid, f"{uid}-u", "by-user") == 0
    assert _connect(broker.port, cid, f"{uid}-u", "neither") == 0x86
    api.ok("DELETE", f"/auth_clientid/{cid}")
    api.ok("DELETE", f"/auth_username/{uid}-u")
    assert _connect(broker.port, cid, None, None) == 0


def test_url_encoded_names(api: Api, uid: str) -> None:
    name = f"{uid}/with space+plus"
    api.ok("POST", "/auth_username", {"username": name, "password": "x"})
    encoded = f"{uid}%2Fwith%20space%2Bplus"
    assert api.ok("GET", f"/auth_username/{encoded}")["username"] == name
    api.ok("DELETE", f"/auth_username/{encoded}")


def test_v3_return_code_on_the_wire(api: Api, broker, uid: str) -> None:
    api.ok("POST", "/auth_username", {"username": f"{uid}-w", "password": "good"})
    assert (
        raw_connect(broker.port, connect_packet(f"{uid}-r", f"{uid}-w", "bad"))
        == b"\x20\x02\x00\x04"
    )
    reply = raw_connect(broker.port, connect_packet(f"{uid}-r", f"{uid}-w", "good"), timeout=0.2)
    assert reply[:4] == b"\x20\x02\x00\x00"
    api.ok("DELETE", f"/auth_username/{uid}-w")
