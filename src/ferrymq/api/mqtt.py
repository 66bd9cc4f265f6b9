"""``/mqtt/...``: subscribe, unsubscribe and publish on behalf of clients.

Subscribing goes through the broker like a SUBSCRIBE packet (limits apply,
retained messages are delivered) but as an administrator: the client's ACL
does not apply, neither to the request nor to later deliveries, as EMQX 4.4's
admin subscribe. In cluster mode it happens on the node that holds the
client's session (every running node is asked; ``Cluster.on_holder``). Publishing
needs no such step: the broker forwards to the other nodes itself.

Publishing goes through the broker like a PUBLISH from ``clientid`` (or from
no client), without the ACL check of that client, as EMQX does for
administrative publishes.
"""

from __future__ import annotations

import base64
import binascii
import json
import time
import uuid
from typing import Any

from aiohttp import web

from ferrymq.api.cluster import cluster
from ferrymq.api.context import ApiContext, ctx
from ferrymq.api.errors import (
    BAD_PARAMETER,
    ILLEGAL_TOPIC,
    ApiError,
    bad_request,
)
from ferrymq.api.ops.mqtt import clientid_of, topics_of
from ferrymq.api.params import (
    as_batch,
    as_object,
    get_bool,
    get_choice,
    get_int,
    get_str,
    mqtt_string,
    read_json,
    type_name,
)
from ferrymq.api.routes import BOOL, INT, STR, Route, arr, obj, ok
from ferrymq.model.message import Message
from ferrymq.mqtt.topics import TopicError, validate_topic_name

_MAX_EXPIRY = 0xFFFFFFFF


async def _subscribe(request: web.Request, item: dict[str, Any]) -> None:
    topics_of(item)
    get_int(item, "qos", 0, 0, 2)
    await cluster(request).on_holder("subscribe", clientid_of(item), item=item)


async def _unsubscribe(request: web.Request, item: dict[str, Any]) -> None:
    topics_of(item)
    await cluster(request).on_holder("unsubscribe", clientid_of(item), item=item)


def _property_text(value: Any) -> Any:
    """A user property value: numbers and booleans as their text (as EMQX 4.4)."""
    if isinstance(value, (bool, int, float)):
        return json.dumps(value)
    return value


def _user_properties(value: Any) -> list[tuple[str, str]]:
    pairs: list[Any]
    if isinstance(value, dict):
        pairs = list(value.items())
    elif isinstance(value, list):
        pairs = value
    else:
        raise bad_request(BAD_PARAMETER, "user_properties must be an object of strings")
    out = []
    for pair in pairs:
        if not isinstance(pair, (list, tuple)) or len(pair) != 2:
            raise bad_request(BAD_PARAMETER, "user_properties must be an object of strings")
        out.append(
            (
                mqtt_string("user_properties", pair[0]),
                mqtt_string("user_properties", _property_text(pair[1])),
            )
        )
    return out


def _properties(c: ApiContext, value: Any, payload: bytes) -> tuple[dict[str, Any], float]:
    """(message properties, expiry deadline) from the API's ``properties`` object."""
    props = as_object(value, "properties")
    out: dict[str, Any] = {}
    expiry_at = 0.0
    for key, v in props.items():
        if key == "message_expiry_interval":
            interval = get_int(props, key, 0, 0, _MAX_EXPIRY)
            if interval:  # 0: never expires
                expiry_at = time.monotonic() + interval
        elif key == "user_properties":
            pairs = _user_properties(v)
            if pairs:
                out["user_property"] = pairs
        elif key == "content_type":
            out["content_type"] = mqtt_string(key, v)
        elif key == "response_topic":
            topic = mqtt_string(key, v)
            try:
                validate_topic_name(topic)
            except TopicError as exc:
                raise bad_request(ILLEGAL_TOPIC, f"illegal response_topic: {exc}") from None
            out["response_topic"] = topic
        elif key == "correlation_data":
            out["correlation_data"] = mqtt_string(key, v).encode("utf-8")
        elif key == "payload_format_indicator":
            indicator = get_int(props, key, 0, 0, 1)
            if indicator == 1:
                try:
                    payload.decode("utf-8")
                except UnicodeDecodeError:
                    raise bad_request(
                        BAD_PARAMETER, "payload_format_indicator is 1 but the payload is not UTF-8"
                    ) from None
            out["payload_format_indicator"] = indicator
        else:
            raise bad_request(BAD_PARAMETER, f"unknown property {key!r}")
    return out, expiry_at


def _valid_topics(c: ApiContext, topics: list[str]) -> list[str]:
    """The valid topic names; invalid ones are skipped, 400/115 when none is valid."""
    s = c.settings
    valid = []
    error = None
    for t in topics:
        try:
            validate_topic_name(t, s.max_topic_levels, s.max_topic_length)
        except TopicError as exc:
            error = error or f"illegal topic {t!r}: {exc}"
        else:
            valid.append(t)
    if not valid:
        raise bad_request(ILLEGAL_TOPIC, error or "no topic")
    return valid


def _payload_text(item: dict[str, Any]) -> str:
    """``payload``: a string, or a JSON object or array sent as its JSON text."""
    value = item.get("payload")
    if value is None:
        return ""
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    if not isinstance(value, str):
        raise bad_request(
            BAD_PARAMETER, f"'payload' must be a string, object or array, not {type_name(value)}"
        )
    return value


def _messages(c: ApiContext, item: dict[str, Any]) -> list[Message]:
    s = c.settings
    topics = _valid_topics(c, topics_of(item))
    clientid = get_str(item, "clientid", required=False) or get_str(
        item, "client_id", required=False, default=""
    )
    encoding = get_choice(item, "encoding", ("plain", "base64"), "plain")
    text = _payload_text(item)
    if encoding == "base64":
        try:
            payload = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            raise bad_request(BAD_PARAMETER, "payload is not valid base64") from None
    else:
        payload = text.encode("utf-8")
    if len(payload) > s.max_packet_size:
        raise bad_request(
            BAD_PARAMETER, f"payload larger than max_packet_size ({s.max_packet_size})"
        )
    qos = get_int(item, "qos", 0, 0, 2)
    retain = get_bool(item, "retain", False)
    props: dict[str, Any] | None = None
    expiry_at = 0.0
    if item.get("properties") is not None:
        props, expiry_at = _properties(c, item["properties"], payload)
    if item.get("user_properties") is not None:
        # EMQX's older form, sent before those inside "properties".
        pairs = _user_properties(item["user_properties"])
        if pairs:
            props = props or {}
            props["user_property"] = pairs + props.get("user_property", [])
    return [Message(t, payload, qos, retain, props, clientid or "", expiry_at) for t in topics]


def _publish(c: ApiContext, item: dict[str, Any]) -> dict[str, Any] | None:
    """Publish; with ``"return": true`` the message id(s), as EMQX 4.4 shapes them."""
    msgids = []
    for msg in _messages(c, item):
        c.broker.publish(msg)
        msgids.append(uuid.uuid4().hex.upper())
    if not item.get("return"):
        return None
    if "topics" in item and "topic" not in item:
        return {"msgids": msgids}
    return {"msgid": msgids[-1]}


# --- handlers ------------------------------------------------------------------


async def subscribe(request: web.Request) -> web.Response:
    await _subscribe(request, as_object(await read_json(request)))
    return ok()


async def unsubscribe(request: web.Request) -> web.Response:
    await _unsubscribe(request, as_object(await read_json(request)))
    return ok()


async def publish(request: web.Request) -> web.Response:
    c = ctx(request)
    return ok(_publish(c, as_object(await read_json(request))))


def _describe(item: Any) -> tuple[Any, Any]:
    if not isinstance(item, dict):
        return None, None
    topic = item.get("topic") or item.get("topics")
    return item.get("clientid", item.get("client_id")), topic


async def subscribe_batch(request: web.Request) -> web.Response:
    return await _batch(request, _subscribe)


async def unsubscribe_batch(request: web.Request) -> web.Response:
    return await _batch(request, _unsubscribe)


async def _batch(request: web.Request, action: Any) -> web.Response:
    results: list[dict[str, Any]] = []
    for item in as_batch(await read_json(request)):
        clientid, topic = _describe(item)
        try:
            await action(request, as_object(item, "each item"))
        except ApiError as exc:
            results.append(
                {"clientid": clientid, "topic": topic, "code": exc.code, "message": exc.message}
            )
        else:
            results.append({"clientid": clientid, "topic": topic, "code": 0})
    return ok(results)


async def publish_batch(request: web.Request) -> web.Response:
    c = ctx(request)
    results: list[dict[str, Any]] = []
    for item in as_batch(await read_json(request)):
        _clientid, topic = _describe(item)
        try:
            _publish(c, as_object(item, "each item"))
        except ApiError as exc:
            results.append({"topic": topic, "code": exc.code, "message": exc.message})
        else:
            results.append({"topic": topic, "code": 0})
    return ok(results)


_TOPICS = {
    "topic": STR,
    "topics": {"type": "string", "description": "comma-separated topics"},
}
_SUB = obj({"clientid": STR, **_TOPICS, "qos": {**INT, "enum": [0, 1, 2]}}, ("clientid",))
_UNSUB = obj({"clientid": STR, **_TOPICS}, ("clientid",))
_PUB = obj(
    {
        **_TOPICS,
        "clientid": STR,
        "payload": {
            "oneOf": [STR, {"type": "object"}, {"type": "array"}],
            "description": "a string; an object or array is sent as its JSON text",
        },
        "encoding": {"type": "string", "enum": ["plain", "base64"]},
        "qos": {**INT, "enum": [0, 1, 2]},
        "retain": BOOL,
        "return": {**BOOL, "description": "answer with the message id(s)"},
        "user_properties": {
            "type": "object",
            "description": "EMQX's older place for properties.user_properties",
        },
        "properties": obj(
            {
                "message_expiry_interval": INT,
                "user_properties": {"type": "object", "additionalProperties": STR},
                "content_type": STR,
                "response_topic": STR,
                "correlation_data": STR,
                "payload_format_indicator": {**INT, "enum": [0, 1]},
            }
        ),
    }
)
_RESULT = obj({"clientid": STR, "topic": STR, "code": INT, "message": STR})

ROUTES = [
    Route(
        "mqtt_subscribe",
        "POST",
        "/mqtt/subscribe",
        subscribe,
        "Subscribe a client's session as if it had sent SUBSCRIBE, as an administrator "
        "(the client's ACL does not apply)",
        body=_SUB,
        errors=(400, 404),
    ),
    Route(
        "mqtt_unsubscribe",
        "POST",
        "/mqtt/unsubscribe",
        unsubscribe,
        "Unsubscribe a client's session",
        body=_UNSUB,
        errors=(400, 404),
    ),
    Route(
        "mqtt_subscribe_batch",
        "POST",
        "/mqtt/subscribe_batch",
        subscribe_batch,
        "Several subscribes; data has a code per item",
        body=arr(_SUB),
        data=arr(_RESULT),
    ),
    Route(
        "mqtt_unsubscribe_batch",
        "POST",
        "/mqtt/unsubscribe_batch",
        unsubscribe_batch,
        "Several unsubscribes; data has a code per item",
        body=arr(_UNSUB),
        data=arr(_RESULT),
    ),
    Route(
        "mqtt_publish",
        "POST",
        "/mqtt/publish",
        publish,
        "Publish a message (as clientid, when given); topic may hold several, comma-separated",
        body=_PUB,
        data=obj({"msgid": STR, "msgids": arr(STR)}),
    ),
    Route(
        "mqtt_publish_batch",
        "POST",
        "/mqtt/publish_batch",
        publish_batch,
        "Publish several messages; data has a code per item",
        body=arr(_PUB),
        data=arr(obj({"topic": STR, "code": INT, "message": STR})),
    ),
]
