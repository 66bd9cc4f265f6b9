"""CPU time per message of the broker's own code, in memory: compiled against pure Python.

usage: python bench/interp.py [--messages 200000] [--rounds 3] [--workloads a,b]

Each workload runs in a fresh child process, alternately compiled and with
FERRYMQ_PURE_PYTHON=1, and reports microseconds of CPU time per delivered message (the
best of ``--rounds``); ``decode-publish`` is the decoder alone, per PUBLISH;
``fan-in-qos0-cluster`` is ``fan-in-qos0`` on a clustered node's broker (``ClusterBroker``
as joined, no other node subscribing, no Redis: L1's local traffic). ``cross-send`` is
X1's node 1: ``fan-in-qos0``'s publishers on a clustered node whose every message goes
to one other node (its route cached), framed into the outbox, which is emptied as the
sender would; ``cross-receive`` is X1's node 2: batches of ``BATCH`` forwarded frames
read (``codec.read_batch``) and dispatched to one local subscriber (``dispatch_remote``).
``pairs-qos1-each`` is ``pairs-qos1`` with one message a read and its PUBACK in the
next, as S3a's 5,000 msg/s arrive: what each read costs besides its messages counts.
The broker
core runs on an asyncio loop with transports that keep nothing, so sockets, the kernel and
the load generator are out of the figure: it is the interpreter's share of bench/run.py's
S1 and S3b, and CPU time hardly moves when other programs load the machine, where
throughput does."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from typing import Any

PUBLISHERS, PAIRS, WINDOW, BATCH = 20, 50, 32, 50
WORKLOADS = (
    "decode-publish",
    "fan-in-qos0",
    "fan-in-qos0-cluster",
    "pairs-qos1",
    "pairs-qos1-each",
    "cross-send",
    "cross-receive",
)


class NullTransport:
    """The transport methods ``core.Client`` calls; keeps the bytes only when asked."""

    def __init__(self, keep: bool = False) -> None:
        self.keep = keep
        self.data = bytearray()

    def write(self, data: bytes) -> None:
        if self.keep:
            self.data += data

    def is_closing(self) -> bool:
        return False

    def close(self) -> None:
        pass

    def can_write_eof(self) -> bool:
        return False

    def abort(self) -> None:
        pass

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def get_extra_info(self, name: str, default: object = None) -> object:
        return ("127.0.0.1", 1) if name == "peername" else default


def publish_ids(data: bytearray) -> list[int]:
    """The packet ids of the QoS 1 PUBLISH packets in ``data`` (v3.1.1), and clears it."""
    ids, pos = [], 0
    while pos < len(data):
        first, length, shift = data[pos], 0, 0
        pos += 1
        while True:
            byte = data[pos]
            pos += 1
            length |= (byte & 0x7F) << shift
            shift += 7
            if byte < 0x80:
                break
        if first >> 4 == 3:
            topic = int.from_bytes(data[pos : pos + 2], "big")
            ids.append(int.from_bytes(data[pos + 2 + topic : pos + 4 + topic], "big"))
        pos += length
    del data[:]
    return ids


def new_broker(clustered: bool) -> Any:
    """A standalone ``Broker``, or a clustered node's as joined (no Redis: nothing to send)."""
    from ferrymq.config import Settings
    from ferrymq.core.broker import Broker

    loop = asyncio.get_running_loop()
    if not clustered:
        return Broker(Settings(sys_interval=0), None, loop)
    from ferrymq.cluster.broker import clustered_broker

    settings = Settings(node_name="me", sys_interval=0, cluster_redis_url="redis://unused")
    broker = clustered_broker(settings, None, loop)
    broker.node.up = True  # joined: what it forwarded would wait in its outbox
    broker.node.subacks.bound = 0.0  # no other node to wait for at SUBACK
    return broker


async def run(workload: str, messages: int) -> float:
    """CPU seconds per delivered message of one workload."""
    from ferrymq.core.client import Client
    from ferrymq.mqtt.codec import encode
    from ferrymq.mqtt.packets import Connect, Puback, Publish, Subscribe, SubscriptionOptions

    clustered = workload.endswith("-cluster") or workload.startswith("cross-")
    workload = workload.removesuffix("-cluster")
    broker = new_broker(clustered)
    broker.start()

    def client(name: str, keep: bool = False) -> tuple[Client, NullTransport]:
        transport = NullTransport(keep)
        c = Client(broker, transport)
        c.data_received(encode(Connect(name), 4))
        return c, transport

    async def feed(clients: list[Client], chunks: list[bytes]) -> float:
        """CPU seconds to hand each client its chunk and let the loop flush the results."""
        start = time.process_time()
        for c, chunk in zip(clients, chunks, strict=True):
            c.data_received(chunk)
        for _ in range(3):
            await asyncio.sleep(0)
        return time.process_time() - start

    def publishers() -> tuple[list[Client], list[bytes]]:
        """fan-in's publishers, each with its chunk of BATCH QoS 0 messages to its topic."""
        pubs = [client(f"pub{i}")[0] for i in range(PUBLISHERS)]
        chunks = [
            b"".join(encode(Publish(f"bench/{i}", b"x" * 64), 4) for _ in range(BATCH))
            for i in range(PUBLISHERS)
        ]
        return pubs, chunks

    spent = 0.0
    delivered = 0
    if workload == "fan-in-qos0":
        sub, _ = client("sub")
        sub.data_received(encode(Subscribe(1, [SubscriptionOptions("bench/#")]), 4))
        pubs, chunks = publishers()
        await feed([], [])
        while delivered < messages:
            spent += await feed(pubs, chunks)
            delivered += PUBLISHERS * BATCH
    elif workload in ("pairs-qos1", "pairs-qos1-each"):
        window = 1 if workload == "pairs-qos1-each" else WINDOW
        pairs = []
        for i in range(PAIRS):
            sub, sub_out = client(f"s{i}", keep=True)
            sub.data_received(encode(Subscribe(1, [SubscriptionOptions(f"pair/{i}", qos=1)]), 4))
            pub, _ = client(f"p{i}")
            pairs.append((pub, sub, sub_out, f"pair/{i}"))
        await feed([], [])
        for _, _, sub_out, _ in pairs:
            del sub_out.data[:]
        next_id = 1
        while delivered < messages:
            ids = range(next_id, next_id + window)
            next_id = next_id + window if next_id + 2 * window < 65535 else 1
            chunks = [
                b"".join(encode(Publish(topic, b"x" * 256, qos=1, packet_id=p), 4) for p in ids)
                for _, _, _, topic in pairs
            ]
            spent += await feed([pub for pub, _, _, _ in pairs], chunks)
            acks = [
                b"".join(encode(Puback(p), 4) for p in publish_ids(sub_out.data))
                for _, _, sub_out, _ in pairs
            ]
            spent += await feed([sub for _, sub, _, _ in pairs], acks)
            delivered += PAIRS * window
    elif workload == "decode-publish":
        from ferrymq.mqtt.codec import Decoder

        decoder = Decoder(server=True, version=4)
        chunk = b"".join(encode(Publish(f"bench/{i % 20}", b"x" * 64), 4) for i in range(BATCH))
        while delivered < messages:
            start = time.process_time()
            decoder.feed(chunk)
            spent += time.process_time() - start
            delivered += BATCH
    elif workload == "cross-send":
        broker.node.replica.add("other", "bench/#")
        outbox = broker.node.outbox
        pubs, chunks = publishers()
        await feed([], [])
        while delivered < messages:
            spent += await feed(pubs, chunks)
            start = time.process_time()
            outbox.take()  # what the sender joins into one command per node
            spent += time.process_time() - start
            delivered += PUBLISHERS * BATCH
    elif workload == "cross-receive":
        from ferrymq.cluster.codec import frame, read_batch
        from ferrymq.model.message import Message

        sub, _ = client("sub")
        sub.data_received(encode(Subscribe(1, [SubscriptionOptions("bench/#")]), 4))
        batch = b"".join(
            frame(Message(f"bench/{i % PUBLISHERS}", b"x" * 64, publisher="pub"))
            for i in range(BATCH)
        )
        await feed([], [])
        forever = float("inf")
        while delivered < messages:
            start = time.process_time()
            got, served = read_batch(batch)
            broker.dispatch_remote(got, served, 0, None, forever)
            for _ in range(3):
                await asyncio.sleep(0)
            spent += time.process_time() - start
            delivered += BATCH
    else:
        raise SystemExit(f"unknown workload {workload}")
    broker.shutdown()
    return spent / delivered


def child(workload: str, messages: int) -> None:
    from ferrymq import native

    per_message = asyncio.run(run(workload, messages))
    print(json.dumps({"build": native.SUMMARY, "us": per_message * 1e6}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--messages", type=int, default=200_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--workloads", default=",".join(WORKLOADS))
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child, args.messages)
        return
    print("| workload | compiled µs/msg | pure µs/msg | pure / compiled |")
    print("|---|---:|---:|---:|")
    builds = set()
    for workload in args.workloads.split(","):
        best: dict[str, list[float]] = {"compiled": [], "pure": []}
        for _ in range(args.rounds):
            for mode in ("compiled", "pure"):
                env = dict(os.environ)
                env.pop("FERRYMQ_PURE_PYTHON", None)
                if mode == "pure":
                    env["FERRYMQ_PURE_PYTHON"] = "1"
                out = subprocess.run(
                    [
                        sys.executable,
                        __file__,
                        "--child",
                        workload,
                        "--messages",
                        str(args.messages),
                    ],
                    env=env,
                    capture_output=True,
                    text=True,
                    check=True,
                ).stdout
                result = json.loads(out.strip().splitlines()[-1])
                builds.add(result["build"])
                best[mode].append(result["us"])
        c, p = min(best["compiled"]), min(best["pure"])
        print(f"| {workload} | {c:.2f} | {p:.2f} | {p / c:.2f} |")
        print(f"<!-- {workload} all rounds: {json.dumps(best)} -->", file=sys.stderr)
    print(f"\nbest of {args.rounds} rounds each; builds: {'; '.join(sorted(builds))}")


if __name__ == "__main__":
    main()
