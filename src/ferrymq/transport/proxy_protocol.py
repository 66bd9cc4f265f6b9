"""PROXY protocol v1 (text) and v2 (binary) headers, as load balancers send them.

Sans-I/O: :func:`header_length` says how many bytes of a buffer the header
takes (so the listener consumes exactly the header and nothing of the stream
behind it), :func:`parse` turns those bytes into the original client address.
Specification: https://www.haproxy.org/download/2.8/doc/proxy-protocol.txt
"""

from __future__ import annotations

# ipaddress is imported where an address is parsed: a broker without a PROXY protocol
# listener never needs it (about 0.25 MB).

V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
V1_MAX = 107  # the longest v1 line, CRLF included
_V1_PREFIX = b"PROXY "

Address = tuple[str, int]


class ProxyProtocolError(ValueError):
    """The connection did not start with a valid PROXY protocol header."""


def header_length(buf: bytes) -> int | None:
    """Bytes the header at the start of ``buf`` takes; None while more are needed."""
    if buf[:1] == b"\r":
        if len(buf) < 16:
            if not V2_SIGNATURE.startswith(buf[:12]):
                raise ProxyProtocolError("bad PROXY v2 signature")
            return None
        if buf[:12] != V2_SIGNATURE:
            raise ProxyProtocolError("bad PROXY v2 signature")
        return 16 + int.from_bytes(buf[14:16], "big")
    if not _V1_PREFIX.startswith(buf[:6]):
        raise ProxyProtocolError("no PROXY protocol header")
    end = buf.find(b"\r\n", 0, V1_MAX)
    if end >= 0:
        return end + 2
    if len(buf) >= V1_MAX:
        raise ProxyProtocolError("PROXY v1 line too long")
    return None


def parse(header: bytes) -> Address | None:
    """The source address a complete header carries; None for LOCAL/UNKNOWN."""
    if header[:12] == V2_SIGNATURE:
        return _parse_v2(header)
    return _parse_v1(header)


def _parse_v1(header: bytes) -> Address | None:
    try:
        line = header[:-2].decode("ascii")
    except UnicodeDecodeError:
        raise ProxyProtocolError("PROXY v1 line is not ASCII") from None
    parts = line.split(" ")
    if len(parts) >= 2 and parts[1] == "UNKNOWN":
        return None
    if len(parts) != 6 or parts[1] not in ("TCP4", "TCP6"):
        raise ProxyProtocolError(f"bad PROXY v1 line {line!r}")
    import ipaddress

    try:
        src = ipaddress.ip_address(parts[2])
        port = int(parts[4])
        ipaddress.ip_address(parts[3])
        int(parts[5])
    except ValueError:
        raise ProxyProtocolError(f"bad PROXY v1 address in {line!r}") from None
    if src.version != (4 if parts[1] == "TCP4" else 6) or not 0 <= port <= 65535:
        raise ProxyProtocolError(f"bad PROXY v1 address in {line!r}")
    return str(src), port


def _parse_v2(header: bytes) -> Address | None:
    version, command = header[12] >> 4, header[12] & 0x0F
    if version != 2 or command > 1:
        raise ProxyProtocolError("bad PROXY v2 version or command")
    if command == 0:  # LOCAL: a health check by the proxy itself
        return None
    import ipaddress

    family = header[13] >> 4
    body = header[16:]
    if family == 1 and len(body) >= 12:  # AF_INET: src, dst, sport, dport
        host = str(ipaddress.IPv4Address(body[:4]))
        return host, int.from_bytes(body[8:10], "big")
    if family == 2 and len(body) >= 36:  # AF_INET6
        host = str(ipaddress.IPv6Address(body[:16]))
        return host, int.from_bytes(body[32:34], "big")
    if family in (1, 2):
        raise ProxyProtocolError("PROXY v2 address block too short")
    return None  # AF_UNSPEC / AF_UNIX: no usable address


def encode_v1(src: Address, dst: Address) -> bytes:
    """A v1 header (for tests and tools)."""
    proto = "TCP6" if ":" in src[0] else "TCP4"
    return f"PROXY {proto} {src[0]} {dst[0]} {src[1]} {dst[1]}\r\n".encode("ascii")


def encode_v2(src: Address, dst: Address, tlvs: bytes = b"") -> bytes:
    """A v2 PROXY (command 1) header over TCP (for tests and tools)."""
    import ipaddress

    s, d = ipaddress.ip_address(src[0]), ipaddress.ip_address(dst[0])
    family = 0x11 if s.version == 4 else 0x21
    body = s.packed + d.packed + src[1].to_bytes(2, "big") + dst[1].to_bytes(2, "big") + tlvs
    return V2_SIGNATURE + bytes((0x21, family)) + len(body).to_bytes(2, "big") + body
