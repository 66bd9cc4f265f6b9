"""``/subscriptions``: every installed subscription, by client, topic, QoS and group.

Each node lists its own sessions' subscriptions (``@node_op``); in cluster mode
the lists of every running node are merged and paged as one.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from aiohttp import web

from ferrymq.api.cluster import cluster, node_op
from ferrymq.api.context import ApiContext
from ferrymq.api.errors import BAD_PARAMETER, ILLEGAL_TOPIC, bad_request
from ferrymq.api.paging import window
from ferrymq.api.params import Queried, QueryOf, query_int, query_pairs
from ferrymq.api.routes import INT, STR, Param, Route, arr, obj, reply
from ferrymq.mqtt.topics import TopicError, validate_topic_name

if TYPE_CHECKING:
    from ferrymq.model.subscription import Subscription

SUBSCRIPTION_SCHEMA = obj({"node": STR, "clientid": STR, "topic": STR, "qos": INT})


def _format(c: ApiContext) -> Any:
    node = c.node

    def fmt(sub: Subscription) -> dict[str, Any]:
        return {"node": node, "clientid": sub.client_id, "topic": sub.topic_filter, "qos": sub.qos}

    return fmt


def _all(c: ApiContext) -> Iterable[Subscription]:
    for session in c.broker.sessions.values():
        yield from session.subscriptions.values()


def _matching(c: ApiContext, topic: str) -> list[Subscription]:
    subs, groups = c.broker.router.match(topic)
    out = list(subs)
    for group in groups:
        out.extend(group.members)
    return out


def _checked(request: Queried) -> int | None:
    """The ``qos`` filter; 400 for a bad ``qos`` or ``_match_topic``."""
    qos = query_int(request, "qos")
    if qos is not None and not 0 <= qos <= 2:
        raise bad_request(BAD_PARAMETER, "query parameter qos must be 0, 1 or 2")
    match_topic = request.query.get("_match_topic")
    if match_topic is not None:
        try:
            validate_topic_name(match_topic)
        except TopicError as exc:
            raise bad_request(ILLEGAL_TOPIC, f"_match_topic: {exc}") from None
    return qos


async def list_subscriptions(request: web.Request) -> web.Response:
    _checked(request)  # a bad filter is 400 here, before any node is asked
    c = cluster(request)
    return reply(await c.paged(request, "subscriptions", query=query_pairs(request)))


async def client_subscriptions(request: web.Request) -> web.Response:
    query = [("clientid", request.match_info["clientid"])]
    return reply(await cluster(request).paged(request, "subscriptions", query=query))


@node_op("subscriptions")
async def _subscriptions(c: ApiContext, query: list[list[str]], start: int, limit: int) -> Any:
    q = QueryOf(query)
    qos = _checked(q)
    clientid = q.query.get("clientid")
    topic = q.query.get("topic")
    share = q.query.get("share")
    match_topic = q.query.get("_match_topic")
    source: Iterable[Subscription]
    if match_topic is not None:
        source = _matching(c, match_topic)
    elif clientid is not None:
        session = c.broker.sessions.get(clientid)
        source = session.subscriptions.values() if session is not None else ()
    else:
        source = _all(c)
    subs = [
        s
        for s in source
        if (clientid is None or s.client_id == clientid)
        and (topic is None or s.topic_filter == topic)
        and (qos is None or s.qos == qos)
        and (share is None or s.share_group == share)
    ]
    return window(subs, start, limit, _format(c))


ROUTES = [
    Route(
        "list_subscriptions",
        "GET",
        "/subscriptions",
        list_subscriptions,
        "Subscriptions of every session",
        query=(
            Param("clientid", "string", "exact client id"),
            Param("topic", "string", "exact topic filter, as subscribed ($share/g/t for shared)"),
            Param("qos", "integer", "granted QoS"),
            Param("share", "string", "shared subscription group ($queue for $queue/...)"),
            Param("_match_topic", "string", "subscriptions whose filter matches this topic name"),
        ),
        data=arr(SUBSCRIPTION_SCHEMA),
        paged=True,
    ),
    Route(
        "lookup_client_subscriptions",
        "GET",
        "/subscriptions/{clientid}",
        client_subscriptions,
        "Subscriptions of one client (empty when unknown)",
        data=arr(SUBSCRIPTION_SCHEMA),
        paged=True,
    ),
]
