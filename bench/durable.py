"""Durability helpers: the restart state, and a probe for how long a broker is away.

usage:
  python bench/durable.py state --port P [--retained 100000] [--sessions 1000] [--messages 100]
  python bench/durable.py probe --port P [--sessions 1000] [--messages 100]

``state`` makes ``sessions`` MQTT 3.1.1 persistent sessions (clean session 0,
client ids ``dur-<i>``, each subscribed at QoS 1 to ``dur/<i>``), disconnects
them, then publishes ``messages`` QoS 1 messages of 64 bytes to each of those
topics (so every session holds its own ``messages`` queued messages) and
``retained`` retained QoS 0 messages on ``durret/<i // 1000>/<i % 1000>``;
a retained QoS 1 message at the end, once acknowledged, says the broker has
it all. It prints one JSON line.

``probe`` is started by the driver before it stops the broker: once the port
is closed it connects until a CONNACK comes (and prints when, wall clock),
then resumes session ``dur-0`` (when its CONNACK came, too; acknowledging its
queued messages, which it counts) and checks one retained message.

Plain blocking sockets and pre-encoded packets, as in s5.py.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import time

from s5 import connect, publish_retained, read_packets

from ferrymq.mqtt.codec import Decoder, encode, encode_publish
from ferrymq.mqtt.packets import (
    Connack,
    Connect,
    Disconnect,
    Puback,
    Publish,
    Subscribe,
    SubscriptionOptions,
)

WINDOW = 1000  # QoS 1 PUBLISH packets in flight while building the state


def _session(port: int, client_id: str, timeout: float) -> tuple[socket.socket, bool, list]:
    """Resume a persistent session: the socket, session present, packets read with it."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    sock.sendall(encode(Connect(client_id, clean_start=False, keepalive=0), 4))
    dec = Decoder(server=False, version=4)
    ack = read_packets(sock, dec, 1, time.monotonic() + timeout)
    if not ack or not isinstance(ack[0], Connack) or ack[0].reason_code:
        raise ConnectionError(f"no CONNACK for {client_id}")
    return sock, bool(ack[0].session_present), ack[1:]


def _ack_all(sock: socket.socket, packets: list) -> int:
    """PUBACK every QoS 1 PUBLISH in ``packets``; return how many PUBLISHes there were."""
    pubs = [p for p in packets if isinstance(p, Publish)]
    acks = [encode(Puback(p.packet_id), 4) for p in pubs if p.qos == 1]
    if acks:
        sock.sendall(b"".join(acks))
    return len(pubs)


def state(port: int, retained: int, sessions: int, messages: int, timeout: float) -> int:
    t0 = time.monotonic()
    deadline = t0 + timeout
    for i in range(sessions):
        sock, _, _ = _session(port, f"dur-{i}", timeout)
        sock.sendall(encode(Subscribe(1, [SubscriptionOptions(f"dur/{i}", 1)]), 4))
        read_packets(sock, Decoder(server=False, version=4), 1, deadline)
        sock.sendall(encode(Disconnect(), 4))
        sock.close()
    pub, dec = connect(port, "dur-pub", timeout)
    payload = bytes(64)
    acked = 0
    chunk: list[bytes] = []
    total = sessions * messages
    for n in range(total):
        pid = n % WINDOW + 1
        chunk.append(encode_publish(f"dur/{n % sessions}", payload, 1, False, False, pid, None, 4))
        if len(chunk) == WINDOW or n == total - 1:
            pub.sendall(b"".join(chunk))
            got = read_packets(pub, dec, len(chunk), deadline)
            acked += sum(1 for p in got if isinstance(p, Puback))
            chunk.clear()
    sync = encode_publish("durret/sync", b"sync", 1, True, False, 1, None, 4)
    publish_retained(pub, retained, "durret", sync)
    done = any(isinstance(p, Puback) for p in read_packets(pub, dec, 1, deadline))
    pub.close()
    ok = done and acked == total
    print(
        json.dumps(
            {
                "status": "ok" if ok else "timeout",
                "queued_acked": acked,
                "build_s": round(time.monotonic() - t0, 3),
            }
        ),
        flush=True,
    )
    return 0 if ok else 1


def probe(port: int, messages: int, timeout: float) -> int:
    """Wait until the broker is gone, then connect until a CONNACK comes; then check a
    session and a retained message."""
    t0 = time.monotonic()
    deadline = t0 + timeout
    print(json.dumps({"ready": True}), flush=True)  # the driver stops the broker now
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1.0).close()
        except OSError:
            break
        time.sleep(0.001)
    up = None
    while time.monotonic() < deadline:
        try:
            sock, _ = connect(port, "dur-probe", 1.0)
        except (OSError, ConnectionError):
            time.sleep(0.002)
            continue
        up = time.time()
        sock.close()
        break
    result: dict = {"up_at": up}
    if up is None:
        result["status"] = "timeout"
        print(json.dumps(result), flush=True)
        return 1
    sock, present, packets = _session(port, "dur-0", timeout)
    result["resumed_at"] = time.time()  # the CONNACK of a stored session
    got = _ack_all(sock, packets)
    dec = Decoder(server=False, version=4)
    while got < messages:
        more = read_packets(sock, dec, 1, min(deadline, time.monotonic() + 2.0))
        if not more:
            break
        got += _ack_all(sock, more)
    sock.close()
    check, dec = connect(port, "dur-check", timeout)
    check.sendall(encode(Subscribe(1, [SubscriptionOptions("durret/99/999", 0)]), 4))
    packets = read_packets(check, dec, 2, time.monotonic() + 5)
    check.close()
    result.update(
        session_present=present,
        session_messages=got,
        retained_found=len(packets) == 2,
        status="ok" if present and got >= messages and len(packets) == 2 else "state_lost",
    )
    print(json.dumps(result), flush=True)
    return 0 if result["status"] == "ok" else 1


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("what", choices=("state", "probe"))
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--retained", type=int, default=100_000)
    ap.add_argument("--sessions", type=int, default=1000)
    ap.add_argument("--messages", type=int, default=100)
    ap.add_argument("--timeout", type=float, default=120.0)
    a = ap.parse_args()
    if a.what == "state":
        return state(a.port, a.retained, a.sessions, a.messages, a.timeout)
    return probe(a.port, a.messages, a.timeout)


if __name__ == "__main__":
    sys.exit(main())
