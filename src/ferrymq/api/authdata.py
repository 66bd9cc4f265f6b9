"""``/auth_username`` and ``/auth_clientid``: credentials checked at CONNECT.

Every change is written to the store first and then applied to the broker's
in-memory tables, so the next CONNECT sees it and a restart keeps it.
Passwords are hashed with ``password_hash`` off the event loop when the
algorithm is a slow one (pbkdf2, bcrypt). No endpoint returns a hash: records
are ``{username | clientid, created_at}`` with ``created_at`` in epoch
milliseconds, newest first, as EMQX 4.4 shows them.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from ferrymq.access.passwords import hash_password
from ferrymq.api.context import ApiContext, ctx
from ferrymq.api.errors import (
    EMPTY_CREDENTIALS,
    NO_SUCH_USER,
    USER_EXISTS,
    ApiError,
    bad_request,
    not_found,
)
from ferrymq.api.params import as_object, get_str, paged, read_json
from ferrymq.api.routes import INT, STR, Param, Route, arr, obj, ok, reply
from ferrymq.storage.store import DuplicateError


async def hash_for(c: ApiContext, password: str) -> str:
    algorithm = c.settings.password_hash
    if algorithm == "sha256":
        return hash_password(password, algorithm)
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(None, hash_password, password, algorithm)


def _apply_set(c: ApiContext, kind: str, subject: str, password_hash: str) -> None:
    c.sync.writes += 1
    if kind == "username":
        c.broker.authenticator.set_username(subject, password_hash)
    else:
        c.broker.authenticator.set_clientid(subject, password_hash)


def _apply_remove(c: ApiContext, kind: str, subject: str) -> None:
    c.sync.writes += 1
    if kind == "username":
        c.broker.authenticator.remove_username(subject)
    else:
        c.broker.authenticator.remove_clientid(subject)


async def _create(c: ApiContext, kind: str, item: dict[str, Any]) -> str:
    subject = get_str(item, kind, empty_code=EMPTY_CREDENTIALS, mqtt=True)
    password = get_str(item, "password", empty_code=EMPTY_CREDENTIALS)
    assert subject is not None and password is not None
    password_hash = await hash_for(c, password)
    try:
        await c.store.call(c.store.add_auth, kind, subject, password_hash)
    except DuplicateError:
        raise bad_request(USER_EXISTS, f"{kind} {subject!r} already exists") from None
    _apply_set(c, kind, subject, password_hash)
    return subject


def _batch_key(kind: str, item: Any, index: int) -> str:
    subject = item.get(kind) if isinstance(item, dict) else None
    return subject if isinstance(subject, str) and subject else f"#{index}"


def _record(kind: str, row: dict[str, Any]) -> dict[str, Any]:
    """The API form of a stored record: never the hash."""
    return {kind: row["subject"], "created_at": int(row["created_at"] * 1000)}


def make_routes(kind: str) -> list[Route]:
    base = f"/auth_{kind}"

    async def create(request: web.Request) -> web.Response:
        c = ctx(request)
        body = await read_json(request)
        if not isinstance(body, list):
            await _create(c, kind, as_object(body))
            return ok()
        results: dict[str, str] = {}
        for index, item in enumerate(body):
            key = _batch_key(kind, item, index)
            try:
                await _create(c, kind, as_object(item, "each item"))
            except ApiError as exc:
                results[key] = exc.message
            else:
                results[key] = "ok"
        return ok(results)

    async def list_all(request: web.Request) -> web.Response:
        c = ctx(request)
        exact = request.query.get(kind)
        like = request.query.get(f"_like_{kind}")
        rows = [
            r
            for r in reversed(await c.store.call(c.store.list_auth, kind))
            if (exact is None or r["subject"] == exact) and (like is None or like in r["subject"])
        ]
        return reply(paged(request, rows, lambda r: _record(kind, r)))

    async def lookup(request: web.Request) -> web.Response:
        c = ctx(request)
        subject = request.match_info[kind]
        row = await c.store.call(c.store.get_auth, kind, subject)
        if row is None:
            raise not_found(NO_SUCH_USER, f"{kind} {subject!r} does not exist")
        return ok(_record(kind, row))

    async def update(request: web.Request) -> web.Response:
        c = ctx(request)
        subject = request.match_info[kind]
        body = as_object(await read_json(request))
        password = get_str(body, "password", empty_code=EMPTY_CREDENTIALS)
        assert password is not None
        if await c.store.call(c.store.get_auth, kind, subject) is None:
            raise not_found(NO_SUCH_USER, f"{kind} {subject!r} does not exist")
        password_hash = await hash_for(c, password)
        if not await c.store.call(c.store.update_auth, kind, subject, password_hash):
            raise not_found(NO_SUCH_USER, f"{kind} {subject!r} does not exist")
        _apply_set(c, kind, subject, password_hash)
        return ok()

    async def delete(request: web.Request) -> web.Response:
        c = ctx(request)
        subject = request.match_info[kind]
        if not await c.store.call(c.store.delete_auth, kind, subject):
            raise not_found(NO_SUCH_USER, f"{kind} {subject!r} does not exist")
        _apply_remove(c, kind, subject)
        return ok()

    record = obj({kind: STR, "password": STR}, (kind, "password"))
    listed = obj({kind: STR, "created_at": {**INT, "description": "epoch milliseconds"}})
    return [
        Route(
            f"list_{kind}",
            "GET",
            base,
            list_all,
            f"List the {kind}s that have credentials, newest first",
            query=(
                Param(kind, "string", f"exact {kind}"),
                Param(f"_like_{kind}", "string", f"{kind} contains"),
            ),
            data=arr(listed),
            paged=True,
        ),
        Route(
            f"add_{kind}",
            "POST",
            base,
            create,
            f"Add credentials for one {kind}, or a batch (a JSON array); a batch answers "
            f'with {{{kind}: "ok" | reason}}',
            body={"oneOf": [record, arr(record)]},
            data={"type": "object", "additionalProperties": STR},
        ),
        Route(
            f"lookup_{kind}",
            "GET",
            f"{base}/{{{kind}}}",
            lookup,
            f"The {kind} and when it was created (the password hash is never shown)",
            data=listed,
            errors=(404,),
        ),
        Route(
            f"update_{kind}",
            "PUT",
            f"{base}/{{{kind}}}",
            update,
            f"Change the password of a {kind}",
            body=obj({"password": STR}, ("password",)),
            errors=(400, 404),
        ),
        Route(
            f"delete_{kind}",
            "DELETE",
            f"{base}/{{{kind}}}",
            delete,
            f"Delete the credentials of a {kind}",
            errors=(404,),
        ),
    ]


ROUTES = make_routes("username") + make_routes("clientid")
