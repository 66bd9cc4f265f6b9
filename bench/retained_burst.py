"""S5b's burst of retained messages in memory, for callgrind: the broker's instructions per
retained message, the event loop and the store's writer thread apart.

usage: python bench/retained_burst.py [--count 20000] [--until commit|fold] [--dry]

One client (a transport that keeps nothing) hands the broker ``count`` retained QoS 0
messages of 64 bytes on S5b's topics, 1,000 a read as bench/s5.py writes them, then the
QoS 1 PUBLISH whose PUBACK S5b waits for; the store is a real ``SqliteStore`` in a
temporary directory with the default settings. ``--until commit`` stops once the writer
has committed everything (S5b's publish window and the commits right after it);
``--until fold`` also waits until the retained journal is folded into the ``retained``
table (the deferred part). Run it under
``valgrind --tool=callgrind --separate-threads=yes`` with ``--dry`` (the same packets
encoded, not handed over) and without: the difference of each thread's total over the
count is its share per message, start-up, encoding and shutdown cancelled out.
Instruction counts, unlike time, do not move with what else runs on the machine.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import tempfile

PER_READ = 1000


async def run(count: int, until: str, dry: bool = False) -> None:
    from interp import NullTransport

    from ferrymq.config import Settings
    from ferrymq.core.broker import Broker
    from ferrymq.core.client import Client
    from ferrymq.mqtt.codec import encode
    from ferrymq.mqtt.packets import Connect, Publish
    from ferrymq.storage.sqlite import SqliteStore

    loop = asyncio.get_running_loop()
    tmp = tempfile.mkdtemp(prefix="ferrymq-burst-")
    try:
        settings = Settings(sys_interval=0, data_dir=tmp)
        store = SqliteStore(settings.db_path, settings.flush_interval)
        store.open()
        broker = Broker(settings, store, loop)
        broker.load_state()
        broker.start()
        await broker.finish_restore(loop.create_future())
        client = Client(broker, NullTransport())
        client.data_received(encode(Connect("burst"), 4))
        payload = bytes(64)
        reads = [
            b"".join(
                encode(Publish(f"retained/{i // 1000}/{i % 1000}", payload, 0, True), 4)
                for i in range(lo, min(count, lo + PER_READ))
            )
            for lo in range(0, count, PER_READ)
        ]
        reads.append(encode(Publish("s5/sync", b"sync", 1, packet_id=1), 4))
        for data in reads[-1:] if dry else reads:
            client.data_received(data)
            await asyncio.sleep(0)
        await store.call(store.flush)
        if until == "fold":
            while getattr(store, "_journal_rows", 0):  # a store without a journal: none
                await asyncio.sleep(store.flush_interval)
        broker.shutdown()
        store.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--count", type=int, default=20_000)
    ap.add_argument("--until", choices=("commit", "fold"), default="commit")
    ap.add_argument("--dry", action="store_true", help="encode the packets, hand over none")
    args = ap.parse_args()
    asyncio.run(run(args.count, args.until, args.dry))
    print(os.getpid())


if __name__ == "__main__":
    main()
