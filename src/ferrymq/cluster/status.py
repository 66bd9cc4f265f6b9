"""What ``ferrymq cluster status`` shows, read from Redis alone: no node is asked, so it
also describes a cluster whose nodes are frozen or gone.

A node is listed from its heartbeat record (``ferrymq:nodes``), ``Running``
while its ``alive`` key holds, else ``Stopped`` (as ``/api/v4/nodes`` shows
it); its clients are the connections of its last record (at most a second
old; 0 once it is stopped: no one serves them) and its routes the filters
Redis holds for it.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass

from ferrymq.cluster import redis_url
from ferrymq.cluster.node import NODES, alive_key, node_routes_key


@dataclass(frozen=True, slots=True)
class NodeStatus:
    name: str
    running: bool
    clients: int
    routes: int
    version: str

    @property
    def state(self) -> str:
        return "Running" if self.running else "Stopped"


def read_status(url: str, timeout: float = 3.0) -> list[NodeStatus]:
    """Every node Redis knows of, by name; raises ``redis.RedisError`` (or ``OSError``)
    when Redis cannot be reached or read, ``config.ConfigError`` for a malformed URL.
    Any URL form a node takes works here (``redis_url``: TLS, Sentinel)."""
    records, names, replies = asyncio.run(_read(redis_url.parse(url), timeout))
    out = []
    for i, name in enumerate(names):
        try:
            record = json.loads(records[name.encode()])
        except ValueError:
            record = {}
        if not isinstance(record, dict):
            record = {}
        out.append(
            NodeStatus(
                name,
                bool(replies[2 * i]),
                int(record.get("connections", 0)) if replies[2 * i] else 0,
                int(replies[2 * i + 1]),
                str(record.get("version", "")),
            )
        )
    return out


async def _read(
    target: redis_url.RedisTarget, timeout: float
) -> tuple[dict[bytes, bytes], list[str], list[int]]:
    client = redis_url.client(target, socket_connect_timeout=timeout, socket_timeout=timeout)
    try:
        records: dict[bytes, bytes] = await client.hgetall(NODES)  # type: ignore[assignment]  # redis' stubs: str with decode_responses; this client's replies are bytes
        names = sorted(name.decode() for name in records)
        pipe = client.pipeline(transaction=False)
        for name in names:
            pipe.exists(alive_key(name))
            pipe.scard(node_routes_key(name))
        replies = await pipe.execute() if names else []
    finally:
        await redis_url.close(client)
    return records, names, replies
