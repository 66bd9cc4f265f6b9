"""``/acl``: access rules per client id, per username and for all clients.

A rule is stored first, then put into the broker's ACL engine, which drops
its decision cache, so the next PUBLISH or SUBSCRIBE obeys it. In the store a
rule for all clients has the subject ""; in the API it shows as
``"all": "$all"``.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from ferrymq.access.acl import AclRule
from ferrymq.api.context import ApiContext, ctx
from ferrymq.api.errors import (
    BAD_PARAMETER,
    ILLEGAL_TOPIC,
    UNKNOWN_ERROR,
    ApiError,
    bad_request,
    not_found,
)
from ferrymq.api.params import as_object, get_str, paged, read_json
from ferrymq.api.routes import STR, Route, arr, obj, ok, reply
from ferrymq.protocol.topics import TopicError, validate_topic_filter

_ACTIONS = ("pub", "sub", "pubsub", "subpub")

RULE_SCHEMA = obj(
    {
        "clientid": STR,
        "username": STR,
        "topic": {"type": "string", "description": "topic filter; may use +, #, %c and %u"},
        "action": {"type": "string", "enum": list(_ACTIONS)},
        "access": {"type": "string", "enum": ["allow", "deny"]},
    },
    ("topic", "action", "access"),
)
_ECHO = obj(
    {
        "clientid": STR,
        "username": STR,
        "all": {"type": "string", "enum": ["$all"]},
        "topic": STR,
        "action": STR,
        "access": STR,
        "result": STR,
    }
)
_LISTED = obj(
    {
        "clientid": STR,
        "username": STR,
        "all": STR,
        "topic": STR,
        "action": STR,
        "access": STR,
    }
)


def _rule_from(item: dict[str, Any]) -> AclRule:
    topic = get_str(item, "topic")
    action = get_str(item, "action")
    access = get_str(item, "access")
    assert topic is not None and action is not None and access is not None
    if "clientid" in item:
        kind, subject = "clientid", get_str(item, "clientid", empty_code=BAD_PARAMETER)
    elif "username" in item:
        kind, subject = "username", get_str(item, "username", empty_code=BAD_PARAMETER)
    else:
        kind, subject = "all", ""
    try:
        validate_topic_filter(topic)
    except TopicError as exc:
        raise bad_request(ILLEGAL_TOPIC, f"illegal topic filter {topic!r}: {exc}") from None
    try:
        return AclRule(kind, subject, topic, action, access)
    except ValueError as exc:
        raise bad_request(BAD_PARAMETER, str(exc)) from None


def _stored_subject(rule: AclRule) -> str:
    return "" if rule.kind == "all" else rule.subject


async def _add(c: ApiContext, item: dict[str, Any]) -> dict[str, Any]:
    rule = _rule_from(item)
    await c.store.call(
        c.store.put_acl, rule.kind, _stored_subject(rule), rule.topic, rule.action, rule.access
    )
    c.sync.writes += 1
    c.broker.acl.put(rule)
    return {**rule.as_dict(), "result": "ok"}


def _listed(row: dict[str, Any]) -> dict[str, Any]:
    kind = row["kind"]
    subject = "$all" if kind == "all" else row["subject"]
    return {kind: subject, "topic": row["topic"], "action": row["action"], "access": row["access"]}


async def add(request: web.Request) -> web.Response:
    c = ctx(request)
    body = await read_json(request)
    if not isinstance(body, list):
        return ok(await _add(c, as_object(body)))
    results = []
    for item in body:
        try:
            results.append(await _add(c, as_object(item, "each rule")))
        except ApiError as exc:
            echo = dict(item) if isinstance(item, dict) else {"rule": item}
            echo["result"] = exc.message
            results.append(echo)
    return ok(results)


def _lister(kind: str) -> Any:
    async def handler(request: web.Request) -> web.Response:
        c = ctx(request)
        rows = await c.store.call(c.store.list_acl, kind)
        return reply(paged(request, rows, _listed))

    return handler


def _lookup(kind: str) -> Any:
    async def handler(request: web.Request) -> web.Response:
        c = ctx(request)
        rows = await c.store.call(c.store.list_acl, kind, request.match_info[kind])
        return reply(paged(request, rows, _listed))

    return handler


def _deleter(kind: str) -> Any:
    async def handler(request: web.Request) -> web.Response:
        c = ctx(request)
        subject = "" if kind == "all" else request.match_info[kind]
        topic = request.match_info["topic"]
        if not await c.store.call(c.store.delete_acl, kind, subject, topic):
            who = "all clients" if kind == "all" else f"{kind} {subject!r}"
            raise not_found(UNKNOWN_ERROR, f"no ACL rule of {who} for topic {topic!r}")
        c.sync.writes += 1
        c.broker.acl.remove(kind, subject or "$all", topic)
        return ok()

    return handler


_TOPIC = "topic/{topic:.+}"

ROUTES = [
    Route(
        "add_acl",
        "POST",
        "/acl",
        add,
        "Add a rule, or a batch (a JSON array); a rule with the same subject and topic is replaced",
        body={"oneOf": [RULE_SCHEMA, arr(RULE_SCHEMA)]},
        data={"oneOf": [_ECHO, arr(_ECHO)]},
    ),
    Route(
        "list_acl_clientid",
        "GET",
        "/acl/clientid",
        _lister("clientid"),
        "Rules of client ids",
        data=arr(_LISTED),
        paged=True,
    ),
    Route(
        "list_acl_username",
        "GET",
        "/acl/username",
        _lister("username"),
        "Rules of usernames",
        data=arr(_LISTED),
        paged=True,
    ),
    Route(
        "list_acl_all",
        "GET",
        "/acl/$all",
        _lister("all"),
        "Rules for all clients",
        data=arr(_LISTED),
        paged=True,
    ),
    Route(
        "lookup_acl_clientid",
        "GET",
        "/acl/clientid/{clientid}",
        _lookup("clientid"),
        "Rules of one client id",
        data=arr(_LISTED),
        paged=True,
    ),
    Route(
        "lookup_acl_username",
        "GET",
        "/acl/username/{username}",
        _lookup("username"),
        "Rules of one username",
        data=arr(_LISTED),
        paged=True,
    ),
    Route(
        "delete_acl_clientid",
        "DELETE",
        f"/acl/clientid/{{clientid}}/{_TOPIC}",
        _deleter("clientid"),
        "Delete the rule of a client id for a topic (URL-encoded: a%2Fb, %23)",
        errors=(404,),
    ),
    Route(
        "delete_acl_username",
        "DELETE",
        f"/acl/username/{{username}}/{_TOPIC}",
        _deleter("username"),
        "Delete the rule of a username for a topic (URL-encoded)",
        errors=(404,),
    ),
    Route(
        "delete_acl_all",
        "DELETE",
        f"/acl/$all/{_TOPIC}",
        _deleter("all"),
        "Delete a rule for all clients (URL-encoded topic)",
        errors=(404,),
    ),
    Route(
        "delete_acl_all_alias",
        "DELETE",
        f"/acl/all/$all/{_TOPIC}",
        _deleter("all"),
        "The same as DELETE /acl/$all/topic/{topic}",
        errors=(404,),
    ),
]
