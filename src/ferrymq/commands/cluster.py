"""``ferrymq cluster status``: the nodes of a cluster, their state, clients and routes,
read from its Redis (``--cluster-redis-url``, else ``FERRYMQ_CLUSTER_REDIS_URL``, else
``cluster_redis_url`` of ``--config``); ``ferrymq cluster forget NODE``: a stopped node
off that list."""

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


_FORGET = (
    "Remove a node that is gone for good (Stopped: its heartbeat expired) from the "
    "cluster's list, without restarting it, as EMQX's 'cluster force-leave'. A running "
    "node is refused (stop it instead). Its persistent sessions are kept: a running node "
    "takes them in. The Redis URL as for 'status'. Exits 1 when the node is running or "
    "unknown, or Redis cannot be reached, 2 when no URL is given."
)


def register(sub: Any) -> None:
    cmds = sub.add_parser(
        "cluster", help="look at a cluster of ferrymq nodes (docs/cluster.md)"
    ).add_subparsers(dest="cluster_command", required=True)
    status = cmds.add_parser("status", help="nodes, state, clients, routes", description=_STATUS)
    forget = cmds.add_parser(
        "forget",
        aliases=["force-leave"],
        help="remove a stopped node from the cluster's list",
        description=_FORGET,
    )
    forget.add_argument("node", help="the node's name, as 'cluster status' lists it")
    for parser in (status, forget):
        parser.add_argument(
            "--cluster-redis-url",
            dest="cluster_redis_url",
            help="redis://, rediss://, redis+sentinel:// or rediss+sentinel:// URL",
        )
        parser.add_argument("--config", "-c", help="TOML config file (for cluster_redis_url)")
    status.set_defaults(func=_status)
    forget.set_defaults(func=_forget)


def _redis_url(args: argparse.Namespace) -> str:
    """The URL of ``--cluster-redis-url``, the environment or ``--config``; ConfigError
    when none is given or the file is wrong."""
    settings = config.load(args.config, {"cluster_redis_url": args.cluster_redis_url})
    if not settings.cluster_redis_url:
        raise config.ConfigError(
            "no Redis URL: pass --cluster-redis-url, set FERRYMQ_CLUSTER_REDIS_URL, "
            "or cluster_redis_url in the --config file"
        )
    return settings.cluster_redis_url


def _forget(args: argparse.Namespace) -> int:
    from redis.exceptions import RedisError

    from ferrymq.cluster.forget import RUNNING, UNKNOWN, forget
    from ferrymq.cluster.redis_url import safe_url

    try:
        url = _redis_url(args)
        removed = forget(url, args.node)
    except config.ConfigError as exc:
        return fail(str(exc), 2)
    except (RedisError, OSError) as exc:
        return fail(f"cannot reach the cluster's Redis at {safe_url(url)}: {exc}")
    if removed == RUNNING:
        return fail(f"node {args.node} is running: stop it, it then leaves the cluster itself")
    if removed == UNKNOWN:
        return fail(f"no node {args.node!r} in the cluster at {safe_url(url)}")
    print(f"node {args.node} removed from the cluster ({removed} routes of it removed)")
    return 0


def _status(args: argparse.Namespace) -> int:
    from redis.exceptions import RedisError

    from ferrymq.cluster.redis_url import safe_url
    from ferrymq.cluster.status import read_status

    try:
        url = _redis_url(args)
    except config.ConfigError as exc:
        return fail(str(exc), 2)
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
