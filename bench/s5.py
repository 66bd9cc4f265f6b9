"""S5 helpers: many subscriptions held open, and many retained topics delivered to ``#``.

usage:
  python bench/s5.py subs     --port P [--count 100000] [--clients 10] [--timeout 60]
  python bench/s5.py retained --port P [--count 100000] [--timeout 60]

``subs`` connects ``clients`` MQTT 3.1.1 connections and subscribes ``count``
distinct filters over them (100 per SUBSCRIBE): nine in ten are exact filters
``bench/<i>/s`` (under the same first level as S1's topics, matching none of
them) and one in ten a wildcard ``+/<i>/w``. It prints one JSON line once every
SUBACK is in, then holds the connections until its stdin closes.

``retained`` publishes ``count`` retained QoS 0 messages of 64 bytes on
``retained/<i // 1000>/<i % 1000>``, waits for a QoS 1 PUBACK behind them (so
the broker has taken them all), then subscribes to ``#`` on a new connection
and times how long it takes until every retained message has arrived.

Plain blocking sockets and pre-encoded packets: the broker, not this script,
should be the bottleneck; it runs pinned to the generator's CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import socket
import sys
import time

from ferrymq.mqtt.codec import Decoder, encode, encode_publish
from ferrymq.mqtt.packets import (
    Connack,
    Connect,
    Puback,
    Suback,
    Subscribe,
    SubscriptionOptions,
)

PER_PACKET = 100


def subscription_filter(i: int) -> str:
    return f"+/{i}/w" if i % 10 == 0 else f"bench/{i}/s"


def connect(port: int, client_id: str, timeout: float) -> tuple[socket.socket, Decoder]:
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.sendall(encode(Connect(client_id, keepalive=0), 4))
    dec = Decoder(server=False, version=4)
    packets = read_packets(sock, dec, 1, time.monotonic() + timeout)
    if not packets or not isinstance(packets[0], Connack) or packets[0].reason_code:
        raise ConnectionError(f"no CONNACK for {client_id}: {packets[:1]}")
    return sock, dec


def read_packets(sock: socket.socket, dec: Decoder, n: int, deadline: float) -> list:
    got: list = []
    while len(got) < n:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        sock.settimeout(left)
        try:
            data = sock.recv(262144)
        except TimeoutError:
            break
        if not data:
            raise ConnectionError("the broker closed the connection")
        got.extend(dec.feed(data))
    return got


def hold_subscriptions(port: int, count: int, clients: int, timeout: float) -> int:
    start = time.monotonic()
    deadline = start + timeout
    socks: list[socket.socket] = []
    per_client = -(-count // clients)
    granted = 0
    status = "ok"
    try:
        for c in range(clients):
            sock, dec = connect(port, f"s5subs-{os.getpid()}-{c}", timeout)
            socks.append(sock)
            first = c * per_client
            last = min(count, first + per_client)
            packets = []
            for pid, lo in enumerate(range(first, last, PER_PACKET), 1):
                opts = [
                    SubscriptionOptions(subscription_filter(i))
                    for i in range(lo, min(last, lo + PER_PACKET))
                ]
                packets.append(encode(Subscribe(pid, opts), 4))
            window = 20  # SUBSCRIBE packets in flight at once
            for k in range(0, len(packets), window):
                batch = packets[k : k + window]
                sock.sendall(b"".join(batch))
                acks = read_packets(sock, dec, len(batch), deadline)
                for ack in acks:
                    if isinstance(ack, Suback):
                        granted += sum(1 for code in ack.reason_codes if code < 0x80)
                if len(acks) < len(batch):
                    raise TimeoutError("SUBACKs did not arrive in time")
    except (OSError, ConnectionError) as exc:
        status = f"error: {exc}" if not isinstance(exc, TimeoutError) else "timeout"
    line = {
        "subscribed": granted,
        "clients": len(socks),
        "status": status,
        "subscribe_s": round(time.monotonic() - start, 3),
    }
    print(json.dumps(line), flush=True)
    if status == "ok":
        sys.stdin.read()  # hold until the driver closes our stdin
    for sock in socks:
        sock.close()
    return 0 if status == "ok" else 1


def count_publishes(buf: bytes, pos: int) -> tuple[int, int]:
    """Count whole PUBLISH packets in ``buf`` from ``pos``; return (count, first unread byte)."""
    n = len(buf)
    count = 0
    while pos + 2 <= n:
        first = buf[pos]
        i = pos + 1
        size = 0
        shift = 0
        while True:
            if i >= n:
                return count, pos
            b = buf[i]
            i += 1
            size |= (b & 0x7F) << shift
            if b < 0x80:
                break
            shift += 7
        if i + size > n:
            break
        if first >> 4 == 3:
            count += 1
        pos = i + size
    return count, pos


def publish_retained(sock: socket.socket, count: int, prefix: str, sync: bytes) -> None:
    """``count`` retained QoS 0 messages of 64 bytes on ``<prefix>/<i // 1000>/<i % 1000>``,
    1,000 per write, then ``sync`` (a packet whose acknowledgement says all arrived)."""
    payload = bytes(64)
    chunk = []
    for i in range(count):
        chunk.append(
            encode_publish(f"{prefix}/{i // 1000}/{i % 1000}", payload, 0, True, False, 0, None, 4)
        )
        if len(chunk) == 1000:
            sock.sendall(b"".join(chunk))
            chunk.clear()
    chunk.append(sync)
    sock.sendall(b"".join(chunk))


def retained(port: int, count: int, timeout: float) -> int:
    result: dict = {"count": count}
    t0 = time.monotonic()
    pub, dec = connect(port, f"s5ret-pub-{os.getpid()}", timeout)
    sync = encode_publish("s5/sync", b"sync", 1, False, False, 1, None, 4)
    publish_retained(pub, count, "retained", sync)
    acks = read_packets(pub, dec, 1, t0 + timeout)
    result["load_s"] = round(time.monotonic() - t0, 3)
    if not any(isinstance(a, Puback) for a in acks):
        result["status"] = "load_timeout"
        print(json.dumps(result), flush=True)
        return 1
    sub, _ = connect(port, f"s5ret-sub-{os.getpid()}", timeout)
    sub.setblocking(False)
    t1 = time.monotonic()
    sub.sendall(encode(Subscribe(1, [SubscriptionOptions("#")]), 4))
    deadline = t1 + timeout
    received = 0
    buf = b""
    last = t1
    while received < count:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        ready, _, _ = select.select([sub], [], [], left)
        if not ready:
            continue
        data = sub.recv(1 << 20)
        if not data:
            break
        buf = buf + data if buf else data
        got, pos = count_publishes(buf, 0)
        buf = buf[pos:]
        if got:
            received += got
            last = time.monotonic()
    result.update(
        received=received,
        deliver_s=round(last - t1, 3),
        status="ok" if received >= count else "timeout",
    )
    print(json.dumps(result), flush=True)
    pub.close()
    sub.close()
    return 0 if received >= count else 1


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("what", choices=("subs", "retained"))
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--count", type=int, default=100_000)
    ap.add_argument("--clients", type=int, default=10)
    ap.add_argument("--timeout", type=float, default=60.0)
    a = ap.parse_args()
    if a.what == "subs":
        return hold_subscriptions(a.port, a.count, a.clients, a.timeout)
    return retained(a.port, a.count, a.timeout)


if __name__ == "__main__":
    sys.exit(main())
