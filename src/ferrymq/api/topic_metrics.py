"""``/topic-metrics``: message counters and rates for registered topic names (EMQX 4.4 shapes).

``GET /topic-metrics`` is ``[{topic, metrics}]`` and ``GET /topic-metrics/{topic}``
the ``metrics`` object: ``messages.in|out|dropped|qos0.in|...`` each as
``.count`` and ``.rate`` (messages per second, a five-second moving
average). Counts of all nodes are summed, as ``emqx_mod_api_topic_metrics``
does; registering registers on every node.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from ferrymq.api.cluster import cluster
from ferrymq.api.context import ctx
from ferrymq.api.errors import ILLEGAL_TOPIC, UNKNOWN_ERROR, bad_request, not_found
from ferrymq.api.params import as_object, get_str, read_json
from ferrymq.api.routes import STR, Route, arr, obj, ok
from ferrymq.mqtt.topics import TopicError, validate_topic_name

_METRICS = {"type": "object", "additionalProperties": {"type": "number"}}


def _topic(request: web.Request, topic: str) -> str:
    s = ctx(request).settings
    try:
        validate_topic_name(topic, s.max_topic_levels, s.max_topic_length)
    except TopicError as exc:
        raise bad_request(ILLEGAL_TOPIC, f"topic metrics need a topic name: {exc}") from None
    return topic


def _sum(per_node: list[dict[str, Any]]) -> dict[str, Any]:
    total: dict[str, Any] = {}
    for metrics in per_node:
        for key, value in metrics.items():
            total[key] = total.get(key, 0) + value
    return {k: round(v, 2) if isinstance(v, float) else v for k, v in total.items()}


async def list_all(request: web.Request) -> web.Response:
    answers = await cluster(request).each(lambda node: node.topic_metrics())
    topics: dict[str, list[dict[str, Any]]] = {}
    for _node, per_topic in answers:
        for topic, metrics in per_topic.items():
            topics.setdefault(topic, []).append(metrics)
    return ok([{"topic": t, "metrics": _sum(m)} for t, m in sorted(topics.items())])


async def get_one(request: web.Request) -> web.Response:
    topic = _topic(request, request.match_info["topic"])
    answers = await cluster(request).each(lambda node: node.topic_metrics())
    found = [per_topic[topic] for _node, per_topic in answers if topic in per_topic]
    if not found:
        raise not_found(UNKNOWN_ERROR, f"no topic metrics for {topic!r}")
    return ok(_sum(found))


async def register(request: web.Request) -> web.Response:
    body = as_object(await read_json(request))
    topic = _topic(request, get_str(body, "topic") or "")

    # A topic some node refuses (already registered, too many) is 400 / 108.
    await cluster(request).each(lambda node: node.register_topic_metrics(topic))
    return ok()


async def unregister(request: web.Request) -> web.Response:
    topic = _topic(request, request.match_info["topic"])
    answers = await cluster(request).each(lambda node: node.unregister_topic_metrics(topic))
    if not any(removed for _node, removed in answers):
        raise not_found(UNKNOWN_ERROR, f"no topic metrics for {topic!r}")
    return ok()


async def unregister_all(request: web.Request) -> web.Response:
    await cluster(request).each(lambda node: node.unregister_all_topic_metrics())
    return ok()


_PATH = "/topic-metrics/{topic:.+}"
ROUTES = [
    Route(
        "list_all_topic_metrics",
        "GET",
        "/topic-metrics",
        list_all,
        "Counters and rates of every registered topic",
        data=arr(obj({"topic": STR, "metrics": _METRICS})),
        errors=(),
    ),
    Route(
        "list_topic_metrics",
        "GET",
        _PATH,
        get_one,
        "Counters and rates of one registered topic (URL-encoded)",
        data=_METRICS,
        errors=(400, 404),
    ),
    Route(
        "register_topic_metrics",
        "POST",
        "/topic-metrics",
        register,
        "Start counting messages of a topic name (at most 512 topics)",
        body=obj({"topic": STR}, ("topic",)),
    ),
    Route(
        "unregister_all_topic_metrics",
        "DELETE",
        "/topic-metrics",
        unregister_all,
        "Stop counting for every topic",
        errors=(),
    ),
    Route(
        "unregister_topic_metrics",
        "DELETE",
        _PATH,
        unregister,
        "Stop counting for one topic",
        errors=(400, 404),
    ),
]
