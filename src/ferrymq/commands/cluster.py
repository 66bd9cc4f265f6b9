"""``ferrymq cluster status``: the nodes of a cluster, their state, clients and routes,
read from its Redis (``--cluster-redis-url``, else ``FERRYMQ_CLUSTER_REDIS_URL``, else
``cluster_redis_url`` of ``--config``)."""

from __future__ import annotations

import argparse
from typing import Any

from ferrymq import config
from ferrymq.commands.common import fail, print_table

_STATUS = (
    "Print every node of the cluster with its state (Running, or Stopped once its "
    "heartbeat expired), its connected clients and its routes, read from Redis (no node "
    "is asked). The Redis URL: --cluster-redis-url, else FERRYMQ_CLUSTER_REDIS_URL, else "
    "cluster_redis_url in --config. Exits 1 when Redis cannot be reached, 2 when no URL "
    "is given."
)


def register(sub: Any) -> None:
    cmds = sub.add_parser(
        "cluster", help="look at a cluster of ferrymq nodes (docs/cluster.md)"
    ).add_subparsers(dest="cluster_command", required=True)
    status = cmds.add_parser("status", help="nodes, state, clients, routes", description=_STATUS)
    status.add_argument(
        "--cluster-redis-url",
        dest="cluster_redis_url",
        help="redis://, rediss://, redis+sentinel:// or rediss+sentinel:// URL",
    )
    status.add_argument("--config", "-c", help="TOML config file (for cluster_redis_url)")
    status.set_defaults(func=_status)


def _status(args: argparse.Namespace) -> int:
    from redis.exceptions import RedisError

    from ferrymq.cluster.redis_url import safe_url
    from ferrymq.cluster.status import read_status

    try:
        settings = config.load(args.config, {"cluster_redis_url": args.cluster_redis_url})
    except config.ConfigError as exc:
        return fail(str(exc), 2)
    url = settings.cluster_redis_url
    if not url:
        return fail(
            "no Redis URL: pass --cluster-redis-url, set FERRYMQ_CLUSTER_REDIS_URL, "
            "or cluster_redis_url in the --config file",
            2,
        )
    try:
        nodes = read_status(url)
    except config.ConfigError as exc:
        return fail(str(exc), 2)
    except (RedisError, OSError) as exc:
        return fail(f"cannot read the cluster from Redis at {safe_url(url)}: {exc}")
    running = sum(1 for n in nodes if n.running)
    print(f"cluster at {safe_url(url)}: {len(nodes)} nodes, {running} running")
    print_table(
        ("NODE", "STATE", "CLIENTS", "ROUTES", "VERSION"),
        [(n.name, n.state, n.clients, n.routes, n.version) for n in nodes],
    )
    return 0
