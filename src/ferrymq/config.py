"""One typed settings object: defaults < TOML file < FERRYMQ_* environment < command-line flags.

Every setting is a field of :class:`Settings` with its help text, so the
command line (``ferrymq start --help``), the environment and the config file
all accept exactly the same names (``max_inflight`` / ``FERRYMQ_MAX_INFLIGHT``
/ ``--max-inflight``).
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import argparse


class ConfigError(ValueError):
    """A setting has a wrong name, type or value."""


def _s(default: Any, help: str, choices: tuple[str, ...] | None = None) -> Any:
    return field(default=default, metadata={"help": help, "choices": choices})


@dataclass
class Settings:
    # --- where and who ---
    node_name: str = _s(
        "ferrymq@127.0.0.1",
        "node name reported by the API and in $SYS topics; unique within a cluster",
    )
    cluster_redis_url: str = _s(
        "",
        "redis://, rediss:// (TLS), redis+sentinel:// or rediss+sentinel:// URL of the Redis "
        "that joins nodes into one cluster (docs/cluster.md); empty: standalone",
    )
    cluster_rpc_timeout: float = _s(
        5.0,
        "seconds a cluster node waits for another node's answer to an API request "
        "(then the request fails: 500 / code 101)",
    )
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
    durability: str = _s(
        "acked",
        "acked: PUBACK/PUBREC/PUBCOMP of a message that became durable state leave once it "
        "is committed; batched: at once, a crash may lose the last flush_interval",
        ("acked", "batched"),
    )
    db_synchronous: str = _s(
        "normal",
        "SQLite synchronous level: normal survives a killed process, full also power loss",
        ("normal", "full"),
    )
    log_level: str = _s("info", "log level", ("debug", "info", "warning", "error"))
    log_format: str = _s("text", "log line format", ("text", "json"))
    # --- alarms ---
    alarm_check_interval: float = _s(10.0, "seconds between alarm checks")
    alarm_sysmem_high_watermark: float = _s(
        70.0, "alarm when the machine's memory in use passes this percent (0: off)"
    )
    alarm_procmem_high_watermark: float = _s(
        50.0, "alarm when the broker's resident memory passes this percent of RAM (0: off)"
    )
    alarm_connections_high_watermark: float = _s(
        90.0, "alarm when connections pass this percent of max_connections (0: off)"
    )
    alarm_fds_high_watermark: float = _s(
        80.0, "alarm when open file descriptors pass this percent of the limit (0: off)"
    )
    alarm_size_limit: int = _s(1000, "deactivated alarms kept in the history")
    alarm_validity_period: float = _s(86400.0, "seconds a deactivated alarm stays in the history")
    # --- management API ---
    api_bind: str = _s("127.0.0.1", "address of the management REST API")
    api_port: int = _s(8081, "port of the management REST API (0: no API)")
    api_certfile: str = _s("", "PEM certificate chain: serve the API over HTTPS")
    api_keyfile: str = _s("", "PEM private key of api_certfile")
    api_max_body: int = _s(4194304, "largest API request body accepted, in bytes")
    api_app_id: str = _s("", "AppID of an API app to create at start (with api_app_secret)")
    api_app_secret: str = _s("", "AppSecret of api_app_id; stored hashed")
    prometheus_auth: bool = _s(False, "require API credentials on GET /api/v4/emqx_prometheus")
    # --- web dashboard ---
    dashboard_bind: str = _s("127.0.0.1", "address of the web dashboard")
    dashboard_port: int = _s(18083, "port of the web dashboard (0: no dashboard)")
    dashboard_password: str = _s(
        "",
        "password of the 'admin' dashboard user created at first start "
        "(empty: a generated one, printed once)",
    )
    dashboard_session_timeout: int = _s(
        3600, "seconds a dashboard login stays valid without being used"
    )

    def __post_init__(self) -> None:
        # The [[listeners]] tables of the config file; not a flag or variable.
        self.listeners: list[ListenerSettings] = []

    @property
    def db_path(self) -> str:
        return os.path.join(self.data_dir, "ferrymq.db")

    def anonymous_allowed(self) -> bool:
        """Resolve allow_anonymous: explicit value, else only when every listener is loopback."""
        if self.allow_anonymous is not None:
            return self.allow_anonymous
        return all(_is_loopback(spec.bind) for spec in self.effective_listeners())

    def speaks_tls(self) -> bool:
        """Whether the broker may speak TLS: an ssl or wss listener, the API over HTTPS, or a
        cluster (its Redis client imports ``ssl`` whatever the URL). Else ``ssl`` and its
        OpenSSL stay unloaded (``eventloop``)."""
        if self.api_certfile or self.cluster_redis_url:
            return True
        return any(spec.tls for spec in self.effective_listeners())

    def effective_listeners(self) -> list[ListenerSettings]:
        """The listeners to open: the [[listeners]] tables, else one TCP on bind:port."""
        if not self.listeners:
            return [ListenerSettings(kind="tcp", name="default", bind=self.bind, port=self.port)]
        return [
            dataclasses.replace(
                spec,
                bind=spec.bind or self.bind,
                port=LISTENER_PORTS[spec.kind] if spec.port is None else spec.port,
            )
            for spec in self.listeners
        ]


def _is_loopback(host: str) -> bool:
    if host in ("localhost", "127.0.0.1", "::1"):  # the defaults, without importing ipaddress
        return True
    import ipaddress

    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


LISTENER_PORTS = {"tcp": 1883, "ssl": 8883, "ws": 8083, "wss": 8084}
_CERT_IDENTITY = ("", "cn", "dn", "san", "md5")
_TLS_ONLY: tuple[str, ...] = ("certfile", "keyfile", "cafile", "verify_peer")
_TLS_ONLY += ("fail_if_no_peer_cert", "peer_cert_as_username", "peer_cert_as_clientid")
_WS_ONLY = ("path", "proxy_header")


@dataclass
class ListenerSettings:
    """One ``[[listeners]]`` table: a socket the broker accepts MQTT connections on."""

    kind: str = "tcp"  # tcp | ssl | ws | wss
    name: str = ""  # unique per kind; default "default", then "default2", ...
    bind: str = ""  # empty: the top-level ``bind``
    port: int | None = None  # None: 1883 / 8883 / 8083 / 8084 by kind; 0: a free port
    zone: str = "default"
    max_connections: int = 0  # open sockets on this listener (0: unlimited)
    max_conn_rate: float = 0.0  # new connections accepted per second (0: unlimited)
    proxy_protocol: bool = False  # expect a PROXY protocol v1/v2 header first
    certfile: str = ""  # ssl/wss: PEM certificate chain
    keyfile: str = ""  # ssl/wss: PEM private key
    cafile: str = ""  # ssl/wss: CAs that sign client certificates
    verify_peer: bool = False  # ssl/wss: ask for and verify a client certificate
    fail_if_no_peer_cert: bool = False  # ssl/wss: refuse clients without a certificate
    peer_cert_as_username: str = ""  # ssl/wss: "cn", "dn", "san" or "md5" of the certificate
    peer_cert_as_clientid: str = ""  # ssl/wss: as peer_cert_as_username
    path: str = "/mqtt"  # ws/wss: HTTP path of the WebSocket endpoint
    proxy_header: str = ""  # ws/wss: "x-forwarded-for" to trust that header

    @property
    def tls(self) -> bool:
        return self.kind in ("ssl", "wss")

    @property
    def websocket(self) -> bool:
        return self.kind in ("ws", "wss")

    @property
    def id(self) -> str:
        return f"{self.kind}:{self.name}"


def parse_listeners(tables: Any, origin: str) -> list[ListenerSettings]:
    """Validate the ``[[listeners]]`` tables of a config file."""
    if not isinstance(tables, list) or not all(isinstance(t, dict) for t in tables):
        raise ConfigError(f"{origin}: listeners must be [[listeners]] tables")
    known = {f.name: f for f in fields(ListenerSettings)}
    specs: list[ListenerSettings] = []
    names: set[str] = set()
    addresses: set[tuple[str, int]] = set()
    for i, table in enumerate(tables):
        where = f"{origin}: listeners[{i}]"
        spec = ListenerSettings()
        for key, value in table.items():
            f = known.get(key)
            if f is None:
                raise ConfigError(f"{where}: unknown setting {key!r}")
            setattr(spec, key, _convert(f"{where}.{key}", _field_type(f), value))
        _check_listener(spec, table, where)
        if not spec.name:
            same = sum(1 for s in specs if s.kind == spec.kind)
            spec.name = "default" if not same else f"default{same + 1}"
        if spec.id in names:
            raise ConfigError(f"{where}: a {spec.kind} listener named {spec.name!r} exists already")
        names.add(spec.id)
        port = LISTENER_PORTS[spec.kind] if spec.port is None else spec.port
        if port and (spec.bind, port) in addresses:
            raise ConfigError(f"{where}: port {port} is used by another listener")
        addresses.add((spec.bind, port))
        specs.append(spec)
    return specs


def _check_listener(spec: ListenerSettings, table: dict[str, Any], where: str) -> None:
    if spec.kind not in LISTENER_PORTS:
        raise ConfigError(f"{where}: kind must be one of tcp, ssl, ws, wss, got {spec.kind!r}")
    if spec.port is not None and not 0 <= spec.port <= 65535:
        raise ConfigError(f"{where}: port must be 0..65535, got {spec.port}")
    if spec.max_connections < 0 or spec.max_conn_rate < 0:
        raise ConfigError(f"{where}: max_connections and max_conn_rate must be >= 0")
    for key in _TLS_ONLY if not spec.tls else ():
        if key in table:
            raise ConfigError(f"{where}: {key} applies to ssl and wss listeners only")
    for key in _WS_ONLY if not spec.websocket else ():
        if key in table:
            raise ConfigError(f"{where}: {key} applies to ws and wss listeners only")
    for key in ("peer_cert_as_username", "peer_cert_as_clientid"):
        if getattr(spec, key) not in _CERT_IDENTITY:
            raise ConfigError(f"{where}: {key} must be one of cn, dn, san, md5")
        if getattr(spec, key) and not spec.verify_peer:
            raise ConfigError(f"{where}: {key} needs verify_peer = true")
    if spec.proxy_header not in ("", "x-forwarded-for"):
        raise ConfigError(f'{where}: proxy_header must be "x-forwarded-for"')
    if spec.websocket and not spec.path.startswith("/"):
        raise ConfigError(f"{where}: path must start with /, got {spec.path!r}")
    if spec.tls:
        if not spec.certfile or not spec.keyfile:
            raise ConfigError(f"{where}: a {spec.kind} listener needs certfile and keyfile")
        if spec.verify_peer and not spec.cafile:
            raise ConfigError(f"{where}: verify_peer needs cafile")
        if spec.fail_if_no_peer_cert and not spec.verify_peer:
            raise ConfigError(f"{where}: fail_if_no_peer_cert needs verify_peer = true")
        for key in ("certfile", "keyfile", "cafile"):
            path = getattr(spec, key)
            if path and not os.path.isfile(path):
                raise ConfigError(f"{where}: {key} {path} not found")


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


# Inclusive bounds of numeric MQTT settings (None: no upper bound). A value outside
# them would break the protocol (a QoS 3 grant, a receive maximum of 0, a port that
# wraps around), so it is refused here rather than met later on the wire.
_U32 = 0xFFFFFFFF
_RANGES: dict[str, tuple[float, float | None]] = {
    "port": (0, 65535),
    "max_connections": (0, None),
    "connect_timeout": (0.001, None),
    "max_packet_size": (16, 268_435_460),
    "max_clientid_len": (1, 65535),
    "max_topic_levels": (1, None),
    "max_topic_length": (1, 65535),
    "max_qos": (0, 2),
    "max_subscriptions": (0, None),
    "max_inflight": (1, 65535),
    "max_mqueue_len": (1, None),
    "max_awaiting_rel": (1, 65535),
    "topic_alias_maximum": (0, 65535),
    "max_retained_messages": (0, None),
    "session_expiry_interval": (0, _U32),
    "max_session_expiry_interval": (0, _U32),
    "server_keepalive": (0, 65535),
    "max_keepalive": (1, 65535),
    "sys_interval": (0, None),
    "cluster_rpc_timeout": (0.1, 3600),
    "flush_interval": (0.001, None),
    "alarm_check_interval": (0.1, None),
    "alarm_sysmem_high_watermark": (0, 100),
    "alarm_procmem_high_watermark": (0, 100),
    "alarm_connections_high_watermark": (0, 100),
    "alarm_fds_high_watermark": (0, 100),
    "alarm_size_limit": (0, None),
    "alarm_validity_period": (0, None),
    "dashboard_port": (0, 65535),
    "dashboard_session_timeout": (1, None),
}


_REDIS_SCHEMES = ("redis://", "rediss://", "redis+sentinel://", "rediss+sentinel://")


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
        bounds = _RANGES.get(name)
        if bounds is not None and not (
            bounds[0] <= value and (bounds[1] is None or value <= bounds[1])
        ):
            limit = f"at least {bounds[0]}" if bounds[1] is None else f"{bounds[0]}..{bounds[1]}"
            raise ConfigError(f"{name}: must be {limit}, got {value!r}")
        if name == "cluster_redis_url" and value and not value.startswith(_REDIS_SCHEMES):
            raise ConfigError(
                f"{name}: must start with redis://, rediss://, redis+sentinel:// or "
                f"rediss+sentinel://, got {value!r}"
            )
        setattr(settings, name, value)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--config`` and one flag per setting to ``parser``."""
    import argparse  # here: a broker lets argparse go once parsed (commands/parser.py)

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
        import tomllib  # here: a broker started without a file never needs it

        path = os.fspath(config_file)
        try:
            with open(path, encoding="utf-8") as f:
                data = tomllib.loads(f.read())
        except FileNotFoundError:
            raise ConfigError(f"config file {path} not found") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: {exc}") from None
        if "listeners" in data:
            settings.listeners = parse_listeners(data.pop("listeners"), path)
        _apply(settings, data, path)
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
