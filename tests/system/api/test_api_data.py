"""/data/export and /data/import: an EMQX 4.4 export imported into a real broker, round trips,
file handling (parsing and password forms: unit/api)."""

from __future__ import annotations

import json

from api_http import Api, wait_for
from paths import DATA
from rawclient import RawClient

FIXTURE = DATA / "emqx-4.4-export.json"


def _connack(port: int, client_id: str, username: str | None = None, password: str | None = None):
    with RawClient(port, 4) as c:
        pw = password.encode() if password is not None else None
        return c.connect(client_id, username=username, password=pw).reason_code


def _suback(port: int, client_id: str, username: str, password: str, topic: str) -> int:
    with RawClient(port, 4) as c:
        assert c.connect(client_id, username=username, password=password.encode()).reason_code == 0
        return c.subscribe(topic, 1).reason_codes[0]


def _check_fixture_applied(port: int, api_port: int) -> None:
    assert _connack(port, "c1", "alice", "alice-pw") == 0
    assert _connack(port, "c1", "alice", "wrong") == 4
    assert _connack(port, "sensor-1", "dev", "sensor-token") == 0
    assert _connack(port, "sensor-1", "dev", "nope") == 4
    assert _connack(port, "c2", "legacy", "legacy-pw") == 0  # unsalted sha256
    assert _connack(port, "evil-device") == 5  # banned
    # ACL: alice's own allow rule first, then the all-clients deny of '#'
    assert _suback(port, "c3", "alice", "alice-pw", "reports/daily") == 1
    assert _suback(port, "c3", "alice", "alice-pw", "other/x") == 0x80
    grafana = Api(
        api_port, auth=("9f2c1d3e4b5a", "Mjk5OTk0MDgxNjg5NjA0MTk2NTY1NTY0MzQ2ODI3OTA0ODA")
    )
    assert grafana.get("/brokers").status == 200
    disabled = Api(
        api_port, auth=("disabledapp1", "MzA0NjI4OTc3NTcyMDYwNTE2NDg1NjQzNDQ3MjE0Mjk0NzI")
    )
    assert disabled.get("/brokers").status == 401


def test_import_an_emqx_export_and_round_trip(make_broker) -> None:
    b1 = make_broker()
    api1 = Api(b1.api_port)
    report = api1.ok("POST", "/data/import", json.loads(FIXTURE.read_text()))
    assert (report["apps"], report["auth_mnesia"], report["acl_mnesia"], report["blacklist"]) == (
        2,
        3,
        3,
        2,
    )
    skipped = {(s["section"], s["reason"]) for s in report["skipped"]}
    assert ("users", "dashboard users are not imported") in skipped
    assert ("blacklist", "expired") in skipped
    assert any(sec == "auth_mnesia" and "md5" in why for sec, why in skipped)
    assert all("password" not in json.dumps(s["item"]) for s in report["skipped"])
    _check_fixture_applied(b1.port, b1.api_port)
    bans = {(x["as"], x["who"]) for x in api1.get("/banned").data}
    assert bans == {("clientid", "evil-device"), ("peerhost", "10.0.0.66")}

    # export, and import the export into a second broker: the same behaviour there
    exported = api1.ok("POST", "/data/export")
    assert exported["filename"].endswith(".json") and exported["size"] > 0
    assert exported["node"] == "ferrymq@127.0.0.1"
    files = api1.ok("GET", "/data/export")
    assert exported["filename"] in [f["filename"] for f in files]
    doc = json.loads(api1.ok("GET", f"/data/file/{exported['filename']}")["file"])
    assert doc["version"] == "4.4"
    alice = next(r for r in doc["auth_mnesia"] if r["login"] == "alice")
    original = next(
        r for r in json.loads(FIXTURE.read_text())["auth_mnesia"] if r["login"] == "alice"
    )
    assert alice["password"] == original["password"]  # EMQX's bytes, unchanged
    # a pubsub rule is two rules, as EMQX 4.4 stores and exports it
    all_rules = {
        (r["topic"], r["action"], r["access"]) for r in doc["acl_mnesia"] if r["type"] == "all"
    }
    assert {("#", "pub", "deny"), ("#", "sub", "deny")} <= all_rules
    assert {
        "who": {"peerhost": "10.0.0.66"},
        "by": "ops",
        "reason": "scanner",
        "at": 1700000100,
        "until": 4102444800,
    } in doc["blacklist"]

    b2 = make_broker()
    api2 = Api(b2.api_port)
    report2 = api2.ok("POST", "/data/import", doc)
    # the fixture's pubsub rule came back as a pub and a sub rule: 4 rules
    assert report2["auth_mnesia"] == 3 and report2["acl_mnesia"] == 4
    # broker 2 also has its own test app; everything from broker 1 came along
    assert report2["apps"] == 3 and report2["blacklist"] == 2
    _check_fixture_applied(b2.port, b2.api_port)
    doc2 = json.loads(
        api2.ok("GET", f"/data/file/{api2.ok('POST', '/data/export')['filename']}")["file"]
    )

    def key(d: dict) -> tuple:
        return (
            sorted((r["login"], r["type"], r["password"]) for r in d["auth_mnesia"]),
            sorted(
                (r["type"], r.get("type_value"), r["topic"], r["action"], r["access"])
                for r in d["acl_mnesia"]
            ),
            sorted(json.dumps(x, sort_keys=True) for x in d["blacklist"]),
            sorted((a["id"], a["secret"], a["status"]) for a in d["apps"]),
        )

    assert key(doc2) == key(doc)


def test_import_by_filename_and_file_handling(make_broker, tmp_path) -> None:
    b = make_broker()
    api = Api(b.api_port)
    r = api.post("/data/file", {"filename": "from-emqx.json", "file": FIXTURE.read_text()})
    assert r.status == 200 and r.data["filename"] == "from-emqx.json"
    assert (b.data_dir / "backup" / "from-emqx.json").is_file()
    report = api.ok(
        "POST", "/data/import", {"filename": "from-emqx.json", "node": "ferrymq@127.0.0.1"}
    )
    assert report["auth_mnesia"] == 3
    wait_for(lambda: _connack(b.port, "c1", "alice", "alice-pw") == 0)

    for bad in ("..%2Fferrymq.db", "x.txt", ".hidden.json", "a%2Fb.json"):
        r = api.get(f"/data/file/{bad}")
        assert (r.status, r.code) == (400, 108), bad
        assert api.delete(f"/data/file/{bad}").status == 400
    r = api.post("/data/import", {"filename": "../ferrymq.db"})
    assert (r.status, r.code) == (400, 108)
    assert api.get("/data/file/missing.json").status == 404
    assert api.post("/data/import", {"filename": "missing.json"}).status == 404
    assert api.post("/data/import", {"filename": "from-emqx.json", "node": "x@y"}).status == 404
    r = api.post("/data/import", {"version": "5.0", "apps": []})
    assert (r.status, r.code) == (400, 108)
    r = api.post("/data/file", {"filename": "broken.json", "file": "{not json"})
    assert (r.status, r.code) == (400, 109)
    assert api.ok("DELETE", "/data/file/from-emqx.json") is None
    assert api.delete("/data/file/from-emqx.json").status == 404
    assert "from-emqx.json" not in [f["filename"] for f in api.ok("GET", "/data/export")]
