"""``/alarms``: the alarms of every node, active and deactivated (EMQX 4.4 shapes).

Lists are ``[{node, alarms: [...]}]``, one entry per node; each alarm is
``{name, message, details, activate_at, deactivate_at, activated, duration}``
with times in epoch microseconds and ``deactivate_at: "infinity"`` while
active, as ``emqx_mgmt_api_alarms`` returns them.
"""

from __future__ import annotations

from aiohttp import web

from ferrymq.api.cluster import cluster
from ferrymq.api.errors import UNKNOWN_ERROR, not_found
from ferrymq.api.params import as_object, get_str, read_json
from ferrymq.api.routes import BOOL, INT, STR, Handler, Route, arr, obj, ok

_ALARM = obj(
    {
        "name": STR,
        "message": STR,
        "details": {"type": "object"},
        "activate_at": INT,
        "deactivate_at": {"description": 'epoch microseconds, or "infinity" while active'},
        "activated": BOOL,
        "duration": INT,
    }
)
_NODE_ALARMS = arr(obj({"node": STR, "alarms": arr(_ALARM)}))
_NODE = "/nodes/{node}/alarms"


def _lister(which: str) -> Handler:
    async def handler(request: web.Request) -> web.Response:
        answers = await cluster(request).each(lambda node: node.alarms(which))
        return ok([{"node": node.name, "alarms": alarms} for node, alarms in answers])

    return handler


def _node_lister(which: str) -> Handler:
    async def handler(request: web.Request) -> web.Response:
        return ok(await cluster(request).node(request.match_info["node"]).alarms(which))

    return handler


async def deactivate(request: web.Request) -> web.Response:
    body = as_object(await read_json(request))
    node = cluster(request).node(get_str(body, "node") or "")
    name = get_str(body, "name")
    assert name is not None
    if not await node.deactivate_alarm(name):
        raise not_found(UNKNOWN_ERROR, f"no active alarm {name!r} on {node.name}")
    return ok()


async def delete_deactivated(request: web.Request) -> web.Response:
    await cluster(request).each(lambda node: node.clear_alarm_history())
    return ok()


async def delete_node_deactivated(request: web.Request) -> web.Response:
    await cluster(request).node(request.match_info["node"]).clear_alarm_history()
    return ok()


# (which, path suffix, what): the listing routes, cluster-wide and per node.
_LISTS = (
    ("all", "", "alarms, active first, then the history"),
    ("activated", "/activated", "active alarms"),
    ("deactivated", "/deactivated", "deactivated alarms (the history)"),
)
_NAME = {"all": "", "activated": "activated_", "deactivated": "deactivated_"}

ROUTES = [
    *(
        Route(
            f"list_all_{_NAME[which]}alarms",
            "GET",
            "/alarms" + suffix,
            _lister(which),
            f"Every node's {what}",
            data=_NODE_ALARMS,
            errors=(),
        )
        for which, suffix, what in _LISTS
    ),
    *(
        Route(
            f"list_node_{_NAME[which]}alarms",
            "GET",
            _NODE + suffix,
            _node_lister(which),
            f"One node's {what}",
            data=arr(_ALARM),
            errors=(404,),
        )
        for which, suffix, what in _LISTS
    ),
    Route(
        "deactivate_alarm",
        "POST",
        "/alarms/deactivated",
        deactivate,
        "Deactivate one active alarm of a node",
        body=obj({"node": STR, "name": STR}, ("node", "name")),
        errors=(400, 404),
    ),
    Route(
        "delete_all_deactivated_alarms",
        "DELETE",
        "/alarms/deactivated",
        delete_deactivated,
        "Clear every node's alarm history",
        errors=(),
    ),
    Route(
        "delete_node_deactivated_alarms",
        "DELETE",
        _NODE + "/deactivated",
        delete_node_deactivated,
        "Clear one node's alarm history",
        errors=(404,),
    ),
]
