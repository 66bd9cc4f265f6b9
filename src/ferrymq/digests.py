"""Digests, keyed digests and random tokens that leave OpenSSL unloaded.

``hashlib``, ``hmac`` and ``secrets`` import ``_hashlib``, which loads and initialises
OpenSSL's libcrypto: 3.6 MiB of RSS, an eighth of a fresh broker's. What a start needs (the
compiled build's source digests, an API app's salted SHA-256, random ids and secrets, the
keys of the credential caches) is here, on CPython's own SHA and BLAKE2 modules, the ones
``hashlib`` falls back to without OpenSSL (``random`` imports ``_sha512`` the same way), and
on ``os.urandom``, which is what ``secrets`` reads. PBKDF2 and TLS still use OpenSSL, loaded
when they are first used. Where CPython's modules are missing, ``hashlib`` steps in.
"""

from __future__ import annotations

import base64
import os
from _operator import _compare_digest
from typing import Any

# Constant time in the length of the inputs, as hmac.compare_digest (the same function where
# OpenSSL is absent).
compare_digest = _compare_digest


def _constructor(modules: tuple[str, ...], name: str) -> Any:
    """``name`` from the first of CPython's ``modules`` present, else hashlib's."""
    for module in modules:
        try:
            return getattr(__import__(module), name)
        except ImportError:
            continue
    import hashlib  # pragma: no cover - a CPython built without its own digests

    return getattr(hashlib, name)  # pragma: no cover


# CPython 3.12 has its SHA-2 digests in ``_sha2``; 3.11 in ``_sha256`` and ``_sha512``.
_sha256 = _constructor(("_sha2", "_sha256"), "sha256")
_sha1 = _constructor(("_sha1",), "sha1")


def sha256_hex(data: bytes) -> str:
    """The SHA-256 of ``data`` in hex."""
    return str(_sha256(data).hexdigest())


def sha1_hex(data: bytes) -> str:
    """The SHA-1 of ``data`` in hex (a fingerprint, not a security measure)."""
    return str(_sha1(data).hexdigest())


def keyed_digest(key: bytes, data: bytes) -> bytes:
    """A MAC of ``data`` under ``key`` (BLAKE2b's keyed mode, 32 bytes): a cache key that
    says nothing about ``data`` to whoever does not hold ``key``. ``_blake2`` is loaded at the
    first call: a broker nobody logs in to never maps it."""
    from _blake2 import blake2b

    return blake2b(data, key=key, digest_size=32).digest()


def token_bytes(nbytes: int) -> bytes:
    """``nbytes`` random bytes from the system's generator, as ``secrets.token_bytes``."""
    return os.urandom(nbytes)


def token_hex(nbytes: int) -> str:
    """``nbytes`` random bytes in hex, as ``secrets.token_hex``."""
    return os.urandom(nbytes).hex()


def token_urlsafe(nbytes: int) -> str:
    """``nbytes`` random bytes in URL-safe base64 without padding, as
    ``secrets.token_urlsafe``."""
    return base64.urlsafe_b64encode(os.urandom(nbytes)).rstrip(b"=").decode("ascii")
