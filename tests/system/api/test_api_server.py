"""The API server's own settings on dedicated brokers: persistence across restarts,
strict access settings, slow password hashes, the first-start app, HTTPS, API off."""

from __future__ import annotations

import contextlib
import re
import shutil
import socket
import sqlite3
import subprocess

import pytest

from api_http import Api, wait_for
from clients import TestClient
from ferrymq.cli import main

NO_APP = {"FERRYMQ_API_APP_ID": "", "FERRYMQ_API_APP_SECRET": ""}


def _connack(port: int, client_id: str, username: str | None, password: str | None) -> int:
    t = TestClient(client_id)
    if username is not None:
        t.c.username_pw_set(username, password)
    rc = t.connect(port, expect_rc=None)[1]
    value = int(rc.value if hasattr(rc, "value") else rc)
    if value == 0:
        t.disconnect()
    else:
        # Stop paho reconnecting; its thread then ends by itself (joining it can take 1 s).
        t.c.disconnect()
    return value


def _suback(port: int, client_id: str, username: str, password: str, topic: str) -> int:
    t = TestClient(client_id)
    t.c.username_pw_set(username, password)
    t.connect(port)
    code = int(t.subscribe(topic, 1)[0].value)
    t.disconnect()
    return code


def _stored_hash(db, username: str) -> str:
    with contextlib.closing(sqlite3.connect(db)) as conn:
        row = conn.execute(
            "SELECT password_hash FROM auth WHERE kind = 'username' AND subject = ?", (username,)
        ).fetchone()
    return row[0]


def test_strict_broker_and_restart(make_broker) -> None:
    b = make_broker("--no-allow-anonymous", "--acl-nomatch", "deny", "--password-hash", "pbkdf2")
    api = Api(b.api_port)
    # no record at all: refused as not authorised (v3 return code 5)
    assert _connack(b.port, "anon", None, None) == 0x87
    before = api.metrics()
    api.ok("POST", "/auth_username", {"username": "ann", "password": "pw"})
    stored = b.data_dir / "ferrymq.db"
    assert _stored_hash(stored, "ann").startswith("pbkdf2$")
    assert "password" not in api.ok("GET", "/auth_username/ann")  # never returned
    assert _connack(b.port, "c1", "ann", "nope") == 0x86
    assert _connack(b.port, "c1", "ann", "pw") == 0
    # acl_nomatch = deny: only what a rule allows
    assert _suback(b.port, "c2", "ann", "pw", "ann/inbox") == 0x80
    api.ok("POST", "/acl", {"username": "ann", "topic": "%u/#", "action": "sub", "access": "allow"})
    assert _suback(b.port, "c2", "ann", "pw", "ann/inbox") == 1
    assert _suback(b.port, "c2", "ann", "pw", "bob/inbox") == 0x80
    after = api.metrics()
    assert after["client.auth.anonymous"] == before["client.auth.anonymous"]
    assert after["client.connected"] == before["client.connected"] + 4
    # the command line writes a bcrypt user into the same data directory
    env_hash = "FERRYMQ_PASSWORD_HASH"
    import os

    os.environ[env_hash] = "bcrypt"
    try:
        assert main(["users", "add", "bea", "-p", "pw2", "--data-dir", str(b.data_dir)]) == 0
    finally:
        del os.environ[env_hash]
    assert _stored_hash(stored, "bea").startswith("bcrypt$")
    wait_for(lambda: _connack(b.port, "c3", "bea", "pw2") == 0, timeout=5)
    # everything survives a restart
    b.restart()
    api = Api(b.api_port)
    assert _connack(b.port, "c4", "ann", "pw") == 0
    assert _connack(b.port, "c4", "ann", "nope") == 0x86
    assert _connack(b.port, "c5", "bea", "pw2") == 0
    assert _connack(b.port, "anon", None, None) == 0x87
    assert _suback(b.port, "c6", "ann", "pw", "ann/x") == 1
    assert _suback(b.port, "c6", "ann", "pw", "other") == 0x80
    (rule,) = api.ok("GET", "/acl/username/ann")
    assert rule.pop("created_at") > 0
    assert rule == {"username": "ann", "topic": "%u/#", "action": "sub", "access": "allow"}


def _cert(tmp_path) -> tuple[str, str]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    cert, key = tmp_path / "api.pem", tmp_path / "api.key"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )
    return str(cert), str(key)


def test_first_start_app_printed_once_and_https(make_broker, tmp_path) -> None:
    cert, key = _cert(tmp_path)
    b = make_broker("--api-certfile", cert, "--api-keyfile", key, env=NO_APP)
    log = b.log()
    app_id = re.search(r"AppID:\s+(\S+)", log).group(1)  # type: ignore[union-attr]
    secret = re.search(r"AppSecret:\s+(\S+)", log).group(1)  # type: ignore[union-attr]
    assert f"curl -k -u {app_id}:{secret} https://127.0.0.1:{b.api_port}/api/v4/clients" in log
    api = Api(b.api_port, auth=(app_id, secret), https=True)
    assert api.get("/clients").json["code"] == 0
    assert (
        Api(b.api_port, auth=("test-app", "test-secret"), https=True).get("/clients").status == 401
    )
    with pytest.raises((ConnectionError, OSError)):
        Api(b.api_port).get("/clients")  # plain HTTP is not served
    b.restart()
    assert b.log().count("AppSecret:") == 1  # printed once, on the very first start only
    assert b.log().count(secret) == 2  # that line and the curl hint, nowhere else
    assert Api(b.api_port, auth=(app_id, secret), https=True).get("/clients").status == 200


def test_configured_app_secret_is_applied(make_broker) -> None:
    b = make_broker(env={"FERRYMQ_API_APP_ID": "ops", "FERRYMQ_API_APP_SECRET": "first"})
    assert Api(b.api_port, auth=("ops", "first")).get("/metrics").status == 200
    assert "AppSecret" not in b.log() and "first" not in b.log()
    b.env["FERRYMQ_API_APP_SECRET"] = "second"
    b.restart()
    assert Api(b.api_port, auth=("ops", "second")).get("/metrics").status == 200
    assert Api(b.api_port, auth=("ops", "first")).get("/metrics").status == 401


def test_api_port_zero_disables_the_api(make_broker) -> None:
    b = make_broker("--api-port", "0")
    assert "management API disabled" in b.log()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", b.api_port), timeout=0.5).close()
