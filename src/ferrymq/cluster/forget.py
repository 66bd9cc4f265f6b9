"""``ferrymq cluster forget NODE``: a node that is gone for good, off the cluster's list.

A node whose heartbeat expired stays listed as ``Stopped`` (``/api/v4/nodes``,
``ferrymq cluster status``) until it restarts, so that a crash is visible.
When it will not come back (the machine was retired), this removes it from
Redis without restarting it, as EMQX 4.4's ``emqx_ctl cluster force-leave``
does (EMQX has no API endpoint for it; neither has ferrymq).

Rules kept here (one Lua script, so nothing runs between the check and the
removal):
- a running node (its ``alive`` key holds) is refused: it would announce
  itself again within a second, and a running node leaves by being stopped;
- what goes: its heartbeat record (``nodes``), whatever routes Redis still
  holds for it (normally already removed when it was marked down), and one
  ``leave`` entry on the change stream, so every node drops it from its
  view at once, as when a node stops cleanly;
- what stays: its persistent sessions (``node-clients:{node}``) and inbox,
  which a running node takes in as after any node's death
  (``cluster/clients.py``), whether or not it is forgotten.
"""

from __future__ import annotations

import asyncio

from ferrymq.cluster import redis_url
from ferrymq.cluster.node import (
    CHANGES,
    CHANGES_MAXLEN,
    NODES,
    alive_key,
    node_routes_key,
    route_key,
)

#: What ``forget`` answers: the node's routes removed (>= 0), or one of these.
RUNNING, UNKNOWN = -1, -2

_FORGET = """
if redis.call('EXISTS', KEYS[1]) == 1 then return -1 end
if redis.call('HEXISTS', KEYS[2], ARGV[1]) == 0 then return -2 end
local filters = redis.call('SMEMBERS', KEYS[3])
for _, f in ipairs(filters) do redis.call('HDEL', ARGV[2] .. f, ARGV[1]) end
redis.call('DEL', KEYS[3])
redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[3], '*', 'op', 'leave', 'node', ARGV[1])
return #filters
"""


def forget(url: str, node: str, timeout: float = 3.0) -> int:
    """Remove the stopped ``node`` from the cluster at ``url``: the number of its routes
    removed, or ``RUNNING`` / ``UNKNOWN``. Raises ``redis.RedisError`` (or ``OSError``)
    when Redis cannot be reached, ``config.ConfigError`` for a malformed URL."""
    return asyncio.run(_forget(redis_url.parse(url), node, timeout))


async def _forget(target: redis_url.RedisTarget, node: str, timeout: float) -> int:
    client = redis_url.client(target, socket_connect_timeout=timeout, socket_timeout=timeout)
    try:
        keys = [alive_key(node), NODES, node_routes_key(node), CHANGES]
        result = await client.eval(  # type: ignore[misc]
            _FORGET, len(keys), *keys, node, route_key(""), CHANGES_MAXLEN
        )
    finally:
        await redis_url.close(client)
    return int(result)
