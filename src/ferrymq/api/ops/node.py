"""The operations about the node itself: stats, metrics, listeners, routes, alarms,
topic metrics and a client's ACL cache."""

from __future__ import annotations

from typing import Any

from ferrymq.api.errors import BAD_PARAMETER, bad_request
from ferrymq.api.ops import NodeContext, node_op
from ferrymq.api.paging import window
from ferrymq.core.topic_metrics import TopicMetricsError


@node_op("stats")
async def _stats(c: NodeContext) -> dict[str, int]:
    return c.broker.stats()


@node_op("has_route")
async def _has_route(c: NodeContext, topic: str) -> bool:
    return c.broker.router.has_route(topic)


@node_op("alarms")
async def _alarms(c: NodeContext, which: str) -> list[dict[str, Any]]:
    return c.broker.alarm_checks.alarms.listed(which)


@node_op("deactivate_alarm")
async def _deactivate_alarm(c: NodeContext, name: str) -> bool:
    return c.broker.alarm_checks.alarms.deactivate(name)


@node_op("clear_alarm_history")
async def _clear_alarm_history(c: NodeContext) -> None:
    c.broker.alarm_checks.alarms.clear_history()


@node_op("topic_metrics")
async def _topic_metrics(c: NodeContext) -> dict[str, dict[str, Any]]:
    return {t: m.as_dict() for t, m in c.broker.topic_metrics.watched.items()}


@node_op("register_topic_metrics")
async def _register_topic_metrics(c: NodeContext, topic: str) -> None:
    try:
        c.broker.topic_metrics.register(topic)
    except TopicMetricsError as exc:
        raise bad_request(BAD_PARAMETER, str(exc)) from None


@node_op("unregister_topic_metrics")
async def _unregister_topic_metrics(c: NodeContext, topic: str) -> bool:
    return c.broker.topic_metrics.unregister(topic)


@node_op("unregister_all_topic_metrics")
async def _unregister_all_topic_metrics(c: NodeContext) -> None:
    c.broker.topic_metrics.unregister_all()


@node_op("metrics")
async def node_metrics(c: NodeContext) -> dict[str, int]:
    return dict(c.broker.metrics)


@node_op("listeners")
async def node_listeners(c: NodeContext) -> list[dict[str, Any]]:
    """This node's MQTT listeners in EMQX's shape."""
    if c.listeners is not None:
        described = c.listeners.describe()
    else:
        s = c.settings
        described = [
            {
                "protocol": "mqtt:tcp",
                "identifier": "tcp:default",
                "listen_on": addr,
                "acceptors": 1,
                "max_conns": s.max_connections,
                "current_conns": len(c.broker.connections),
                "shutdown_count": [],
                "running": True,
            }
            for addr in c.mqtt_listen
        ]
    return described


@node_op("routes")
async def _routes(c: NodeContext, start: int, limit: int) -> dict[str, Any]:
    node = c.node
    return window(
        c.broker.router.route_filters(), start, limit, lambda t: {"topic": t, "node": node}
    )


@node_op("acl_cache")
async def _acl_cache(c: NodeContext, clientid: str) -> list[dict[str, str]] | None:
    if clientid not in c.broker.clients:
        return None
    return [
        {"access": access, "topic": topic, "result": "allow" if allowed else "deny"}
        for access, topic, allowed in c.broker.acl.cached(clientid)
    ]


@node_op("clean_acl_cache")
async def _clean_acl_cache(c: NodeContext, clientid: str) -> bool | None:
    if clientid not in c.broker.clients:
        return None
    c.broker.acl.forget_client(clientid)
    return True
