"""SUBACK latency on a three-node cluster: a client on node 2 subscribes to 100 filters no
node had (each SUBACK waits for its route); prints the median and p90 in milliseconds.

Usage: python bench/suback_latency.py [count]  (needs redis-server; uses the test support)
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "support"))

from clients import TestClient
from redis_server import RedisServer, connect, start_nodes


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 100
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        redis = RedisServer(root / "redis").start()
        nodes = start_nodes(redis, root, 3)
        made: list[TestClient] = []
        try:
            time.sleep(3)  # every node has read the others' heartbeats
            sub = connect(made, nodes[1].port, "suback-latency")
            times = []
            for i in range(count):
                start = time.perf_counter()
                sub.subscribe(f"suback-latency/{i}", 1)
                times.append((time.perf_counter() - start) * 1000)
            times.sort()
            print(
                f"SUBACK of a new route, 3 nodes, n={count}: median "
                f"{statistics.median(times):.2f} ms, p90 {times[int(count * 0.9)]:.2f} ms"
            )
        finally:
            for c in made:
                c.disconnect()
            for node in nodes:
                node.stop()
            redis.stop()


if __name__ == "__main__":
    main()
