"""One typed settings object: defaults < TOML file < FERRYMQ_* environment < command-line flags.

Every setting is a field of :class:`Settings` with its help text, so the
command line (``ferrymq start --help``), the environment and the config file
all accept exactly the same names (``max_inflight`` / ``FERRYMQ_MAX_INFLIGHT``
/ ``--max-inflight``).
"""

from __future__ import annotations

import argparse
import dataclasses
import ipaddress
import os
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any


class ConfigError(ValueError):
    """A setting has a wrong name, type or value."""


def _s(default: Any, help: str, choices: tuple[str, ...] | None = None) -> Any:
    return field(default=default, metadata={"help": help, "choices": choices})


@dataclass
class Settings:
    # --- where and who ---
    node_name: str = _s("ferrymq@127.0.0.1", "node name reported by the API and in $SYS topics")
    data_dir: str = _s("./data", "directory holding the SQLite database")
    bind: str = _s("127.0.0.1", "address of the MQTT TCP listener")
    port: int = _s(1883, "port of the MQTT TCP listener (0 picks a free port)")
    # --- access ---
    allow_anonymous: bool | None = _s(
        None,
        "accept clients that have no credentials record; unset: only when every "
        "listener is bound to a loopback address",
    )
    acl_nomatch: str = _s("allow", "decision when no ACL rule matches", ("allow", "deny"))
    password_hash: str = _s("sha256", "hash for stored passwords", ("sha256", "pbkdf2", "bcrypt"))
    # --- limits ---
    max_connections: int = _s(0, "refuse new connections beyond this many (0: unlimited)")
    connect_timeout: float = _s(10.0, "seconds a new connection has to send CONNECT")
    max_packet_size: int = _s(1048576, "largest MQTT packet accepted, in bytes")
    max_clientid_len: int = _s(65535, "longest client id accepted")
    max_topic_levels: int = _s(128, "most levels in a topic name or filter")
    max_topic_length: int = _s(65535, "longest topic name or filter")
    max_qos: int = _s(2, "highest QoS the broker grants")
    max_subscriptions: int = _s(0, "subscriptions per client (0: unlimited)")
    max_inflight: int = _s(32, "unacknowledged QoS 1/2 messages per client")
    max_mqueue_len: int = _s(1000, "queued messages per session; beyond it the oldest is dropped")
    mqueue_store_qos0: bool = _s(True, "queue QoS 0 messages for offline persistent sessions")
    max_awaiting_rel: int = _s(100, "incoming QoS 2 messages awaiting PUBREL per client")
    topic_alias_maximum: int = _s(64, "topic aliases accepted from each MQTT 5 client")
    retain_available: bool = _s(True, "support retained messages")
    max_retained_messages: int = _s(0, "retained messages kept (0: unlimited)")
    wildcard_subscription: bool = _s(True, "allow wildcard subscriptions")
    shared_subscription: bool = _s(True, "allow shared subscriptions")
    shared_subscription_strategy: str = _s(
        "round_robin",
        "how a shared group picks a member",
        ("round_robin", "random", "sticky", "hash_clientid"),
    )
    session_expiry_interval: int = _s(7200, "seconds an offline MQTT 3 persistent session is kept")
    max_session_expiry_interval: int = _s(0, "cap on MQTT 5 session expiry intervals (0: no cap)")
    server_keepalive: int = _s(0, "keep alive imposed on MQTT 5 clients (0: the client's own)")
    max_keepalive: int = _s(65535, "longest keep alive accepted from MQTT 5 clients")
    # --- operation ---
    sys_interval: float = _s(10.0, "seconds between $SYS publications (0: off)")
    flush_interval: float = _s(0.05, "seconds between durable-state commits")
    log_level: str = _s("info", "log level", ("debug", "info", "warning", "error"))
    log_format: str = _s("text", "log line format", ("text", "json"))

    @property
    def db_path(self) -> Path:
        return Path(self.data_dir) / "ferrymq.db"

    def anonymous_allowed(self) -> bool:
        """Resolve allow_anonymous: explicit value, else only when bound to loopback."""
        if self.allow_anonymous is not None:
            return self.allow_anonymous
        return _is_loopback(self.bind)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _field_type(f: dataclasses.Field[Any]) -> type:
    t = str(f.type)
    if "bool" in t:
        return bool
    if "int" in t:
        return int
    if "float" in t:
        return float
    return str


def _convert(name: str, kind: type, value: Any) -> Any:
    if isinstance(value, str):
        text = value.strip()
        if kind is bool:
            low = text.lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off"):
                return False
            raise ConfigError(f"{name}: expected true or false, got {value!r}")
        try:
            return kind(text)
        except ValueError:
            raise ConfigError(f"{name}: expected {kind.__name__}, got {value!r}") from None
    if kind is bool and not isinstance(value, bool):
        raise ConfigError(f"{name}: expected true or false, got {value!r}")
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ConfigError(f"{name}: expected {kind.__name__}, got {value!r}")
    return value


def _apply(settings: Settings, values: dict[str, Any], origin: str) -> None:
    known = {f.name: f for f in fields(Settings)}
    for name, value in values.items():
        f = known.get(name)
        if f is None:
            raise ConfigError(f"{origin}: unknown setting {name!r}")
        value = _convert(name, _field_type(f), value)
        choices = f.metadata.get("choices")
        if choices and value not in choices:
            raise ConfigError(f"{name}: must be one of {', '.join(choices)}, got {value!r}")
        setattr(settings, name, value)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--config`` and one flag per setting to ``parser``."""
    parser.add_argument("--config", "-c", help="TOML config file")
    for f in fields(Settings):
        kind = _field_type(f)
        flag = "--" + f.name.replace("_", "-")
        help_text = f.metadata["help"] + f" (default: {f.default})"
        if kind is bool:
            parser.add_argument(
                flag,
                dest=f.name,
                default=None,
                action=argparse.BooleanOptionalAction,
                help=help_text,
            )
        else:
            parser.add_argument(
                flag,
                dest=f.name,
                default=None,
                type=str,
                metavar=kind.__name__.upper(),
                choices=f.metadata.get("choices"),
                help=help_text,
            )


def load(
    config_file: str | os.PathLike[str] | None = None,
    flags: dict[str, Any] | None = None,
    environ: dict[str, str] | None = None,
) -> Settings:
    """Build Settings from the file, the environment and flags (later wins)."""
    settings = Settings()
    if config_file:
        path = Path(config_file)
        try:
            data = tomllib.loads(path.read_text())
        except FileNotFoundError:
            raise ConfigError(f"config file {path} not found") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: {exc}") from None
        _apply(settings, data, str(path))
    env = os.environ if environ is None else environ
    env_values = {
        f.name: env[f"FERRYMQ_{f.name.upper()}"]
        for f in fields(Settings)
        if f"FERRYMQ_{f.name.upper()}" in env
    }
    _apply(settings, env_values, "environment")
    if flags:
        _apply(settings, {k: v for k, v in flags.items() if v is not None}, "command line")
    return settings
