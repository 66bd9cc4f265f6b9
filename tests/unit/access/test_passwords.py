"""Password hashing: round trips, refusals, salts, and never raising on bad rows."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ferrymq.access import passwords
from ferrymq.access.passwords import ALGORITHMS, hash_password, new_secret, verify_password

# pbkdf2 is exercised with few iterations to keep the suite fast; the default
# count has its own test.
FAST_PBKDF2 = 1000


def make_hash(password: str | bytes, algorithm: str) -> str:
    if algorithm == "pbkdf2":
        return hash_password(password, algorithm, iterations=FAST_PBKDF2)
    return hash_password(password, algorithm)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_round_trip(algorithm: str) -> None:
    stored = make_hash("s3cret-pässword", algorithm)
    assert stored.startswith(algorithm + "$")
    assert "s3cret" not in stored
    assert verify_password("s3cret-pässword", stored)
    assert verify_password("s3cret-pässword".encode(), stored)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_wrong_password_is_refused(algorithm: str) -> None:
    stored = make_hash("right", algorithm)
    assert not verify_password("wrong", stored)
    assert not verify_password("Right", stored)
    assert not verify_password("", stored)
    assert not verify_password(b"right!", stored)
    assert not verify_password("righ", stored)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_empty_password_round_trip(algorithm: str) -> None:
    stored = make_hash("", algorithm)
    assert verify_password("", stored)
    assert not verify_password("x", stored)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_salts_differ(algorithm: str) -> None:
    first = make_hash("same", algorithm)
    second = make_hash("same", algorithm)
    assert first != second
    assert verify_password("same", first)
    assert verify_password("same", second)


def test_sha256_format_is_salted_sha256_of_salt_plus_password() -> None:
    stored = hash_password("pw")
    scheme, salt_hex, digest_hex = stored.split("$")
    assert scheme == "sha256"
    assert len(bytes.fromhex(salt_hex)) == passwords.SALT_BYTES
    assert digest_hex == hashlib.sha256(bytes.fromhex(salt_hex) + b"pw").hexdigest()


def test_sha256_accepts_uppercase_digest() -> None:
    scheme, salt_hex, digest_hex = hash_password("pw").split("$")
    assert verify_password("pw", f"{scheme}${salt_hex}${digest_hex.upper()}")


def test_pbkdf2_format_and_default_iterations() -> None:
    stored = hash_password("pw", "pbkdf2")
    scheme, digest, rounds, salt_hex, key_hex = stored.split("$")
    assert (scheme, digest, int(rounds)) == ("pbkdf2", "sha256", passwords.PBKDF2_ITERATIONS)
    expected = hashlib.pbkdf2_hmac("sha256", b"pw", bytes.fromhex(salt_hex), int(rounds))
    assert key_hex == expected.hex()
    assert verify_password("pw", stored)


def test_pbkdf2_verifies_other_digests_and_key_lengths() -> None:
    salt = b"0123456789abcdef"
    key = hashlib.pbkdf2_hmac("sha512", b"pw", salt, 10, dklen=20)
    stored = f"pbkdf2$sha512$10${salt.hex()}${key.hex()}"
    assert verify_password("pw", stored)
    assert not verify_password("pv", stored)


def test_pbkdf2_rejects_bad_iteration_count_on_hashing() -> None:
    with pytest.raises(ValueError):
        hash_password("pw", "pbkdf2", iterations=0)


def test_bcrypt_format() -> None:
    stored = hash_password("pw", "bcrypt")
    assert stored.startswith("bcrypt$$2")
    assert f"${passwords.BCRYPT_ROUNDS:02d}$" in stored


def test_bcrypt_uses_first_72_bytes() -> None:
    long_password = "x" * 72
    stored = hash_password(long_password + "tail", "bcrypt")
    assert verify_password(long_password + "other", stored)
    assert not verify_password("x" * 71, stored)


def test_unknown_algorithm_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="md5"):
        hash_password("pw", "md5")


def test_non_string_password_is_a_type_error() -> None:
    with pytest.raises(TypeError):
        hash_password(123)  # type: ignore[arg-type]


def test_bcrypt_missing_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "bcrypt", None)
    with pytest.raises(RuntimeError, match="bcrypt"):
        hash_password("pw", "bcrypt")
    # Verification of a bcrypt row without the library is a failed check.
    assert not verify_password("pw", "bcrypt$$2b$10$abcdefghijklmnopqrstuu")


SALT = "00" * 16
MALFORMED = [
    "",
    "plain-text-password",
    "sha256",
    "sha256$",
    f"sha256${SALT}",
    f"sha256$zz${'0' * 64}",
    f"sha256${SALT}${'0' * 64}$extra",
    f"sha256${SALT}$\u00e9\u00e9",
    "md5$abc$def",
    "pbkdf2$sha256$1000$00",
    f"pbkdf2$sha256$notanumber${SALT}$00",
    f"pbkdf2$sha256$0${SALT}$00",
    f"pbkdf2$sha256$-5${SALT}$00",
    f"pbkdf2$sha256$999999999999${SALT}$00",
    f"pbkdf2$md4$1000${SALT}$00",
    f"pbkdf2$sha256$1000${SALT}$",
    "pbkdf2$sha256$1000$xyz$00",
    "bcrypt$",
    "bcrypt$not-a-bcrypt-hash",
    "bcrypt$$2b$10$short",
    "bcrypt$\u00e9",
    "$$$$",
]


@pytest.mark.parametrize("stored", MALFORMED)
def test_malformed_stored_string_is_false(stored: str) -> None:
    assert verify_password("pw", stored) is False
    assert verify_password("", stored) is False


@pytest.mark.parametrize("stored", [None, 42, b"sha256$00$00"])
def test_non_string_stored_is_false(stored: object) -> None:
    assert verify_password("pw", stored) is False  # type: ignore[arg-type]


@settings(max_examples=200, deadline=None)
@given(password=st.text(), other=st.text())
def test_sha256_round_trip_property(password: str, other: str) -> None:
    stored = hash_password(password)
    assert verify_password(password, stored)
    assert verify_password(other, stored) == (other == password)


@settings(max_examples=30, deadline=None)
@given(password=st.binary())
def test_pbkdf2_round_trip_binary_property(password: bytes) -> None:
    stored = hash_password(password, "pbkdf2", iterations=10)
    assert verify_password(password, stored)
    assert not verify_password(password + b"!", stored)


@settings(max_examples=100)
@given(stored=st.text())
def test_verify_never_raises(stored: str) -> None:
    assert verify_password("pw", stored) in (True, False)
    for prefix in ("sha256$", "pbkdf2$", "bcrypt$", "pbkdf2$sha256$1$"):
        assert verify_password("pw", prefix + stored) in (True, False)


def test_new_secret() -> None:
    a, b = new_secret(), new_secret()
    assert a != b
    assert len(a) == 32  # 24 bytes in URL-safe base64
    assert set(a) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
    assert len(new_secret(48)) == 64
