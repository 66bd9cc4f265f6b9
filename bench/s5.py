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

Blocking sockets (``ferrymq.loadgen.blocking``) and packets encoded before
they are sent, many to a write: the broker, not this script, should be the
bottleneck; it runs pinned to the generator's CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import sys
import time

from ferrymq.loadgen.blocking import BlockingClient, ConnectionClosed, connect
from ferrymq.mqtt.client import count_packets
from ferrymq.mqtt.packets import PUBLISH, Puback, Suback, SubscriptionOptions

PER_PACKET = 100


def subscription_filter(i: int) -> str:
    return f"+/{i}/w" if i % 10 == 0 else f"bench/{i}/s"


def hold_subscriptions(port: int, count: int, clients: int, timeout: float) -> int:
    start = time.monotonic()
    deadline = start + timeout
    held: list[BlockingClient] = []
    per_client = -(-count // clients)
    granted = 0
    status = "ok"
    try:
        for c in range(clients):
            client, _ = connect(port, f"s5subs-{os.getpid()}-{c}", timeout)
            held.append(client)
            first = c * per_client
            last = min(count, first + per_client)
            packets = [
                client.mqtt.subscribe(
                    [
                        SubscriptionOptions(subscription_filter(i))
                        for i in range(lo, min(last, lo + PER_PACKET))
                    ]
                )
                for lo in range(first, last, PER_PACKET)
            ]
            window = 20  # SUBSCRIBE packets in flight at once
            for k in range(0, len(packets), window):
                batch = packets[k : k + window]
                client.send(b"".join(batch))
                acks = client.read(len(batch), deadline)
                for ack in acks:
                    if isinstance(ack, Suback):
                        granted += sum(1 for code in ack.reason_codes if code < 0x80)
                if len(acks) < len(batch):
                    raise TimeoutError("SUBACKs did not arrive in time")
    except (OSError, ConnectionError, ConnectionClosed) as exc:
        status = f"error: {exc}" if not isinstance(exc, TimeoutError) else "timeout"
    line = {
        "subscribed": granted,
        "clients": len(held),
        "status": status,
        "subscribe_s": round(time.monotonic() - start, 3),
    }
    print(json.dumps(line), flush=True)
    if status == "ok":
        sys.stdin.read()  # hold until the driver closes our stdin
    for client in held:
        client.close()
    return 0 if status == "ok" else 1


def publish_retained(client: BlockingClient, count: int, prefix: str, sync: bytes) -> None:
    """``count`` retained QoS 0 messages of 64 bytes on ``<prefix>/<i // 1000>/<i % 1000>``,
    1,000 per write, then ``sync`` (a packet whose acknowledgement says all arrived)."""
    payload = bytes(64)
    publish = client.mqtt.publish
    chunk = []
    for i in range(count):
        chunk.append(publish(f"{prefix}/{i // 1000}/{i % 1000}", payload, 0, True))
        if len(chunk) == 1000:
            client.send(b"".join(chunk))
            chunk.clear()
    chunk.append(sync)
    client.send(b"".join(chunk))


def retained(port: int, count: int, timeout: float) -> int:
    result: dict = {"count": count}
    t0 = time.monotonic()
    pub, _ = connect(port, f"s5ret-pub-{os.getpid()}", timeout)
    sync = pub.mqtt.publish("s5/sync", b"sync", 1, pid=1)
    publish_retained(pub, count, "retained", sync)
    acks = pub.read(1, t0 + timeout)
    result["load_s"] = round(time.monotonic() - t0, 3)
    if not any(isinstance(a, Puback) for a in acks):
        result["status"] = "load_timeout"
        print(json.dumps(result), flush=True)
        return 1
    sub, _ = connect(port, f"s5ret-sub-{os.getpid()}", timeout)
    sock = sub.sock  # read raw: the count must keep up with the broker (count_packets)
    sock.setblocking(False)
    t1 = time.monotonic()
    sub.send(sub.mqtt.subscribe([SubscriptionOptions("#")]))
    deadline = t1 + timeout
    received = 0
    buf = b""
    last = t1
    while received < count:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        ready, _, _ = select.select([sock], [], [], left)
        if not ready:
            continue
        data = sock.recv(1 << 20)
        if not data:
            break
        buf = buf + data if buf else data
        got, pos = count_packets(buf, 0, PUBLISH)
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
