"""An EMQX 4.4 export read in memory: password conversion both ways, bad records skipped."""

from __future__ import annotations

import base64
import hashlib

import pytest

from ferrymq.access.passwords import hash_password, verify_password
from ferrymq.api.backup import password_from_emqx, password_to_emqx


def test_password_forms() -> None:
    salt = bytes.fromhex("5f3a9c01")
    emqx = base64.b64encode(salt + hashlib.sha256(salt + b"pw").hexdigest().encode()).decode()
    ours = password_from_emqx(emqx)
    assert ours == f"sha256$5f3a9c01${hashlib.sha256(salt + b'pw').hexdigest()}"
    assert verify_password("pw", ours) and not verify_password("px", ours)
    assert password_to_emqx(ours) == emqx
    unsalted = base64.b64encode(hashlib.sha256(b"pw").hexdigest().encode()).decode()
    assert verify_password("pw", password_from_emqx(unsalted))
    for algorithm in ("sha256", "pbkdf2", "bcrypt"):
        stored = hash_password(
            "pw", algorithm, **({"iterations": 10} if algorithm == "pbkdf2" else {})
        )
        back = password_from_emqx(password_to_emqx(stored))
        assert verify_password("pw", back), algorithm
    with pytest.raises(ValueError):
        password_from_emqx(base64.b64encode(hashlib.md5(b"pw").hexdigest().encode()).decode())
    with pytest.raises(ValueError):
        password_from_emqx("not base64!")


def test_bad_records_are_skipped_with_reasons() -> None:
    from ferrymq.api.backup import parse_export

    data = parse_export(
        {
            "version": "4.4",
            "apps": [{"id": "a:b", "secret": "s"}, {"id": "ok", "secret": "s", "status": "true"}],
            "auth_mnesia": [{"login": "x", "type": "superuser", "password": "eA=="}, 7],
            "acl_mnesia": [
                {"type": "all", "topic": "a/#/b", "action": "pub", "access": "allow"},
                {
                    "type": "clientid",
                    "type_value": "c",
                    "topic": "t",
                    "action": "x",
                    "access": "allow",
                },
                {
                    "type": "username",
                    "type_value": "u",
                    "topic": "t/+",
                    "action": "subpub",
                    "access": "deny",
                    "created_at": 5,
                },
            ],
            "blacklist": [{"who": "c1"}, {"who": {"peerhost": "nope"}, "at": 1, "until": 2**40}],
            "auth_username": [{"username": "old", "password": "bad base64!"}],
        }
    )
    assert [a["app_id"] for a in data.apps] == ["ok"] and data.apps[0]["enabled"] is True
    assert data.acl == [("username", "u", "t/+", "pubsub", "deny", 5)]
    assert data.auth == [] and data.bans == []
    reasons = [(s["section"], s["reason"]) for s in data.skipped]
    assert len(reasons) == 8, reasons
    assert ("auth_mnesia", "not an object") in reasons
    assert ("blacklist", "peerhost is not an IP address") in reasons
    assert ("auth_username", "password is not base64") in reasons
