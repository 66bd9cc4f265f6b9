"""config.load: defaults < TOML file < FERRYMQ_* environment < flags, with typed validation."""

from __future__ import annotations

import argparse
from dataclasses import fields
from pathlib import Path

import pytest

from ferrymq import config
from ferrymq.config import ConfigError, Settings


def _toml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "ferrymq.toml"
    path.write_text(text)
    return path


def test_defaults():
    s = config.load(environ={})
    assert (s.bind, s.port) == ("127.0.0.1", 1883)
    assert s.allow_anonymous is None and s.anonymous_allowed()
    assert s.max_inflight == 32
    assert s.max_mqueue_len == 1000
    assert s.mqueue_store_qos0 is True
    assert s.shared_subscription_strategy == "round_robin"
    assert s.max_qos == 2


def test_precedence_file_env_flags(tmp_path):
    path = _toml(
        tmp_path, 'port = 1000\nmax_inflight = 10\nnode_name = "file@x"\nsys_interval = 5\n'
    )
    env = {"FERRYMQ_PORT": "2000", "FERRYMQ_MAX_INFLIGHT": "20", "FERRYMQ_SYS_INTERVAL": "7.5"}
    s = config.load(path, flags={"port": "3000", "max_qos": None}, environ=env)
    assert s.port == 3000  # flag beats env and file
    assert s.max_inflight == 20  # env beats file
    assert s.sys_interval == 7.5
    assert s.node_name == "file@x"  # file beats default
    assert s.max_qos == 2  # a flag left at None does not override
    assert config.load(path, environ={}).port == 1000


def test_environment_reads_os_environ_by_default(monkeypatch):
    monkeypatch.setenv("FERRYMQ_MAX_MQUEUE_LEN", "55")
    assert config.load().max_mqueue_len == 55


@pytest.mark.parametrize(
    ("text", "expected"),
    [("true", True), ("1", True), ("yes", True), ("ON", True), ("false", False), ("0", False),
     ("no", False), ("off", False)],
)  # fmt: skip
def test_boolean_environment_values(text, expected):
    s = config.load(environ={"FERRYMQ_ALLOW_ANONYMOUS": text})
    assert s.allow_anonymous is expected
    assert s.anonymous_allowed() is expected


def test_anonymous_follows_the_bind_address_unless_set(tmp_path):
    assert config.load(flags={"bind": "0.0.0.0"}, environ={}).anonymous_allowed() is False
    assert config.load(flags={"bind": "localhost"}, environ={}).anonymous_allowed() is True
    assert config.load(flags={"bind": "::1"}, environ={}).anonymous_allowed() is True
    path = _toml(tmp_path, 'bind = "0.0.0.0"\nallow_anonymous = true\n')
    assert config.load(path, environ={}).anonymous_allowed() is True


def test_toml_types(tmp_path):
    path = _toml(tmp_path, "flush_interval = 1\nmqueue_store_qos0 = false\nmax_qos = 1\n")
    s = config.load(path, environ={})
    assert s.flush_interval == 1.0 and isinstance(s.flush_interval, float)
    assert s.mqueue_store_qos0 is False
    assert s.max_qos == 1


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("no_such_setting = 1\n", "unknown setting 'no_such_setting'"),
        ('port = "x"\n', "port: expected int"),
        ("max_qos = true\n", "max_qos: expected int"),
        ('allow_anonymous = "sure"\n', "allow_anonymous: expected true or false"),
        ("mqueue_store_qos0 = 1\n", "mqueue_store_qos0: expected true or false"),
        ('shared_subscription_strategy = "first"\n', "must be one of round_robin"),
        ("port = [1]\n", "port: expected int"),
        ("port = \n", "ferrymq.toml"),
        ("max_qos = 3\n", "max_qos: must be 0..2"),
        ("port = 70000\n", "port: must be 0..65535"),
        ("max_inflight = 0\n", "max_inflight: must be 1..65535"),
        ("max_awaiting_rel = 0\n", "max_awaiting_rel"),
        ("flush_interval = 0\n", "flush_interval: must be at least"),
        ("max_mqueue_len = -1\n", "max_mqueue_len"),
    ],
)
def test_invalid_file_values(tmp_path, text, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace(".", r"\.")):
        config.load(_toml(tmp_path, text), environ={})


def test_invalid_env_and_flag_values(tmp_path):
    with pytest.raises(ConfigError, match="max_inflight: expected int"):
        config.load(environ={"FERRYMQ_MAX_INFLIGHT": "lots"})
    with pytest.raises(ConfigError, match="log_level: must be one of"):
        config.load(environ={"FERRYMQ_LOG_LEVEL": "loud"})
    with pytest.raises(ConfigError, match="port: expected int"):
        config.load(flags={"port": "1.5"}, environ={})
    with pytest.raises(ConfigError, match="not found"):
        config.load(tmp_path / "missing.toml", environ={})


def test_unrelated_environment_is_ignored():
    s = config.load(environ={"FERRYMQ": "x", "FERRYMQ_": "y", "PORT": "1", "ferrymq_port": "2"})
    assert s.port == 1883


def test_every_setting_has_a_flag_env_name_and_help():
    parser = argparse.ArgumentParser()
    config.add_arguments(parser)
    dests = {a.dest for a in parser._actions}
    for f in fields(Settings):
        assert f.name in dests
        assert f.metadata["help"]
        flag = "--" + f.name.replace("_", "-")
        assert any(flag in a.option_strings for a in parser._actions)
    # every setting is read from FERRYMQ_<NAME>
    env = {f"FERRYMQ_{f.name.upper()}": _other_value(f) for f in fields(Settings)}
    loaded = config.load(environ=env)
    for f in fields(Settings):
        assert getattr(loaded, f.name) != f.default, f.name


def _other_value(f) -> str:
    """A valid value for setting ``f`` that differs from its default, as text."""
    d = f.default
    if f.name == "cluster_redis_url":  # a URL of one of the accepted schemes
        return "redis://127.0.0.1:6379/0"
    if f.metadata.get("choices"):
        return next(c for c in f.metadata["choices"] if c != d)
    if d is None or isinstance(d, bool):
        return "false" if d else "true"
    if isinstance(d, int | float):
        return str(d - 1 if d > 1 else d + 1)
    return d + "-x"


def test_flags_parse_through_argparse(tmp_path):
    parser = argparse.ArgumentParser()
    config.add_arguments(parser)
    args = parser.parse_args(["--port", "1999", "--no-mqueue-store-qos0", "--allow-anonymous"])
    flags = {k: v for k, v in vars(args).items() if k != "config"}
    s = config.load(args.config, flags, environ={"FERRYMQ_PORT": "1"})
    assert s.port == 1999
    assert s.mqueue_store_qos0 is False
    assert s.allow_anonymous is True
    with pytest.raises(SystemExit):
        parser.parse_args(["--shared-subscription-strategy", "nope"])


def test_cluster_redis_url_from_file_environment_and_flags(tmp_path):
    assert config.load(environ={}).cluster_redis_url == ""  # standalone by default
    toml = tmp_path / "c.toml"
    toml.write_text('cluster_redis_url = "redis://10.0.0.1:6379/0"\nnode_name = "a@10.0.0.5"\n')
    s = config.load(toml, environ={})
    assert (s.cluster_redis_url, s.node_name) == ("redis://10.0.0.1:6379/0", "a@10.0.0.5")
    env = {"FERRYMQ_CLUSTER_REDIS_URL": "rediss://:pw@r.example:6380/1"}
    assert config.load(toml, environ=env).cluster_redis_url == "rediss://:pw@r.example:6380/1"
    parser = argparse.ArgumentParser()
    config.add_arguments(parser)
    args = parser.parse_args(["--cluster-redis-url", "redis://h/2", "--node-name", "b@h"])
    s = config.load(toml, vars(args), environ=env)
    assert (s.cluster_redis_url, s.node_name) == ("redis://h/2", "b@h")


def test_cluster_rpc_timeout_from_file_environment_and_flags(tmp_path):
    assert config.load(environ={}).cluster_rpc_timeout == 5.0
    toml = _toml(tmp_path, "cluster_rpc_timeout = 2\n")
    assert config.load(toml, environ={}).cluster_rpc_timeout == 2.0
    env = {"FERRYMQ_CLUSTER_RPC_TIMEOUT": "0.5"}
    assert config.load(toml, environ=env).cluster_rpc_timeout == 0.5
    parser = argparse.ArgumentParser()
    config.add_arguments(parser)
    args = parser.parse_args(["--cluster-rpc-timeout", "12.5"])
    assert config.load(toml, vars(args), environ=env).cluster_rpc_timeout == 12.5
    for bad in ("0", "-1", "3601"):
        with pytest.raises(config.ConfigError, match=r"cluster_rpc_timeout: must be 0\.1\.\.3600"):
            config.load(environ={"FERRYMQ_CLUSTER_RPC_TIMEOUT": bad})
    with pytest.raises(config.ConfigError, match="cluster_rpc_timeout: expected float"):
        config.load(environ={"FERRYMQ_CLUSTER_RPC_TIMEOUT": "soon"})


def test_cluster_redis_url_must_be_a_redis_url():
    for bad in ("http://h:6379", "h:6379", "redis:/h"):
        with pytest.raises(config.ConfigError, match="cluster_redis_url"):
            config.load(environ={"FERRYMQ_CLUSTER_REDIS_URL": bad})


def test_speaks_tls_with_a_tls_listener_the_api_over_https_or_a_cluster(tmp_path):
    """Without any of them the broker leaves ssl (OpenSSL) unloaded: ferrymq.eventloop."""
    assert config.load(environ={}).speaks_tls() is False
    ws = _toml(tmp_path, '[[listeners]]\nkind = "ws"\nport = 8083\n')
    assert config.load(ws, environ={}).speaks_tls() is False
    for name in ("cert.pem", "key.pem"):
        (tmp_path / name).write_text("")
    pem = f'certfile = "{tmp_path}/cert.pem"\nkeyfile = "{tmp_path}/key.pem"\n'
    for kind in ("ssl", "wss"):
        tables = f'[[listeners]]\nkind = "tcp"\n[[listeners]]\nkind = "{kind}"\n{pem}'
        path = _toml(tmp_path, tables)
        assert config.load(path, environ={}).speaks_tls() is True, kind
    https = {"api_certfile": f"{tmp_path}/cert.pem", "api_keyfile": f"{tmp_path}/key.pem"}
    assert config.load(flags=https, environ={}).speaks_tls() is True
    cluster = {"cluster_redis_url": "redis://127.0.0.1:6379/0"}
    assert config.load(flags=cluster, environ={}).speaks_tls() is True
