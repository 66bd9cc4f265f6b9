"""``/retained``: list, read and clear retained messages (beyond EMQX 4, which has no such API).

Items carry the message's metadata; the payload (base64) only comes with
``GET /retained/{topic}``, so listing many large messages stays cheap.
In cluster mode retained messages are shared by all nodes, so any node's
store is the cluster's.
"""

from __future__ import annotations

import base64
import time
from typing import Any

from aiohttp import web

from ferrymq.api.context import ctx
from ferrymq.api.errors import ILLEGAL_TOPIC, UNKNOWN_ERROR, bad_request, not_found
from ferrymq.api.ops import strftime
from ferrymq.api.params import paged
from ferrymq.api.routes import INT, STR, TIME, Param, Route, nullable, obj, ok, reply
from ferrymq.model.message import Message
from ferrymq.mqtt.topics import TopicError, is_wildcard, validate_topic_filter

_ITEM = {
    "topic": STR,
    "qos": INT,
    "from_clientid": STR,
    "publish_at": TIME,
    "payload_size": INT,
    "expires_in": nullable({"type": "integer", "description": "seconds left, null: never"}),
}
_ONE = obj({**_ITEM, "payload": {"type": "string", "description": "base64"}, "properties": {}})


def _item(msg: Message, now: float) -> dict[str, Any]:
    return {
        "topic": msg.topic,
        "qos": msg.qos,
        "from_clientid": msg.publisher,
        "publish_at": strftime(msg.created),
        "payload_size": len(msg.payload),
        "expires_in": msg.remaining_expiry(now),
    }


async def list_retained(request: web.Request) -> web.Response:
    c = ctx(request)
    store = c.broker.retained
    now = time.monotonic()
    topic_filter = request.query.get("topic")
    if topic_filter is None:
        found = [msg for msg in store if not msg.expired(now)]
    else:
        s = c.settings
        try:
            validate_topic_filter(topic_filter, s.max_topic_levels, s.max_topic_length)
        except TopicError as exc:
            raise bad_request(ILLEGAL_TOPIC, f"topic: {exc}") from None
        if is_wildcard(topic_filter):
            found = store.match(topic_filter, now)
        else:
            msg = store.get(topic_filter)
            found = [msg] if msg is not None and not msg.expired(now) else []
    found.sort(key=lambda msg: msg.topic)
    return reply(paged(request, found, lambda msg: _item(msg, now)))


def _lookup(request: web.Request) -> Message:
    topic = request.match_info["topic"]
    msg = ctx(request).broker.retained.get(topic)
    if msg is None or msg.expired(time.monotonic()):
        raise not_found(UNKNOWN_ERROR, f"no retained message for topic {topic!r}")
    return msg


async def get_retained(request: web.Request) -> web.Response:
    msg = _lookup(request)
    data = _item(msg, time.monotonic())
    data["payload"] = base64.b64encode(msg.payload).decode("ascii")
    props = msg.properties or {}
    data["properties"] = {
        k: (v.decode("utf-8", "replace") if isinstance(v, bytes) else v) for k, v in props.items()
    }
    return ok(data)


async def delete_retained(request: web.Request) -> web.Response:
    topic = _lookup(request).topic
    ctx(request).broker.delete_retained(topic)
    return ok()


ROUTES = [
    Route(
        "list_retained",
        "GET",
        "/retained",
        list_retained,
        "Retained messages, by topic; filter topic may use + and #",
        query=(Param("topic", "string", "a topic name or filter"),),
        data={"type": "array", "items": obj(_ITEM)},
        paged=True,
    ),
    Route(
        "get_retained",
        "GET",
        "/retained/{topic:.+}",
        get_retained,
        "One retained message with its payload (base64); the topic URL-encoded",
        data=_ONE,
        errors=(404,),
    ),
    Route(
        "delete_retained",
        "DELETE",
        "/retained/{topic:.+}",
        delete_retained,
        "Clear the retained message of a topic",
        errors=(404,),
    ),
]
