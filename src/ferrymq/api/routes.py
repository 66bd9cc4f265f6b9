"""The route table: one :class:`Route` per endpoint, used both to serve and to document.

Each resource module exports ``ROUTES``; ``app.py`` registers them and
``openapi.py`` describes them, so the served API and its OpenAPI document
cannot drift apart.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from ferrymq.api.parts import BASE  # noqa: F401  (re-exported: the resource modules' prefix)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Schema = dict[str, Any]

_PATH_PARAM = re.compile(r"\{(\w+)(?::[^}]*)?\}")


@dataclass(frozen=True, slots=True)
class Param:
    """A query parameter (path parameters are read from the path itself)."""

    name: str
    type: str  # JSON schema type: string, integer, number, boolean
    descr: str
    enum: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Route:
    name: str
    method: str
    path: str  # aiohttp pattern relative to BASE; "{topic:.+}" may span levels
    handler: Handler
    descr: str
    query: tuple[Param, ...] = ()
    body: Schema | None = None  # JSON schema of the request body
    data: Schema | None = None  # JSON schema of "data" in the success body
    paged: bool = False
    public: bool = False  # served without API credentials
    envelope: bool = True  # False: the body is ``data`` itself (the OpenAPI document)
    errors: tuple[int, ...] = (400,)  # HTTP error statuses besides 401

    @property
    def doc_path(self) -> str:
        """The path in OpenAPI form: ``{name}`` without the matching pattern."""
        return _PATH_PARAM.sub(r"{\1}", self.path)

    def path_params(self) -> list[str]:
        return _PATH_PARAM.findall(self.path)


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def reply(body: dict[str, Any], status: int = 200) -> web.Response:
    """A JSON response; ``body`` already has ``code``."""
    return web.Response(
        text=_dumps(body), status=status, content_type="application/json", charset="utf-8"
    )


def ok(data: Any = None) -> web.Response:
    """The success envelope: ``{"code": 0}`` plus ``data`` when given."""
    if data is None:
        return reply({"code": 0})
    return reply({"code": 0, "data": data})


# Reusable schema pieces.
def obj(props: dict[str, Any], required: tuple[str, ...] = ()) -> Schema:
    schema: Schema = {"type": "object", "properties": props}
    if required:
        schema["required"] = list(required)
    return schema


def arr(items: Schema) -> Schema:
    return {"type": "array", "items": items}


STR: Schema = {"type": "string"}
INT: Schema = {"type": "integer"}
BOOL: Schema = {"type": "boolean"}
TIME: Schema = {"type": "string", "description": "local time, YYYY-MM-DD HH:MM:SS"}


def nullable(schema: Schema) -> Schema:
    return {**schema, "nullable": True}
