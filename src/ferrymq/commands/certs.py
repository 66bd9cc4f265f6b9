"""``ferrymq certs dev``: a development CA with a server and a client certificate.

Enough to try TLS and mutual TLS locally in two commands; not for
production, where certificates come from a real CA. Keys are ECDSA P-256,
which every TLS 1.2/1.3 client accepts and which is generated instantly.
The listener config snippet goes to stdout, so it can be redirected into a
config file; progress messages go to stderr.
"""

from __future__ import annotations

import argparse
import datetime
import ipaddress
import os
import sys
from pathlib import Path
from typing import Any

FILES = ("ca.pem", "ca.key", "server.pem", "server.key", "client.pem", "client.key")


def register(sub: Any) -> None:
    certs = sub.add_parser("certs", help="certificates for the TLS listeners")
    actions = certs.add_subparsers(dest="action", required=True)
    dev = actions.add_parser(
        "dev",
        help="write a development CA, server and client certificate",
        description="Write ca.pem/ca.key, server.pem/server.key and client.pem/client.key "
        "into DATA_DIR/certs and print the [[listeners]] config that uses them.",
    )
    dev.add_argument(
        "--data-dir",
        default=os.environ.get("FERRYMQ_DATA_DIR", "./data"),
        help="data directory; certificates go to its certs/ folder (default: ./data)",
    )
    dev.add_argument(
        "--hostname",
        action="append",
        default=[],
        metavar="H",
        help="extra DNS name or IP address for the server certificate (repeatable); "
        "localhost, 127.0.0.1 and ::1 are always included",
    )
    dev.add_argument("--client-cn", default="client1", help="client certificate CN")
    dev.add_argument("--days", type=int, default=825, help="validity in days (default: 825)")
    dev.add_argument("--force", action="store_true", help="overwrite existing files")
    dev.set_defaults(func=run_dev)


def run_dev(args: argparse.Namespace) -> int:
    folder = Path(args.data_dir) / "certs"
    existing = [name for name in FILES if (folder / name).exists()]
    if existing and not args.force:
        print(
            f"ferrymq: {folder} already holds {', '.join(existing)}; use --force to replace",
            file=sys.stderr,
        )
        return 1
    try:
        write_dev_certs(folder, args.hostname, args.client_cn, args.days)
    except ValueError as exc:
        print(f"ferrymq: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {', '.join(FILES)} to {folder}", file=sys.stderr)
    print(listener_snippet(folder.resolve()))
    return 0


def write_dev_certs(
    folder: Path, hostnames: list[str], client_cn: str = "client1", days: int = 825
) -> None:
    """Generate the CA, server and client key pairs and certificates into ``folder``."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.UTC)
    until = now + datetime.timedelta(days=days)

    def name(cn: str) -> x509.Name:
        return x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "ferrymq development"),
                x509.NameAttribute(NameOID.COMMON_NAME, cn),
            ]
        )

    def builder(subject: x509.Name, issuer: x509.Name, key: Any) -> x509.CertificateBuilder:
        return (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(issuer)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(until)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        )

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = name("ferrymq development CA")
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    aki = x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski)
    ca = (
        builder(ca_name, ca_name, ca_key)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_usage(cert_sign=True), critical=True)
        .sign(ca_key, hashes.SHA256())
    )

    names: list[x509.GeneralName] = []
    for host in ["localhost", "127.0.0.1", "::1", *hostnames]:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            if not host or " " in host:
                raise ValueError(f"not a hostname or IP address: {host!r}") from None
            names.append(x509.DNSName(host))
    server_key = ec.generate_private_key(ec.SECP256R1())
    server = (
        builder(name(hostnames[0] if hostnames else "localhost"), ca_name, server_key)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_usage(), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(aki, critical=False)
        .sign(ca_key, hashes.SHA256())
    )

    client_key = ec.generate_private_key(ec.SECP256R1())
    client = (
        builder(name(client_cn), ca_name, client_key)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_usage(), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), False)
        .add_extension(aki, critical=False)
        .sign(ca_key, hashes.SHA256())
    )

    folder.mkdir(parents=True, exist_ok=True)
    for stem, cert, key in (("ca", ca, ca_key), ("server", server, server_key)):
        _write(folder / f"{stem}.pem", _cert_pem(cert), 0o644)
        _write(folder / f"{stem}.key", _key_pem(key), 0o600)
    _write(folder / "client.pem", _cert_pem(client), 0o644)
    _write(folder / "client.key", _key_pem(client_key), 0o600)


def listener_snippet(folder: Path) -> str:
    """The [[listeners]] tables that serve MQTT over TCP, TLS, WebSocket and secure WebSocket."""
    cert, key, ca = folder / "server.pem", folder / "server.key", folder / "ca.pem"
    tls = f'certfile = "{cert}"\nkeyfile = "{key}"\ncafile = "{ca}"\n'
    mutual = (
        "# verify client certificates signed by ca.pem when a client sends one\n"
        "# (mutual TLS), and take the username from their CN; clients without a\n"
        "# certificate still connect unless fail_if_no_peer_cert = true\n"
        'verify_peer = true\nfail_if_no_peer_cert = false\npeer_cert_as_username = "cn"\n'
    )
    return (
        "# ferrymq listeners using the development certificates\n"
        '[[listeners]]\nkind = "tcp"\nport = 1883\n\n'
        f'[[listeners]]\nkind = "ssl"\nport = 8883\n{tls}{mutual}\n'
        '[[listeners]]\nkind = "ws"\nport = 8083\npath = "/mqtt"\n\n'
        f'[[listeners]]\nkind = "wss"\nport = 8084\npath = "/mqtt"\n{tls}'
    )


def _usage(cert_sign: bool = False) -> Any:
    from cryptography import x509

    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=not cert_sign,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _cert_pem(cert: Any) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return cert.public_bytes(serialization.Encoding.PEM)  # type: ignore[no-any-return]


def _key_pem(key: Any) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return key.private_bytes(  # type: ignore[no-any-return]
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _write(path: Path, data: bytes, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(path, mode)
