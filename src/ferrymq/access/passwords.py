"""Password hashing for MQTT credentials and API app secrets.

Stored hashes are self-describing strings, so the algorithm can change without
a migration and every record keeps verifying with the algorithm it was made with:

- ``sha256$<salt hex>$<digest hex>``: ``sha256(salt + password)`` with a random
  16-byte salt, the salted scheme EMQX uses. Cheap enough for every CONNECT.
- ``pbkdf2$<digest>$<iterations>$<salt hex>$<key hex>``: ``hashlib.pbkdf2_hmac``
  with a 16-byte salt and a 32-byte key; new hashes use sha256 and
  ``PBKDF2_ITERATIONS`` rounds.
- ``bcrypt$<bcrypt hash>``: the optional ``bcrypt`` package, ``BCRYPT_ROUNDS``
  cost. bcrypt only reads the first 72 bytes of a password; longer passwords
  are cut there on both hashing and checking, as classic bcrypt does.

``verify_password`` never raises: a malformed or unsupported stored string is
simply a failed check, so a bad database row cannot crash a CONNECT.
"""

from __future__ import annotations

from types import ModuleType

from ferrymq.digests import compare_digest, sha256_hex, token_bytes, token_urlsafe

ALGORITHMS = ("sha256", "pbkdf2", "bcrypt")

SALT_BYTES = 16
# 100k rounds of HMAC-SHA256 cost tens of milliseconds: slow for an attacker
# with a stolen database, tolerable for a CONNECT because successful checks
# are cached by the Authenticator.
PBKDF2_ITERATIONS = 100_000
_PBKDF2_DIGESTS = frozenset(("sha1", "sha256", "sha512"))
# Refuse absurd iteration counts from a corrupt row instead of stalling.
_PBKDF2_MAX_ITERATIONS = 10_000_000
# EMQX's default cost factor; each +1 doubles the time (10 is ~50-80 ms).
BCRYPT_ROUNDS = 10
_BCRYPT_MAX_BYTES = 72


def _to_bytes(password: str | bytes) -> bytes:
    if isinstance(password, bytes):
        return password
    if isinstance(password, str):
        return password.encode("utf-8")
    raise TypeError(f"password must be str or bytes, not {type(password).__name__}")


def _pbkdf2_hmac(
    digest: str, password: bytes, salt: bytes, rounds: int, dklen: int | None = None
) -> bytes:
    """OpenSSL's PBKDF2, imported with the first pbkdf2 hash made or checked (hashlib loads
    libcrypto: 3.6 MiB a broker without pbkdf2 hashes does without)."""
    import hashlib

    return hashlib.pbkdf2_hmac(digest, password, salt, rounds, dklen)


def _bcrypt() -> ModuleType:
    try:
        import bcrypt
    except ImportError as exc:
        raise RuntimeError(
            "the bcrypt algorithm needs the 'bcrypt' package (pip install 'ferrymq[bcrypt]')"
        ) from exc
    return bcrypt


def hash_password(
    password: str | bytes, algorithm: str = "sha256", *, iterations: int | None = None
) -> str:
    """Hash ``password`` with a fresh random salt into a self-describing string.

    ``iterations`` only applies to pbkdf2 (default ``PBKDF2_ITERATIONS``).
    Raises ValueError for an unknown algorithm and RuntimeError when bcrypt is
    requested but not installed.
    """
    pw = _to_bytes(password)
    if algorithm == "sha256":
        salt = token_bytes(SALT_BYTES)
        return f"sha256${salt.hex()}${sha256_hex(salt + pw)}"
    if algorithm == "pbkdf2":
        rounds = PBKDF2_ITERATIONS if iterations is None else iterations
        if not 1 <= rounds <= _PBKDF2_MAX_ITERATIONS:
            raise ValueError(f"pbkdf2 iterations must be in 1..{_PBKDF2_MAX_ITERATIONS}")
        salt = token_bytes(SALT_BYTES)
        key = _pbkdf2_hmac("sha256", pw, salt, rounds)
        return f"pbkdf2$sha256${rounds}${salt.hex()}${key.hex()}"
    if algorithm == "bcrypt":
        bcrypt = _bcrypt()
        hashed = bcrypt.hashpw(pw[:_BCRYPT_MAX_BYTES], bcrypt.gensalt(rounds=BCRYPT_ROUNDS))
        return "bcrypt$" + hashed.decode("ascii")
    raise ValueError(f"unknown password algorithm {algorithm!r}; choose one of {ALGORITHMS}")


def verify_password(password: str | bytes, stored: str) -> bool:
    """True when ``password`` matches ``stored``; False for any malformed input."""
    try:
        pw = _to_bytes(password)
        scheme, _, rest = stored.partition("$")
        if scheme == "sha256":
            salt_hex, sep, digest_hex = rest.partition("$")
            if not sep or "$" in digest_hex:
                return False
            computed = sha256_hex(bytes.fromhex(salt_hex) + pw)
            return compare_digest(computed, digest_hex.lower())
        if scheme == "pbkdf2":
            digest, rounds_s, salt_hex, key_hex = rest.split("$")
            rounds = int(rounds_s)
            if digest not in _PBKDF2_DIGESTS or not 1 <= rounds <= _PBKDF2_MAX_ITERATIONS:
                return False
            expected = bytes.fromhex(key_hex)
            if not expected:
                return False
            key = _pbkdf2_hmac(digest, pw, bytes.fromhex(salt_hex), rounds, dklen=len(expected))
            return compare_digest(key, expected)
        if scheme == "bcrypt":
            return bool(_bcrypt().checkpw(pw[:_BCRYPT_MAX_BYTES], rest.encode("ascii")))
    except (ValueError, TypeError, RuntimeError, AttributeError):
        return False
    return False


def new_secret(nbytes: int = 24) -> str:
    """A URL-safe random secret (``nbytes`` of entropy), e.g. for API app secrets."""
    return token_urlsafe(nbytes)
