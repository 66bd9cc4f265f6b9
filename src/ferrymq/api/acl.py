"""``/acl``: access rules per client id, per username and for all clients.

Rules are stored as EMQX 4.4 stores them: keyed by (subject, topic, action)
with the action ``pub`` or ``sub`` (a ``pubsub`` rule becomes one of each),
``created_at`` in epoch milliseconds, listed newest first. A rule is stored
first, then put into the broker's ACL engine, which drops its decision cache,
so the next PUBLISH, SUBSCRIBE and delivery obey it. In the store a rule for
all clients has the subject ""; in the API it shows as ``"all": "$all"``.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from ferrymq.access.acl import AclRule, make_rules
from ferrymq.api.context import ApiContext, ctx
from ferrymq.api.errors import (
    BAD_PARAMETER,
    ILLEGAL_TOPIC,
    UNKNOWN_ERROR,
    ApiError,
    bad_request,
    not_found,
)
from ferrymq.api.params import as_object, get_str, paged, query_choice, read_json
from ferrymq.api.routes import INT, STR, Param, Route, arr, obj, ok, reply
from ferrymq.mqtt.topics import TopicError, validate_topic_filter

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
_CREATED = {**INT, "description": "epoch milliseconds"}
_ECHO = obj(
    {
        "clientid": STR,
        "username": STR,
        "all": {"type": "string", "enum": ["$all"]},
        "topic": STR,
        "action": STR,
        "access": STR,
        "created_at": _CREATED,
        "result": STR,
    }
)
_LISTED = obj(
    {
        "clientid": STR,
        "username": STR,
        "all": STR,
        "topic": STR,
        "action": {"type": "string", "enum": ["pub", "sub"]},
        "access": STR,
        "created_at": _CREATED,
    }
)


def _rules_from(item: dict[str, Any]) -> list[AclRule]:
    topic = get_str(item, "topic")
    action = get_str(item, "action")
    access = get_str(item, "access")
    assert topic is not None and action is not None and access is not None
    if "clientid" in item:
        kind, subject = "clientid", get_str(item, "clientid", empty_code=BAD_PARAMETER, mqtt=True)
    elif "username" in item:
        kind, subject = "username", get_str(item, "username", empty_code=BAD_PARAMETER, mqtt=True)
    else:
        kind, subject = "all", ""
    try:
        validate_topic_filter(topic)
    except TopicError as exc:
        raise bad_request(ILLEGAL_TOPIC, f"illegal topic filter {topic!r}: {exc}") from None
    try:
        return make_rules(kind, subject, topic, action, access)
    except ValueError as exc:
        raise bad_request(BAD_PARAMETER, str(exc)) from None


def _stored_subject(rule: AclRule) -> str:
    return "" if rule.kind == "all" else rule.subject


async def add_rules(c: ApiContext, rules: list[AclRule]) -> bool:
    """Store ``rules`` and apply them; True when one replaced an existing rule."""
    replaced = False
    for rule in rules:
        replaced |= await c.store.call(
            c.store.put_acl,
            rule.kind,
            _stored_subject(rule),
            rule.topic,
            rule.action,
            rule.access,
            rule.created_at,
        )
        c.sync.writes += 1
        replaced |= c.broker.acl.put(rule)
    return replaced


async def _add(c: ApiContext, item: dict[str, Any]) -> dict[str, Any]:
    rules = _rules_from(item)
    await add_rules(c, rules)
    echo = rules[0].as_dict()
    if len(rules) > 1:
        echo["action"] = "pubsub"
    return {**echo, "result": "ok"}


def _listed(row: dict[str, Any]) -> dict[str, Any]:
    kind = row["kind"]
    return {
        kind: "$all" if kind == "all" else row["subject"],
        "topic": row["topic"],
        "action": row["action"],
        "access": row["access"],
        "created_at": row["created_at"],
    }


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


def _row_filter(request: web.Request, kind: str) -> Any:
    """EMQX 4.4's ACL list filters: subject, ``_like_`` subject, topic, action, access."""
    q = request.query
    subject = q.get(kind) if kind != "all" else None
    like = q.get(f"_like_{kind}") if kind != "all" else None
    topic = q.get("topic")
    action = query_choice(request, "action", ("pub", "sub"))
    access = query_choice(request, "access", ("allow", "deny"))

    def test(row: dict[str, Any]) -> bool:
        return (
            (subject is None or row["subject"] == subject)
            and (like is None or like in row["subject"])
            and (topic is None or row["topic"] == topic)
            and (action is None or row["action"] == action)
            and (access is None or row["access"] == access)
        )

    return test


async def _rows(c: ApiContext, kind: str, subject: str | None = None) -> list[dict[str, Any]]:
    rows = await c.store.call(c.store.list_acl, kind, subject)
    rows.reverse()  # stored oldest first: list newest first
    return rows


def _lister(kind: str) -> Any:
    async def handler(request: web.Request) -> web.Response:
        c = ctx(request)
        test = _row_filter(request, kind)
        rows = [r for r in await _rows(c, kind) if test(r)]
        return reply(paged(request, rows, _listed))

    return handler


def _lookup(kind: str) -> Any:
    async def handler(request: web.Request) -> web.Response:
        c = ctx(request)
        rows = await _rows(c, kind, request.match_info[kind])
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
_COMMON_QUERY = (
    Param("topic", "string", "exact rule topic"),
    Param("action", "string", "pub or sub (a pubsub rule is stored as both)", ("pub", "sub")),
    Param("access", "string", "allow or deny", ("allow", "deny")),
)


def _subject_query(kind: str) -> tuple[Param, ...]:
    return (
        Param(kind, "string", f"exact {kind}"),
        Param(f"_like_{kind}", "string", f"{kind} contains"),
        *_COMMON_QUERY,
    )


ROUTES = [
    Route(
        "add_acl",
        "POST",
        "/acl",
        add,
        "Add a rule, or a batch (a JSON array); pubsub is stored as a pub and a sub rule, "
        "and a rule with the same subject, topic and action is replaced (and becomes newest)",
        body={"oneOf": [RULE_SCHEMA, arr(RULE_SCHEMA)]},
        data={"oneOf": [_ECHO, arr(_ECHO)]},
    ),
    Route(
        "list_acl_clientid",
        "GET",
        "/acl/clientid",
        _lister("clientid"),
        "Rules of client ids, newest first",
        query=_subject_query("clientid"),
        data=arr(_LISTED),
        paged=True,
    ),
    Route(
        "list_acl_username",
        "GET",
        "/acl/username",
        _lister("username"),
        "Rules of usernames, newest first",
        query=_subject_query("username"),
        data=arr(_LISTED),
        paged=True,
    ),
    Route(
        "list_acl_all",
        "GET",
        "/acl/$all",
        _lister("all"),
        "Rules for all clients, newest first",
        query=_COMMON_QUERY,
        data=arr(_LISTED),
        paged=True,
    ),
    Route(
        "lookup_acl_clientid",
        "GET",
        "/acl/clientid/{clientid}",
        _lookup("clientid"),
        "Rules of one client id, newest first",
        data=arr(_LISTED),
        paged=True,
    ),
    Route(
        "lookup_acl_username",
        "GET",
        "/acl/username/{username}",
        _lookup("username"),
        "Rules of one username, newest first",
        data=arr(_LISTED),
        paged=True,
    ),
    Route(
        "delete_acl_clientid",
        "DELETE",
        f"/acl/clientid/{{clientid}}/{_TOPIC}",
        _deleter("clientid"),
        "Delete the rules (pub and sub) of a client id for a topic (URL-encoded: a%2Fb, %23)",
        errors=(404,),
    ),
    Route(
        "delete_acl_username",
        "DELETE",
        f"/acl/username/{{username}}/{_TOPIC}",
        _deleter("username"),
        "Delete the rules of a username for a topic (URL-encoded)",
        errors=(404,),
    ),
    Route(
        "delete_acl_all",
        "DELETE",
        f"/acl/$all/{_TOPIC}",
        _deleter("all"),
        "Delete the rules for all clients for a topic (URL-encoded)",
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
