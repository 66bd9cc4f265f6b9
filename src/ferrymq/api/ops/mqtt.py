"""The ``subscribe`` and ``unsubscribe`` operations of ``/mqtt/subscribe|unsubscribe``: run
on the node that holds the client."""

from __future__ import annotations

from typing import Any

from ferrymq.api.errors import (
    BAD_PARAMETER,
    ILLEGAL_TOPIC,
    MISSING_PARAMETER,
    ApiError,
    bad_request,
)
from ferrymq.api.ops import NodeContext, node_op
from ferrymq.api.params import get_int, get_str
from ferrymq.mqtt import reason_codes as rc
from ferrymq.mqtt.packets import SubscriptionOptions
from ferrymq.mqtt.topics import TopicError, validate_topic_filter

_REFUSALS = {
    rc.QUOTA_EXCEEDED: (BAD_PARAMETER, "max_subscriptions reached"),
    rc.TOPIC_FILTER_INVALID: (ILLEGAL_TOPIC, "invalid topic filter"),
    rc.SHARED_SUBSCRIPTIONS_NOT_SUPPORTED: (ILLEGAL_TOPIC, "shared subscriptions are disabled"),
    rc.WILDCARD_SUBSCRIPTIONS_NOT_SUPPORTED: (ILLEGAL_TOPIC, "wildcard subscriptions are disabled"),
}


def topics_of(item: dict[str, Any]) -> list[str]:
    """The comma-separated ``topic``, else the comma-separated ``topics`` (as EMQX 4.4)."""
    topic = get_str(item, "topic", required=False)
    if topic is None:
        topic = get_str(item, "topics", required=False)
    out = [t for t in topic.split(",") if t] if topic else []
    if not out:
        raise bad_request(MISSING_PARAMETER, "missing required field 'topic' (or 'topics')")
    return out


def clientid_of(item: dict[str, Any]) -> str:
    clientid = get_str(item, "clientid", required=False) or get_str(
        item, "client_id", required=False
    )
    if not clientid:
        raise bad_request(MISSING_PARAMETER, "missing required field 'clientid'")
    return clientid


def _check_filters(c: NodeContext, filters: list[str]) -> None:
    s = c.settings
    for f in filters:
        try:
            validate_topic_filter(f, s.max_topic_levels, s.max_topic_length)
        except TopicError as exc:
            raise bad_request(ILLEGAL_TOPIC, f"illegal topic filter {f!r}: {exc}") from None


@node_op("subscribe")
async def _subscribe_here(c: NodeContext, item: dict[str, Any]) -> list[dict[str, Any]] | None:
    filters = topics_of(item)
    qos = get_int(item, "qos", 0, 0, 2)
    session = c.broker.sessions.get(clientid_of(item))
    if session is None:
        return None
    _check_filters(c, filters)
    codes, deliveries = c.broker.subscribe(
        session, [SubscriptionOptions(f, qos) for f in filters], None, admin=True
    )
    for run in deliveries:
        run()
    results = []
    failed: ApiError | None = None
    for f, code in zip(filters, codes, strict=True):
        api_code = 0
        if code >= 0x80:
            api_code, why = _REFUSALS.get(code, (BAD_PARAMETER, f"refused (0x{code:02X})"))
            if failed is None:
                failed = bad_request(api_code, f"subscription to {f!r} refused: {why}")
        results.append({"clientid": session.client_id, "topic": f, "code": api_code})
    if failed is not None:
        failed.data = results
        raise failed
    return results


@node_op("unsubscribe")
async def _unsubscribe_here(c: NodeContext, item: dict[str, Any]) -> list[dict[str, Any]] | None:
    filters = topics_of(item)
    session = c.broker.sessions.get(clientid_of(item))
    if session is None:
        return None
    _check_filters(c, filters)
    c.broker.unsubscribe(session, filters)
    return [{"clientid": session.client_id, "topic": f, "code": 0} for f in filters]
