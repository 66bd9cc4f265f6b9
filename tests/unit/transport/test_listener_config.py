"""[[listeners]] in the config file, and the ``ferrymq certs dev`` command."""

from __future__ import annotations

import ipaddress
import tomllib
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from ferrymq import config
from ferrymq.cli import main
from ferrymq.commands.certs import FILES, write_dev_certs


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("certs")
    write_dev_certs(folder, ["broker.example", "10.9.8.7"], client_cn="device-7")
    return folder


def load(tmp_path: Path, text: str, **flags: str) -> config.Settings:
    path = tmp_path / "ferrymq.toml"
    path.write_text(text)
    return config.load(path, flags, environ={})


def tls_lines(certs: Path) -> str:
    return f'certfile = "{certs}/server.pem"\nkeyfile = "{certs}/server.key"\n'


def test_without_listeners_the_flat_bind_and_port_are_the_tcp_listener(tmp_path: Path) -> None:
    settings = load(tmp_path, 'bind = "0.0.0.0"\n', port="2883")
    [spec] = settings.effective_listeners()
    assert (spec.kind, spec.id, spec.bind, spec.port) == ("tcp", "tcp:default", "0.0.0.0", 2883)
    assert not settings.anonymous_allowed()


def test_listeners_get_default_ports_names_and_the_top_level_bind(
    tmp_path: Path, certs: Path
) -> None:
    text = (
        '[[listeners]]\nkind = "tcp"\n\n[[listeners]]\nkind = "tcp"\nport = 1884\n'
        'zone = "internal"\nmax_connections = 5\nmax_conn_rate = 2\n\n'
        f'[[listeners]]\nkind = "ssl"\n{tls_lines(certs)}\n'
        '[[listeners]]\nkind = "ws"\nname = "browsers"\nbind = "::1"\n\n'
        f'[[listeners]]\nkind = "wss"\npath = "/ws"\n{tls_lines(certs)}'
    )
    settings = load(tmp_path, text)
    got = [(s.id, s.bind, s.port) for s in settings.effective_listeners()]
    assert got == [
        ("tcp:default", "127.0.0.1", 1883),
        ("tcp:default2", "127.0.0.1", 1884),
        ("ssl:default", "127.0.0.1", 8883),
        ("ws:browsers", "::1", 8083),
        ("wss:default", "127.0.0.1", 8084),
    ]
    second = settings.effective_listeners()[1]
    assert (second.zone, second.max_connections, second.max_conn_rate) == ("internal", 5, 2.0)
    assert settings.effective_listeners()[4].path == "/ws"
    assert settings.anonymous_allowed()  # every listener is on a loopback address


def test_one_public_listener_turns_anonymous_off(tmp_path: Path) -> None:
    text = '[[listeners]]\nkind = "tcp"\n\n[[listeners]]\nkind = "ws"\nbind = "0.0.0.0"\n'
    assert not load(tmp_path, text).anonymous_allowed()
    assert load(tmp_path, text, allow_anonymous="true").anonymous_allowed()


def test_the_bind_flag_moves_listeners_without_their_own_bind(tmp_path: Path) -> None:
    settings = load(tmp_path, '[[listeners]]\nkind = "tcp"\nport = 0\n', bind="0.0.0.0")
    assert settings.effective_listeners()[0].bind == "0.0.0.0"
    assert not settings.anonymous_allowed()


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ('kind = "quic"', "kind must be one of tcp, ssl, ws, wss"),
        ('kind = "tcp"\ncolour = "red"', "unknown setting 'colour'"),
        ('kind = "tcp"\nport = 70000', "port must be 0..65535"),
        ('kind = "tcp"\nport = "x"', "expected int"),
        ('kind = "tcp"\nmax_connections = -1', "must be >= 0"),
        ('kind = "ssl"', "needs certfile and keyfile"),
        ('kind = "tcp"\ncertfile = "a.pem"', "certfile applies to ssl and wss listeners only"),
        ('kind = "ssl"\npath = "/mqtt"', "path applies to ws and wss listeners only"),
        ('kind = "ws"\npath = "mqtt"', "path must start with /"),
        ('kind = "ws"\nproxy_header = "forwarded"', 'proxy_header must be "x-forwarded-for"'),
        ('kind = "ssl"\ncertfile = "/nope.pem"\nkeyfile = "/nope.key"', "certfile /nope.pem"),
    ],
)
def test_invalid_listener_tables_are_named_in_the_error(
    tmp_path: Path, body: str, message: str
) -> None:
    with pytest.raises(config.ConfigError, match="listeners\\[0\\]") as err:
        load(tmp_path, f"[[listeners]]\n{body}\n")
    assert message in str(err.value)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ("verify_peer = true", "verify_peer needs cafile"),
        ("fail_if_no_peer_cert = true", "fail_if_no_peer_cert needs verify_peer"),
        ('peer_cert_as_username = "cn"', "peer_cert_as_username needs verify_peer"),
        ('cafile = "{c}/ca.pem"\nverify_peer = true\npeer_cert_as_clientid = "x"', "one of cn"),
    ],
)
def test_client_certificate_options_must_fit_together(
    tmp_path: Path, certs: Path, extra: str, message: str
) -> None:
    text = f'[[listeners]]\nkind = "ssl"\n{tls_lines(certs)}{extra.format(c=certs)}\n'
    with pytest.raises(config.ConfigError, match=message):
        load(tmp_path, text)


def test_duplicate_names_and_ports_are_refused(tmp_path: Path) -> None:
    with pytest.raises(config.ConfigError, match="named 'a' exists already"):
        load(tmp_path, '[[listeners]]\nname = "a"\n[[listeners]]\nname = "a"\nport = 2\n')
    with pytest.raises(config.ConfigError, match="port 1883 is used by another listener"):
        load(tmp_path, '[[listeners]]\nkind = "tcp"\n[[listeners]]\nkind = "ws"\nport = 1883\n')
    with pytest.raises(config.ConfigError, match=r"\[\[listeners\]\] tables"):
        load(tmp_path, '[listeners]\nkind = "tcp"\n')


def test_dev_certificates_chain_to_the_ca_with_the_requested_names(certs: Path) -> None:
    assert sorted(p.name for p in certs.iterdir()) == sorted(FILES)
    ca = x509.load_pem_x509_certificate((certs / "ca.pem").read_bytes())
    server = x509.load_pem_x509_certificate((certs / "server.pem").read_bytes())
    client = x509.load_pem_x509_certificate((certs / "client.pem").read_bytes())
    for cert in (server, client):
        cert.verify_directly_issued_by(ca)
    san = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(san.get_values_for_type(x509.DNSName)) == {"localhost", "broker.example"}
    assert set(san.get_values_for_type(x509.IPAddress)) == {
        ipaddress.ip_address(a) for a in ("127.0.0.1", "::1", "10.9.8.7")
    }
    cn = client.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    assert cn == "device-7"
    assert (certs / "server.key").stat().st_mode & 0o077 == 0


def test_certs_dev_command_prints_a_config_that_loads(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["certs", "dev", "--data-dir", str(tmp_path), "--hostname", "mqtt.local"]) == 0
    snippet = capsys.readouterr().out
    assert {t["kind"] for t in tomllib.loads(snippet)["listeners"]} == {"tcp", "ssl", "ws", "wss"}
    settings = load(tmp_path, snippet)
    ssl_spec = next(s for s in settings.listeners if s.kind == "ssl")
    assert ssl_spec.certfile == str(tmp_path.resolve() / "certs" / "server.pem")
    assert ssl_spec.verify_peer and ssl_spec.peer_cert_as_username == "cn"
    # A second run keeps the existing files unless --force is given.
    before = (tmp_path / "certs" / "ca.pem").read_bytes()
    assert main(["certs", "dev", "--data-dir", str(tmp_path)]) == 1
    assert "--force" in capsys.readouterr().err
    assert (tmp_path / "certs" / "ca.pem").read_bytes() == before
    assert main(["certs", "dev", "--data-dir", str(tmp_path), "--force"]) == 0
    assert (tmp_path / "certs" / "ca.pem").read_bytes() != before
