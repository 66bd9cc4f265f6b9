"""``ferrymq users|acl|apps`` on the data directory of a running broker: applied within a second."""

from __future__ import annotations

import pytest

from api_http import Api, wait_for
from clients import TestClient
from ferrymq.cli import main


@pytest.fixture
def api(broker) -> Api:
    return Api(broker.api_port)


def run(broker, *args: str) -> int:
    return main([*args, "--data-dir", str(broker.data_dir)])


def _connack(port: int, client_id: str, username: str, password: str) -> int:
    t = TestClient(client_id)
    t.c.username_pw_set(username, password)
    rc = t.connect(port, expect_rc=None)[1]
    value = int(rc.value if hasattr(rc, "value") else rc)
    if value == 0:
        t.disconnect()
    else:
        # Stop paho reconnecting; its thread then ends by itself (joining it can take 1 s).
        t.c.disconnect()
    return value


def test_users(broker, api: Api, uid: str, capsys) -> None:
    user = f"{uid}-cli"
    assert run(broker, "users", "add", user, "--password", "one") == 0
    assert run(broker, "users", "add", user, "--password", "two") == 1
    assert "already exists" in capsys.readouterr().err
    wait_for(lambda: _connack(broker.port, f"{uid}-c1", user, "wrong") == 0x86, timeout=5)
    assert _connack(broker.port, f"{uid}-c2", user, "one") == 0
    assert user in _subjects(api.ok("GET", "/auth_username"), "username")  # the API's data
    assert run(broker, "users", "passwd", user, "-p", "two") == 0
    wait_for(lambda: _connack(broker.port, f"{uid}-c3", user, "two") == 0, timeout=5)
    capsys.readouterr()
    assert run(broker, "users", "list") == 0
    assert user in capsys.readouterr().out
    assert run(broker, "users", "delete", user) == 0
    assert run(broker, "users", "delete", user) == 1
    wait_for(lambda: user not in _subjects(api.ok("GET", "/auth_username"), "username"))
    assert run(broker, "users", "add", f"{uid}-dev", "--clientid", "-p", "x") == 0
    assert api.ok("GET", f"/auth_clientid/{uid}-dev")["clientid"] == f"{uid}-dev"
    assert run(broker, "users", "delete", f"{uid}-dev", "--clientid") == 0


def _subjects(items: list[dict], key: str) -> list[str]:
    return [item[key] for item in items]


def test_acl(broker, api: Api, uid: str, capsys) -> None:
    cid = f"{uid}-acl"
    assert run(broker, "acl", "add", "--clientid", cid, f"{uid}/%c/#", "sub", "deny") == 0
    captured = capsys.readouterr()
    assert "(added)" in captured.out
    assert str(broker.data_dir.resolve()) in captured.err  # says which database it used
    t = TestClient(cid)
    t.connect(broker.port)

    def refused() -> bool:
        return [int(c.value) for c in t.subscribe(f"{uid}/{cid}/x", 0)] == [0x80]

    wait_for(refused, timeout=5, interval=0.2)
    assert api.ok("GET", f"/acl/clientid/{cid}")[0]["topic"] == f"{uid}/%c/#"
    capsys.readouterr()
    assert run(broker, "acl", "list", "--clientid", cid) == 0
    assert f"{uid}/%c/#" in capsys.readouterr().out
    assert run(broker, "acl", "delete", "--clientid", cid, f"{uid}/%c/#") == 0
    assert run(broker, "acl", "delete", "--clientid", cid, f"{uid}/%c/#") == 1
    wait_for(lambda: not refused(), timeout=5, interval=0.2)
    t.disconnect()
    assert run(broker, "acl", "add", "--username", "u", "a/#/b", "pub", "allow") == 2
    assert run(broker, "acl", "add", f"{uid}/all", "pubsub", "deny") == 0
    capsys.readouterr()
    assert run(broker, "acl", "add", f"{uid}/all", "pub", "allow") == 0
    assert "(replaced)" in capsys.readouterr().out
    listed = [
        (r["topic"], r["action"], r["access"]) for r in api.ok("GET", f"/acl/$all?topic={uid}/all")
    ]
    assert listed == [(f"{uid}/all", "pub", "allow"), (f"{uid}/all", "sub", "deny")]
    assert run(broker, "acl", "delete", f"{uid}/all") == 0


def test_apps(broker, api: Api, uid: str, capsys) -> None:
    app_id = f"{uid}-app"
    assert run(broker, "apps", "add", "scripts", "--id", app_id) == 0
    out = capsys.readouterr().out
    secret = next(line.split()[1] for line in out.splitlines() if line.startswith("AppSecret:"))
    mine = Api(broker.api_port, auth=(app_id, secret))
    assert mine.get("/metrics").status == 200
    assert Api(broker.api_port, auth=(app_id, "wrong")).get("/metrics").status == 401
    assert run(broker, "apps", "add", "again", "--id", app_id) == 1
    assert run(broker, "apps", "list") == 0
    listing = capsys.readouterr().out
    assert app_id in listing and secret not in listing
    assert run(broker, "apps", "disable", app_id) == 0
    wait_for(lambda: mine.get("/metrics").status == 401, timeout=5)
    assert run(broker, "apps", "enable", app_id) == 0
    wait_for(lambda: mine.get("/metrics").status == 200, timeout=5)
    assert run(broker, "apps", "delete", app_id) == 0
    wait_for(lambda: mine.get("/metrics").status == 401, timeout=5)
    assert run(broker, "apps", "delete", app_id) == 1
    assert run(broker, "apps", "enable", app_id) == 1
    assert api.get("/metrics").status == 200  # the configured app is untouched
