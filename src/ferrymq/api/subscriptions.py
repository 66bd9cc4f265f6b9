"""``/subscriptions``: every installed subscription, by client, topic, QoS and group."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from aiohttp import web

from ferrymq.api.context import ApiContext, ctx
from ferrymq.api.errors import BAD_PARAMETER, ILLEGAL_TOPIC, bad_request
from ferrymq.api.params import page_params, paged, query_int
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


async def list_subscriptions(request: web.Request) -> web.Response:
    c = ctx(request)
    page_params(request)
    q = request.query
    qos = query_int(request, "qos")
    if qos is not None and not 0 <= qos <= 2:
        raise bad_request(BAD_PARAMETER, "query parameter qos must be 0, 1 or 2")
    clientid = q.get("clientid")
    topic = q.get("topic")
    share = q.get("share")
    match_topic = q.get("_match_topic")
    source: Iterable[Subscription]
    if match_topic is not None:
        try:
            validate_topic_name(match_topic)
        except TopicError as exc:
            raise bad_request(ILLEGAL_TOPIC, f"_match_topic: {exc}") from None
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
    return reply(paged(request, subs, _format(c)))


async def client_subscriptions(request: web.Request) -> web.Response:
    c = ctx(request)
    session = c.broker.sessions.get(request.match_info["clientid"])
    subs = list(session.subscriptions.values()) if session is not None else []
    return reply(paged(request, subs, _format(c)))


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
