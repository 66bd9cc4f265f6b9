"""The forms of ``cluster_redis_url``: what each one parses to, the errors a malformed one
gets at start, and the client each one makes (not connected: no Redis needed)."""

from __future__ import annotations

import asyncio

import pytest
from redis.asyncio.sentinel import SentinelConnectionPool

from ferrymq.cluster.redis_url import BadRedisUrl, client, close, parse, safe_url
from ferrymq.config import ConfigError


def test_plain_and_tls_urls() -> None:
    t = parse("redis://:secret@10.0.0.5:6380/2")
    assert (t.scheme, t.db, t.password, t.username, t.sentinels) == ("redis", 2, "secret", None, ())
    assert parse("redis://localhost").db == 0
    t = parse(
        "rediss://user:pw@redis.example:6379/0?ssl_ca_certs=/etc/ca.pem&ssl_cert_reqs=required"
    )
    assert (t.scheme, t.username, t.password) == ("rediss", "user", "pw")
    assert t.options == {"ssl_ca_certs": "/etc/ca.pem", "ssl_cert_reqs": "required"}


def test_sentinel_urls() -> None:
    t = parse("redis+sentinel://:pw@s1:26380,s2,[::1]:26381/mymaster/3?sentinel_password=sp")
    assert t.sentinels == (("s1", 26380), ("s2", 26379), ("::1", 26381))
    assert (t.master, t.db, t.password) == ("mymaster", 3, "pw")
    assert t.options == {"sentinel_password": "sp"}
    assert parse("redis+sentinel://s1/mymaster").db == 0


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("http://host:6379", "must start with"),
        ("host:6379", "must start with"),
        ("redis://host:99999/0", "bad port"),
        ("redis://host:abc/0", "bad port"),
        ("redis://:pw@/0", "no host"),
        ("redis://host/zero", "database must be a number"),
        ("redis://host/0/1", "the path is /<db>"),
        ("redis://a:1,b:2/0", "several hosts need redis+sentinel"),
        ("redis://host/0?ssl_ca_certs=/ca.pem", "needs rediss://"),
        ("rediss://host/0?ssl_cert_reqs=maybe", "ssl_cert_reqs must be one of"),
        ("rediss://host/0?socket_timeout=soon", "socket_timeout must be a number"),
        ("redis://host/0?colour=blue", "unknown option 'colour'"),
        ("redis://host/0?sentinel_password=x", "needs redis+sentinel"),
        ("redis+sentinel://s1:26379", "no master name"),
        ("redis+sentinel://s1:26379/", "no master name"),
        ("redis+sentinel:///mymaster", "no Sentinel address"),
        ("redis+sentinel://s1,/mymaster", "no host"),
        ("redis+sentinel://s1/mymaster/x", "database must be a number"),
        ("redis+sentinel://s1/mymaster/0/1", "the path is /<master-name>[/<db>]"),
    ],
)
def test_a_malformed_url_is_refused_saying_why(url: str, says: str) -> None:
    with pytest.raises(BadRedisUrl, match="cluster_redis_url") as caught:
        parse(url)
    assert says in str(caught.value)
    assert isinstance(caught.value, ConfigError)  # ``ferrymq start`` reports it and exits


def test_errors_and_logs_never_show_a_password() -> None:
    with pytest.raises(BadRedisUrl) as caught:
        parse("redis://:hunter2@host/x")
    assert "hunter2" not in str(caught.value)
    assert safe_url("redis+sentinel://:pw@s1,s2/m/0?sentinel_password=sp") == (
        "redis+sentinel://***@s1,s2/m/0?sentinel_password=***"
    )
    assert safe_url("rediss://h:1/0?ssl_ca_certs=/ca.pem") == "rediss://h:1/0?ssl_ca_certs=/ca.pem"


async def test_a_sentinel_url_makes_a_client_of_the_master_the_sentinels_name() -> None:
    url = "redis+sentinel://:pw@127.0.0.1:1,127.0.0.1:2/mymaster/4?socket_timeout=7"
    redis = client(parse(url), socket_connect_timeout=2.0)
    pool = redis.connection_pool
    assert isinstance(pool, SentinelConnectionPool)
    assert pool.service_name == "mymaster"
    kwargs = pool.connection_kwargs
    assert (kwargs["db"], kwargs["password"], kwargs["socket_timeout"]) == (4, "pw", 7.0)
    sentinels = pool.sentinel_manager.sentinels
    assert [s.connection_pool.connection_kwargs["port"] for s in sentinels] == [1, 2]
    assert sentinels[0].connection_pool.connection_kwargs["socket_timeout"] == 7.0
    await close(redis)


async def test_a_tls_url_makes_a_tls_client_with_its_options() -> None:
    redis = client(parse("rediss://h:6390/1?ssl_ca_certs=/x/ca.pem&ssl_check_hostname=false"))
    kwargs = redis.connection_pool.connection_kwargs
    assert (kwargs["host"], kwargs["port"], kwargs["db"]) == ("h", 6390, 1)
    assert kwargs["ssl_ca_certs"] == "/x/ca.pem" and kwargs["ssl_check_hostname"] is False
    assert redis.connection_pool.connection_class.__name__ == "SSLConnection"
    await asyncio.wait_for(close(redis), 1)


async def test_a_tls_sentinel_url_speaks_tls_to_the_sentinels_and_the_master() -> None:
    url = (
        "rediss+sentinel://:pw@127.0.0.1:1,127.0.0.1:2/mymaster/2"
        "?ssl_ca_certs=/x/ca.pem&ssl_check_hostname=false&sentinel_password=sp"
    )
    target = parse(url)
    assert (target.scheme, target.master, target.db) == ("rediss+sentinel", "mymaster", 2)
    redis = client(target, socket_connect_timeout=2.0)
    pool = redis.connection_pool
    assert isinstance(pool, SentinelConnectionPool)
    assert pool.connection_class.__name__ == "SentinelManagedSSLConnection"
    kwargs = pool.connection_kwargs
    assert kwargs["ssl_ca_certs"] == "/x/ca.pem" and kwargs["ssl_check_hostname"] is False
    assert kwargs["password"] == "pw"
    for sentinel in pool.sentinel_manager.sentinels:
        own = sentinel.connection_pool
        assert own.connection_class.__name__ == "SSLConnection"
        assert own.connection_kwargs["ssl_ca_certs"] == "/x/ca.pem"
        assert own.connection_kwargs["ssl_check_hostname"] is False
        assert own.connection_kwargs["password"] == "sp"
        assert own.connection_kwargs["socket_connect_timeout"] == 2.0
    await asyncio.wait_for(close(redis), 1)


def test_tls_options_need_a_tls_form_and_sentinel_options_a_sentinel_form() -> None:
    with pytest.raises(BadRedisUrl, match="needs rediss:// or rediss\\+sentinel://"):
        parse("redis+sentinel://s1/m?ssl_ca_certs=/ca.pem")
    with pytest.raises(BadRedisUrl, match="needs redis\\+sentinel:// or rediss\\+sentinel://"):
        parse("rediss://h/0?sentinel_password=x")
    with pytest.raises(BadRedisUrl, match="no master name: rediss\\+sentinel://"):
        parse("rediss+sentinel://s1:26379")
    assert parse("rediss+sentinel://s1,s2:26380/m").sentinels == (("s1", 26379), ("s2", 26380))


@pytest.mark.parametrize("side", ["sentinels", "master"])
async def test_ssl_for_keeps_tls_to_one_side_of_the_sentinels(side: str) -> None:
    target = parse(f"rediss+sentinel://127.0.0.1:1/m/0?ssl_ca_certs=/x/ca.pem&ssl_for={side}")
    redis = client(target)
    pool = redis.connection_pool
    master_tls = pool.connection_class.__name__ == "SentinelManagedSSLConnection"
    own = [s.connection_pool for s in pool.sentinel_manager.sentinels]
    sentinels_tls = [p.connection_class.__name__ == "SSLConnection" for p in own]
    assert (master_tls, sentinels_tls) == (side == "master", [side == "sentinels"])
    tls_kwargs = pool.connection_kwargs if side == "master" else own[0].connection_kwargs
    assert tls_kwargs["ssl_ca_certs"] == "/x/ca.pem" and "ssl_for" not in tls_kwargs
    await asyncio.wait_for(close(redis), 1)


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("rediss+sentinel://s1/m?ssl_for=replica", "ssl_for must be one of both, sentinels"),
        ("rediss://h/0?ssl_for=master", "ssl_for needs rediss\\+sentinel://"),
        ("redis+sentinel://s1/m?ssl_for=master", "needs rediss:// or rediss\\+sentinel://"),
    ],
)
def test_a_bad_ssl_for_is_refused(url: str, why: str) -> None:
    with pytest.raises(BadRedisUrl, match=why):
        parse(url)
