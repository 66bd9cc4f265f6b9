"""What a retained message costs the broker, in Python allocations.

100,000 retained topics are an ordinary load (S5b in ``make bench``), so one is
kept to the message (one object with slots, its payload bytes and topic: no
encodings cached once delivered), its node in the retained trie, the trie's
flat dict entry, and nothing per message elsewhere: trie levels are interned,
the router forgets one-off topics that no filter matches past a bound, and
the message's created time is its read's.

Measured in a fresh interpreter: after the rest of the suite the same count
comes out about 100 bytes higher, from state earlier tests leave in the process.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

# Bytes per retained message of 64 bytes on ``retained/<i // 1000>/<i % 1000>``,
# published before anyone subscribes: 402 compiled today (a compiled Message is 8 bytes
# larger than a slotted one), 386 pure; 450 compiled with a float boxed per message by
# Message's float parameters, 460 with two boxed in the client and a generic trie node
# (16 bytes more), 560 with a string per trie level, a float per message and every
# topic in the router's set of misses.
BOUND = 430
COUNT = 20_000

MEASURE = f"""
import asyncio, gc, sys, tracemalloc
sys.path.insert(0, {str(Path(__file__).parents[2] / "support")!r})
from memory import Peer, new_broker
from ferrymq.mqtt.codec import encode
from ferrymq.mqtt.packets import Publish

async def main():
    broker = new_broker(None)
    pub = Peer(broker, "pub")
    await pub.connack()
    payload = bytes(64)
    data = b"".join(
        encode(Publish(f"retained/{{i // 1000}}/{{i % 1000}}", payload, 0, True), 4)
        for i in range({COUNT})
    )
    reads = [data[i : i + 65536] for i in range(0, len(data), 65536)]
    del data
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for read in reads:
        pub.send_bytes(read)
    gc.collect()
    per_message = (tracemalloc.get_traced_memory()[0] - before) / {COUNT}
    tracemalloc.stop()
    stored = broker.retained.get("retained/19/999")
    print(len(broker.retained), stored is not None and stored.payload == payload, per_message)
    broker.shutdown()

asyncio.run(main())
"""


def test_a_retained_message_stays_small() -> None:
    out = subprocess.run(
        [sys.executable, "-c", MEASURE], capture_output=True, text=True, timeout=120, check=True
    ).stdout.split()
    count, stored, per_message = int(out[0]), out[1] == "True", float(out[2])
    assert count == COUNT and stored
    assert per_message <= BOUND, f"{per_message:.0f} bytes per retained message"
