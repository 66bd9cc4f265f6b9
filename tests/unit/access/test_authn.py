"""CONNECT authentication: the decision table of API.md and the verification cache."""

from __future__ import annotations

import hashlib

import pytest

from ferrymq.access import authn
from ferrymq.access.authn import Authenticator, AuthResult
from ferrymq.access.passwords import hash_password
from ferrymq.mqtt import reason_codes as rc

OK = (AuthResult.SUCCESS, False)
ANON = (AuthResult.SUCCESS, True)
BAD = (AuthResult.BAD_CREDENTIALS, False)
REFUSED = (AuthResult.NOT_AUTHORIZED, False)


@pytest.fixture
def auth() -> Authenticator:
    a = Authenticator(allow_anonymous=False)
    a.load(
        usernames={"alice": hash_password("alice-pw"), "both-user": hash_password("user-pw")},
        clientids={"dev-1": hash_password("dev-pw"), "both-client": hash_password("client-pw")},
    )
    return a


def test_result_values_are_connack_reason_codes() -> None:
    assert AuthResult.SUCCESS == rc.SUCCESS
    assert AuthResult.BAD_CREDENTIALS == rc.BAD_USERNAME_OR_PASSWORD
    assert AuthResult.NOT_AUTHORIZED == rc.NOT_AUTHORIZED
    assert rc.v3_connack_code(AuthResult.BAD_CREDENTIALS) == 4
    assert rc.v3_connack_code(AuthResult.NOT_AUTHORIZED) == 5


# (client id, username, password, expected (result, anonymous)) with anonymous refused.
DECISIONS = [
    # clientid record
    ("dev-1", None, b"dev-pw", OK),
    ("dev-1", "nobody", b"dev-pw", OK),
    ("dev-1", None, b"wrong", BAD),
    ("dev-1", None, None, BAD),
    ("dev-1", None, b"", BAD),
    # username record
    ("any", "alice", b"alice-pw", OK),
    ("any", "alice", b"wrong", BAD),
    ("any", "alice", None, BAD),
    # both records: either password will do, nothing else
    ("both-client", "both-user", b"client-pw", OK),
    ("both-client", "both-user", b"user-pw", OK),
    ("both-client", "both-user", b"other", BAD),
    ("both-client", "both-user", None, BAD),
    # a record's password does not unlock another record
    ("dev-1", "alice", b"alice-pw", OK),
    ("both-client", "alice", b"dev-pw", BAD),
    # no record at all
    ("stranger", None, None, REFUSED),
    ("stranger", "nobody", b"whatever", REFUSED),
    # the username table is not consulted for the client id, nor the reverse
    ("alice", None, b"alice-pw", REFUSED),
    ("x", "dev-1", b"dev-pw", REFUSED),
]


@pytest.mark.parametrize(("client_id", "username", "password", "expected"), DECISIONS)
def test_decision_table(
    auth: Authenticator,
    client_id: str,
    username: str | None,
    password: bytes | None,
    expected: tuple[AuthResult, bool],
) -> None:
    assert auth.authenticate_ex(client_id, username, password) == expected
    assert auth.authenticate(client_id, username, password) == expected[0]


@pytest.mark.parametrize(("client_id", "username", "password", "expected"), DECISIONS)
def test_anonymous_allowed_changes_only_the_no_record_rows(
    auth: Authenticator,
    client_id: str,
    username: str | None,
    password: bytes | None,
    expected: tuple[AuthResult, bool],
) -> None:
    auth.allow_anonymous = True
    want = ANON if expected == REFUSED else expected
    assert auth.authenticate_ex(client_id, username, password) == want


def test_default_allows_anonymous() -> None:
    a = Authenticator()
    assert a.allow_anonymous
    assert a.authenticate_ex("c", None, None) == ANON
    assert a.authenticate_ex("c", "u", b"p") == ANON


def test_changes_apply_to_the_next_connect(auth: Authenticator) -> None:
    assert auth.authenticate_ex("new", "bob", b"pw") == REFUSED
    auth.set_username("bob", hash_password("pw"))
    assert auth.authenticate_ex("new", "bob", b"pw") == OK
    auth.set_username("bob", hash_password("pw2"))
    assert auth.authenticate_ex("new", "bob", b"pw") == BAD
    assert auth.authenticate_ex("new", "bob", b"pw2") == OK
    auth.remove_username("bob")
    assert auth.authenticate_ex("new", "bob", b"pw2") == REFUSED

    auth.set_clientid("new", hash_password("cpw"))
    assert auth.authenticate_ex("new", None, b"cpw") == OK
    auth.remove_clientid("new")
    assert auth.authenticate_ex("new", None, b"cpw") == REFUSED


def test_remove_unknown_is_harmless(auth: Authenticator) -> None:
    auth.remove_username("ghost")
    auth.remove_clientid("ghost")
    assert auth.authenticate_ex("dev-1", None, b"dev-pw") == OK


def test_load_replaces_tables_and_copies(auth: Authenticator) -> None:
    usernames = {"carol": hash_password("c")}
    auth.load(usernames, {})
    usernames["mallory"] = hash_password("m")
    assert auth.authenticate_ex("x", "carol", b"c") == OK
    assert auth.authenticate_ex("x", "alice", b"alice-pw") == REFUSED
    assert auth.authenticate_ex("dev-1", None, b"dev-pw") == REFUSED
    assert auth.authenticate_ex("x", "mallory", b"m") == REFUSED


def test_str_password_is_accepted(auth: Authenticator) -> None:
    assert auth.authenticate("dev-1", None, "dev-pw") == AuthResult.SUCCESS  # type: ignore[arg-type]


def test_binary_password(auth: Authenticator) -> None:
    auth.set_clientid("bin", hash_password(b"\xff\x00\xfe"))
    assert auth.authenticate("bin", None, b"\xff\x00\xfe") == AuthResult.SUCCESS
    assert auth.authenticate("bin", None, b"\xff\x00") == AuthResult.BAD_CREDENTIALS


def test_malformed_stored_hash_refuses(auth: Authenticator) -> None:
    auth.set_username("broken", "not-a-hash")
    assert auth.authenticate_ex("x", "broken", b"not-a-hash") == BAD


@pytest.mark.parametrize("algorithm", ["pbkdf2", "bcrypt"])
def test_slow_hashes_are_verified_once(
    algorithm: str, auth: Authenticator, monkeypatch: pytest.MonkeyPatch
) -> None:
    auth.set_username("slow", hash_password("pw", algorithm))
    calls: list[str] = []
    real_verify = authn.verify_password

    def counting_verify(password: bytes, stored: str) -> bool:
        calls.append(stored)
        return real_verify(password, stored)

    monkeypatch.setattr(authn, "verify_password", counting_verify)
    for _ in range(3):
        assert auth.authenticate_ex("x", "slow", b"pw") == OK
    assert len(calls) == 1
    # Failures are never cached: each wrong attempt pays the full price.
    for _ in range(2):
        assert auth.authenticate_ex("x", "slow", b"wrong") == BAD
    assert len(calls) == 3
    # A new password (new stored hash) is not served from the old entry.
    auth.set_username("slow", hash_password("pw2", algorithm))
    assert auth.authenticate_ex("x", "slow", b"pw") == BAD
    assert auth.authenticate_ex("x", "slow", b"pw2") == OK


def test_sha256_is_not_cached(auth: Authenticator, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    real_verify = authn.verify_password
    monkeypatch.setattr(authn, "verify_password", lambda p, s: calls.append(s) or real_verify(p, s))
    for _ in range(3):
        assert auth.authenticate_ex("dev-1", None, b"dev-pw") == OK
    assert len(calls) == 3


def test_verified_cache_is_bounded(auth: Authenticator, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(authn, "_VERIFIED_CACHE_MAX", 4)
    for i in range(10):
        auth.set_username(f"u{i}", hash_password(f"p{i}", "pbkdf2", iterations=10))
        assert auth.authenticate(f"c{i}", f"u{i}", f"p{i}".encode()) == AuthResult.SUCCESS
        assert len(auth._verified) <= 4


def test_cache_does_not_hold_the_password(auth: Authenticator) -> None:
    auth.set_username("slow", hash_password("very-secret", "pbkdf2", iterations=10))
    auth.authenticate("x", "slow", b"very-secret")
    ((stored, digest),) = auth._verified
    assert stored == auth_stored(auth, "slow")
    assert b"very-secret" not in digest
    assert digest != hashlib.sha256(b"very-secret").digest()


def auth_stored(auth: Authenticator, username: str) -> str:
    return auth._usernames[username]
