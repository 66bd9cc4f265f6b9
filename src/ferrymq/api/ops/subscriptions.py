"""The ``subscriptions`` operation: each node lists its own sessions' subscriptions."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from ferrymq.api.errors import BAD_PARAMETER, ILLEGAL_TOPIC, bad_request
from ferrymq.api.ops import NodeContext, node_op
from ferrymq.api.paging import window
from ferrymq.api.params import Queried, QueryOf, query_int
from ferrymq.mqtt.topics import TopicError, validate_topic_name

if TYPE_CHECKING:
    from ferrymq.model.subscription import Subscription


def _format(c: NodeContext) -> Any:
    node = c.node

    def fmt(sub: Subscription) -> dict[str, Any]:
        return {"node": node, "clientid": sub.client_id, "topic": sub.topic_filter, "qos": sub.qos}

    return fmt


def _all(c: NodeContext) -> Iterable[Subscription]:
    for session in c.broker.sessions.values():
        yield from session.subscriptions.values()


def _matching(c: NodeContext, topic: str) -> list[Subscription]:
    subs, groups = c.broker.router.match(topic)
    out = list(subs)
    for group in groups:
        out.extend(group.members)
    return out


def checked_query(request: Queried) -> int | None:
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


@node_op("subscriptions")
async def _subscriptions(c: NodeContext, query: list[list[str]], start: int, limit: int) -> Any:
    q = QueryOf(query)
    qos = checked_query(q)
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
