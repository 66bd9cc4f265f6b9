"""The seam through which a piece of cluster work joins a node's Redis lifecycle.

``ClusterNode`` owns the connection to Redis: it connects, resynchronises and
serves until the connection fails, then retries. A part (the client registry,
the RPC between nodes, the admin-data sync, ...) is handed that connection at
each step instead of keeping one of its own, so that every part sees the same
outage, logs nothing of its own about it, and resynchronises after it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from redis import asyncio as aioredis

#: Stream entries (id, fields) as XRANGE answers on the node's client, whose replies are
#: bytes (redis' stubs say bytes | str, for a client with decode_responses).
StreamEntries = list[tuple[bytes, dict[bytes, bytes]]]
#: The reply of XREAD / XREADGROUP on that client: per stream, its entries.
StreamReply = list[tuple[bytes, StreamEntries]]


class ClusterPart(Protocol):
    """One piece of a node's cluster work, driven by ``ClusterNode``."""

    async def resync(self, redis: aioredis.Redis) -> None:
        """After every (re)connection, before ``run``: bring this part's state in line with
        Redis. An exception here fails the connection (the node retries)."""

    async def run(self, redis: aioredis.Redis) -> None:
        """A loop that runs while the connection holds; it returns only by raising (a Redis
        error ends the connection and the node reconnects)."""

    def went_down(self) -> None:
        """The connection was lost: pause what needs Redis (no Redis call here)."""

    async def stop(self, redis: aioredis.Redis | None) -> None:
        """The node is leaving the cluster: remove this part's records (``redis`` is None
        when the node is not connected). Bounded by the node's own stop wait."""
