"""TLS for the ssl and wss listeners: the server context and the client certificate identity."""

from __future__ import annotations

import hashlib
import ssl
from typing import Any

from ferrymq.transport.options import ListenerOptions


def server_context(spec: ListenerOptions) -> ssl.SSLContext:
    """An SSLContext for ``spec``: TLS 1.2 and 1.3, optional client certificates.

    Raises OSError with the listener and file named, so ``ferrymq start``
    reports a bad certificate or key in one line.
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.options |= ssl.OP_NO_COMPRESSION
    try:
        ctx.load_cert_chain(spec.certfile, spec.keyfile)
    except (OSError, ssl.SSLError) as exc:
        raise OSError(
            f"listener {spec.id}: cannot load certfile {spec.certfile} / keyfile "
            f"{spec.keyfile}: {exc}"
        ) from None
    if spec.verify_peer:
        try:
            ctx.load_verify_locations(cafile=spec.cafile)
        except (OSError, ssl.SSLError) as exc:
            raise OSError(f"listener {spec.id}: cannot load cafile {spec.cafile}: {exc}") from None
        ctx.verify_mode = ssl.CERT_REQUIRED if spec.fail_if_no_peer_cert else ssl.CERT_OPTIONAL
    return ctx


def apply_cert_identity(
    client: Any, transport: Any, username_from: str | None, clientid_from: str | None
) -> None:
    """``peer_cert_as_username`` / ``peer_cert_as_clientid``: the verified certificate's
    values replace what the CONNECT will say (a TLS listener's rule, for TCP and WebSocket)."""
    if not (username_from or clientid_from):
        return
    ssl_object = transport.get_extra_info("ssl_object")
    if username_from:
        client.cert_username = cert_identity(ssl_object, username_from)
    if clientid_from:
        client.cert_clientid = cert_identity(ssl_object, clientid_from)


def cert_identity(ssl_object: Any, what: str) -> str | None:
    """The part of the verified client certificate that ``what`` names, if any.

    ``cn``: the subject's common name; ``dn``: the subject as an RFC 4514
    string; ``san``: the first DNS name, e-mail address, URI or IP address of
    subjectAltName; ``md5``: hex MD5 of the DER certificate.
    """
    if ssl_object is None:
        return None
    cert = ssl_object.getpeercert()
    if not cert:
        return None
    if what == "cn":
        for rdn in cert.get("subject", ()):
            for key, value in rdn:
                if key == "commonName":
                    return str(value)
        return None
    if what == "san":
        for kind, value in cert.get("subjectAltName", ()):
            if kind in ("DNS", "email", "URI", "IP Address"):
                return str(value)
        return None
    der = ssl_object.getpeercert(binary_form=True)
    if not der:
        return None
    if what == "md5":
        return hashlib.md5(der, usedforsecurity=False).hexdigest()
    if what == "dn":
        from cryptography import x509

        return x509.load_der_x509_certificate(der).subject.rfc4514_string()
    return None
