"""The OpenAPI 3 document of the API, generated from the route table."""

from __future__ import annotations

from typing import Any

from ferrymq import __version__
from ferrymq.api.routes import BASE, INT, STR, Route, obj

_STATUS_TEXT = {
    400: "Bad request body or parameters (or a body over api_max_body)",
    401: "Missing or invalid API credentials",
    404: "Unknown path, or the named object does not exist",
    500: "Internal error",
}
_ERROR = obj({"code": INT, "message": STR}, ("code", "message"))
_META = obj(
    {"page": INT, "limit": INT, "count": INT, "hasnext": {"type": "boolean"}},
    ("page", "limit", "count", "hasnext"),
)
_PAGING = [
    {
        "name": "_page",
        "in": "query",
        "description": "page number, from 1",
        "schema": {"type": "integer", "minimum": 1, "default": 1},
    },
    {
        "name": "_limit",
        "in": "query",
        "description": "items per page",
        "schema": {"type": "integer", "minimum": 1, "default": 10000},
    },
]


def _success(route: Route) -> dict[str, Any]:
    if not route.envelope:
        return route.data or {"type": "object"}
    props: dict[str, Any] = {"code": {"type": "integer", "enum": [0]}}
    required = ["code"]
    if route.data is not None:
        props["data"] = route.data
    if route.paged:
        props["meta"] = {"$ref": "#/components/schemas/Meta"}
        required += ["data", "meta"]
    return obj(props, tuple(required))


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def _operation(route: Route) -> dict[str, Any]:
    params: list[dict[str, Any]] = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
        for name in route.path_params()
    ]
    for p in route.query:
        schema: dict[str, Any] = {"type": p.type}
        if p.enum:
            schema["enum"] = list(p.enum)
        params.append({"name": p.name, "in": "query", "description": p.descr, "schema": schema})
    if route.paged:
        params.extend(_PAGING)
    responses: dict[str, Any] = {
        "200": {"description": "Success", "content": _json(_success(route))}
    }
    statuses = set(route.errors)
    if route.body is not None:
        statuses.add(400)  # also for a body over api_max_body
    if not route.public:
        statuses.add(401)
    for status in sorted(statuses):
        responses[str(status)] = {
            "description": _STATUS_TEXT[status],
            "content": _json({"$ref": "#/components/schemas/Error"}),
        }
    op: dict[str, Any] = {
        "operationId": route.name,
        "summary": route.descr,
        "tags": [route.doc_path.strip("/").split("/")[0] or "api"],
        "responses": responses,
    }
    if params:
        op["parameters"] = params
    if route.body is not None:
        op["requestBody"] = {"required": True, "content": _json(route.body)}
    if route.public:
        op["security"] = []
    return op


def build_openapi(routes: list[Route]) -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        paths.setdefault(route.doc_path, {})[route.method.lower()] = _operation(route)
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "ferrymq management API",
            "version": __version__,
            "description": "The EMQX 4 compatible /api/v4 management API of ferrymq. Every "
            "response is JSON with a code (0 on success); errors add a message. The only "
            "statuses are 200, 400, 401, 404 and 500 (a method a path does not serve is "
            "404 / 102). Every path also answers with a trailing slash.",
        },
        "servers": [{"url": BASE}],
        "security": [{"basicAuth": []}],
        "paths": paths,
        "components": {
            "securitySchemes": {
                "basicAuth": {
                    "type": "http",
                    "scheme": "basic",
                    "description": "user: AppID, password: AppSecret (ferrymq apps add NAME)",
                }
            },
            "schemas": {"Error": _ERROR, "Meta": _META},
        },
    }
