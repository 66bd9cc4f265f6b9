"""What a listener needs to know about itself: the transport's own view of one listener.

The transport does not read the configuration: whoever starts listeners
(``server.py``) translates its settings into ``ListenerOptions``, so the
transport can be driven by tests, or by another front end, with nothing but
this type. Nothing is derived from the kind's name: the port is resolved
(0: a free port) and TLS and WebSocket are flags of their own.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ListenerOptions:
    """One listener: where it binds, its limits, and its TLS and WebSocket options."""

    kind: str  # tcp | ssl | ws | wss: named in ids and in the API's description
    name: str  # unique per kind
    bind: str
    port: int  # 0: a free port
    tls: bool = False  # TLS on the socket (ssl, wss)
    websocket: bool = False  # MQTT over WebSocket (ws, wss)
    zone: str = "default"
    max_connections: int = 0  # 0: unlimited
    max_conn_rate: float = 0.0  # new connections per second; 0: unlimited
    proxy_protocol: bool = False  # a PROXY protocol v1/v2 header comes first
    certfile: str = ""
    keyfile: str = ""
    cafile: str = ""
    verify_peer: bool = False
    fail_if_no_peer_cert: bool = False
    peer_cert_as_username: str = ""  # "", "cn", "dn", "san" or "md5"
    peer_cert_as_clientid: str = ""
    path: str = "/mqtt"  # ws/wss: the HTTP path of the endpoint
    proxy_header: str = ""  # ws/wss: "x-forwarded-for" to trust that header

    @property
    def id(self) -> str:
        return f"{self.kind}:{self.name}"
