"""The forms of ``cluster_redis_url``, checked at start, and the client each one makes.

- ``redis://[[user]:password@]host[:port][/db][?option=value...]``: one Redis;
- ``rediss://...``: the same over TLS, with redis-py's ``ssl_*`` query options
  (``ssl_cert_reqs=required|optional|none``, ``ssl_ca_certs=/path/ca.pem``,
  ``ssl_certfile``, ``ssl_keyfile``, ``ssl_check_hostname=false``, ...);
- ``redis+sentinel://[[user]:password@]host1[:26379][,host2[:port]...]/master-name[/db]``:
  a highly available Redis found through its Sentinels (redis-py's asyncio
  ``Sentinel``); the password is the master's, ``?sentinel_password=...`` the
  Sentinels' own if they have one. Every new connection asks the Sentinels
  for the current master, so after a failover the node's usual reconnect
  finds the new one;
- ``rediss+sentinel://...``: the same over TLS, to the Sentinels and to the
  master they name, with one set of ``ssl_*`` options for both (redis-py's
  ``Sentinel`` with ``sentinel_kwargs`` for its own connections);
  ``ssl_for=sentinels`` keeps TLS to the Sentinels alone (a plain master behind
  them), ``ssl_for=master`` to the master alone (plain Sentinels).

A malformed URL is refused before the node starts (``BadRedisUrl``, a
configuration error) rather than on its first connection attempt.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, unquote

import redis
from redis import asyncio as aioredis
from redis.asyncio.sentinel import Sentinel
from redis.exceptions import RedisError
from redis.sentinel import Sentinel as SyncSentinel

from ferrymq.config import ConfigError

SENTINEL_PORT = 26379
SCHEMES = ("redis", "rediss", "redis+sentinel", "rediss+sentinel")
_TLS = ("rediss", "rediss+sentinel")
_SENTINEL = ("redis+sentinel", "rediss+sentinel")
# Query options accepted, with their value check (redis-py's names).
_BOOL = ("true", "false", "1", "0", "yes", "no")
#: ``ssl_for``: which side of a Sentinel-found Redis speaks TLS (ours, not redis-py's).
SSL_FOR = ("both", "sentinels", "master")
_OPTIONS: dict[str, tuple[str, ...] | type] = {
    "socket_timeout": float,
    "socket_connect_timeout": float,
    "health_check_interval": int,
    "client_name": str,
    "ssl_cert_reqs": ("none", "optional", "required"),
    "ssl_ca_certs": str,
    "ssl_ca_path": str,
    "ssl_certfile": str,
    "ssl_keyfile": str,
    "ssl_password": str,
    "ssl_check_hostname": _BOOL,
    "ssl_ciphers": str,
    "sentinel_password": str,
    "ssl_for": SSL_FOR,
}


class BadRedisUrl(ConfigError):
    """``cluster_redis_url`` is not one of the forms above."""


@dataclass(frozen=True)
class RedisTarget:
    """A parsed ``cluster_redis_url``."""

    url: str
    scheme: str
    sentinels: tuple[tuple[str, int], ...] = ()  # redis(s)+sentinel only
    master: str = ""  # redis(s)+sentinel only
    db: int = 0
    username: str | None = None
    password: str | None = None
    options: dict[str, str] = field(default_factory=dict)


def _fail(url: str, why: str) -> BadRedisUrl:
    return BadRedisUrl(f"cluster_redis_url {safe_url(url)!r}: {why}")


def _host_port(url: str, text: str, default: int) -> tuple[str, int]:
    if text.startswith("["):  # [IPv6]:port
        host, sep, rest = text[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise _fail(url, f"bad address {text!r}")
        port_text = rest[1:]
    else:
        host, _, port_text = text.partition(":")
    if not host:
        raise _fail(url, f"no host in {text!r}")
    if not port_text:
        return host, default
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise _fail(url, f"bad port in {text!r}")
    return host, int(port_text)


def _db(url: str, text: str) -> int:
    if not text:
        return 0
    if not text.isdigit():
        raise _fail(url, f"the database must be a number, not {text!r}")
    return int(text)


def parse(url: str) -> RedisTarget:
    """Check ``url``; raises ``BadRedisUrl`` saying what is wrong."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in SCHEMES:
        raise _fail(
            url, "must start with redis://, rediss://, redis+sentinel:// or rediss+sentinel://"
        )
    rest, _, query = rest.partition("?")
    netloc, _, path = rest.partition("/")
    username = password = None
    if "@" in netloc:
        userinfo, netloc = netloc.rsplit("@", 1)
        user, has_password, secret = userinfo.partition(":")
        username = unquote(user) or None
        password = unquote(secret) if has_password else None
    options: dict[str, str] = {}
    for name, value in parse_qsl(query, keep_blank_values=True):
        check = _OPTIONS.get(name)
        if check is None:
            raise _fail(url, f"unknown option {name!r}")
        if name.startswith("ssl_") and scheme not in _TLS:
            raise _fail(url, f"{name} needs rediss:// or rediss+sentinel:// (TLS)")
        if name == "sentinel_password" and scheme not in _SENTINEL:
            raise _fail(url, "sentinel_password needs redis+sentinel:// or rediss+sentinel://")
        if name == "ssl_for" and scheme != "rediss+sentinel":
            raise _fail(url, "ssl_for needs rediss+sentinel:// (TLS behind Sentinels)")
        if isinstance(check, tuple) and value.lower() not in check:
            raise _fail(url, f"{name} must be one of {', '.join(check)}, not {value!r}")
        if check in (int, float):
            try:
                check(value)  # type: ignore[operator]
            except ValueError:
                raise _fail(url, f"{name} must be a number, not {value!r}") from None
        options[name] = value
    if scheme in _SENTINEL:
        if not netloc:
            raise _fail(url, "no Sentinel address")
        sentinels = tuple(_host_port(url, h, SENTINEL_PORT) for h in netloc.split(","))
        master, _, db_text = path.partition("/")
        if not master:
            raise _fail(url, f"no master name: {scheme}://host:26379/<master-name>[/db]")
        if "/" in db_text:
            raise _fail(url, "the path is /<master-name>[/<db>]")
        return RedisTarget(
            url, scheme, sentinels, unquote(master), _db(url, db_text), username, password, options
        )
    if "," in netloc:
        raise _fail(url, "several hosts need redis+sentinel://")
    _host_port(url, netloc, 6379)
    if "/" in path:
        raise _fail(url, "the path is /<db>")
    return RedisTarget(
        url, scheme, db=_db(url, path), username=username, password=password, options=options
    )


def client(target: RedisTarget, **kwargs: Any) -> aioredis.Redis:
    """A client of ``target`` (not connected yet); ``kwargs`` are connection options the
    URL's own options override. Close it with ``close``."""
    if target.scheme not in _SENTINEL:
        return aioredis.from_url(target.url, **kwargs)
    sentinels, sentinel_kwargs, kwargs = _sentinel_options(target, kwargs)
    return Sentinel(sentinels, sentinel_kwargs=sentinel_kwargs).master_for(target.master, **kwargs)


def sync_client(target: RedisTarget, **kwargs: Any) -> redis.Redis:
    """A blocking client of ``target``, for a thread of its own (the heartbeat's)."""
    if target.scheme not in _SENTINEL:
        return redis.Redis.from_url(target.url, **kwargs)
    sentinels, sentinel_kwargs, kwargs = _sentinel_options(target, kwargs)
    return SyncSentinel(sentinels, sentinel_kwargs=sentinel_kwargs).master_for(
        target.master, **kwargs
    )


def _sentinel_options(
    target: RedisTarget, kwargs: dict[str, Any]
) -> tuple[list[tuple[str, int]], dict[str, Any], dict[str, Any]]:
    """The Sentinels, their connections' options and the master's, for ``target``."""
    options = dict(target.options)
    sentinel_password = options.pop("sentinel_password", None)
    timeouts = {k: v for k, v in kwargs.items() if k.startswith("socket_")}
    for name in ("socket_timeout", "socket_connect_timeout"):
        if name in options:
            kwargs[name] = timeouts[name] = float(options.pop(name))
    if "health_check_interval" in options:
        kwargs["health_check_interval"] = int(options.pop("health_check_interval"))
    side = options.pop("ssl_for", "both").lower()
    tls = _tls_options(options) if target.scheme in _TLS else {}
    kwargs.update(options)
    if side != "sentinels":
        kwargs.update(tls)
    sentinel_tls = tls if side != "master" else {}
    master = {"db": target.db, "username": target.username, "password": target.password}
    sentinel_kwargs = {**timeouts, **sentinel_tls, "password": sentinel_password}
    return list(target.sentinels), sentinel_kwargs, {**master, **kwargs}


def _tls_options(options: dict[str, str]) -> dict[str, Any]:
    """The ``ssl_*`` options taken out of ``options``, typed as redis-py's connections take
    them (``from_url`` does this for the other forms), with ``ssl`` on."""
    tls: dict[str, Any] = {"ssl": True}
    for name in [n for n in options if n.startswith("ssl_")]:
        value = options.pop(name)
        tls[name] = value.lower() in ("true", "1", "yes") if name == "ssl_check_hostname" else value
    return tls


async def close(redis: aioredis.Redis) -> None:
    """Close ``redis`` and, for a Sentinel-found master, its Sentinel connections too."""
    manager = getattr(redis.connection_pool, "sentinel_manager", None)
    await redis.aclose()
    for sentinel in getattr(manager, "sentinels", ()):
        with contextlib.suppress(RedisError, OSError):
            await sentinel.aclose()


def safe_url(url: str) -> str:
    """``url`` without its password, for logs and errors."""
    scheme, sep, rest = url.partition("://")
    rest, qsep, query = rest.partition("?")
    netloc, psep, path = rest.partition("/")
    if "@" in netloc:
        netloc = "***@" + netloc.rsplit("@", 1)[1]
    if "password=" in query:
        query = "&".join(
            f"{k}=***" if k.endswith("password") else f"{k}={v}"
            for k, v in parse_qsl(query, keep_blank_values=True)
        )
    return scheme + sep + netloc + psep + path + qsep + query
