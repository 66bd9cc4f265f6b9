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

Blocking sockets (``ferrymq.loadgen.blocking``) and packets encoded before they
are sent, many to a write, as in s5.py.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import time

from s5 import publish_retained

from ferrymq.loadgen.blocking import BlockingClient, ConnectionClosed, connect
from ferrymq.mqtt.packets import Disconnect, Packet, Puback, Publish, SubscriptionOptions

WINDOW = 1000  # QoS 1 PUBLISH packets in flight while building the state


def _ack_all(client: BlockingClient, packets: list[Packet]) -> int:
    """PUBACK every QoS 1 PUBLISH in ``packets``; return how many PUBLISHes there were."""
    reply = client.mqtt.reply
    pubs = [p for p in packets if isinstance(p, Publish)]
    acks = [reply(p) for p in pubs if p.qos == 1]
    if acks:
        client.send(b"".join(a for a in acks if a is not None))
    return len(pubs)


def state(port: int, retained: int, sessions: int, messages: int, timeout: float) -> int:
    t0 = time.monotonic()
    deadline = t0 + timeout
    for i in range(sessions):
        client, _ = connect(port, f"dur-{i}", timeout, clean=False)
        client.send(client.mqtt.subscribe([SubscriptionOptions(f"dur/{i}", 1)]))
        client.read(1, deadline)
        client.send(Disconnect())
        client.close()
    pub, _ = connect(port, "dur-pub", timeout)
    publish = pub.mqtt.publish
    payload = bytes(64)
    acked = 0
    chunk: list[bytes] = []
    total = sessions * messages
    for n in range(total):
        pid = n % WINDOW + 1
        chunk.append(publish(f"dur/{n % sessions}", payload, 1, pid=pid))
        if len(chunk) == WINDOW or n == total - 1:
            pub.send(b"".join(chunk))
            got = pub.read(len(chunk), deadline)
            acked += sum(1 for p in got if isinstance(p, Puback))
            chunk.clear()
    sync = publish("durret/sync", b"sync", 1, True, pid=1)
    publish_retained(pub, retained, "durret", sync)
    done = any(isinstance(p, Puback) for p in pub.read(1, deadline))
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
            client, _ = connect(port, "dur-probe", 1.0)
        except (OSError, ConnectionError):
            time.sleep(0.002)
            continue
        up = time.time()
        client.close()
        break
    result: dict = {"up_at": up}
    if up is None:
        result["status"] = "timeout"
        print(json.dumps(result), flush=True)
        return 1
    # Resume the stored session: the CONNACK, then the messages it held.
    session, connack = connect(port, "dur-0", timeout, clean=False)
    result["resumed_at"] = time.time()  # the CONNACK of a stored session
    present = bool(connack.session_present)
    got = _ack_all(session, session.read(len(session.pending), deadline))
    while got < messages:
        try:
            more = session.read(1, min(deadline, time.monotonic() + 2.0))
        except ConnectionClosed:
            break
        if not more:
            break
        got += _ack_all(session, more)
    session.close()
    check, _ = connect(port, "dur-check", timeout)
    check.send(check.mqtt.subscribe([SubscriptionOptions("durret/99/999", 0)]))
    packets = check.read(2, time.monotonic() + 5)
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
