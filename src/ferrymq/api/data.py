"""``/data/export``, ``/data/import`` and ``/data/file``: move apps, credentials, ACL rules and
bans between brokers as EMQX 4.4's export files (layout in ``backup.py``).

Files live in the ``backup`` folder of the data directory. A file name is
one path segment ending in ``.json`` (letters, digits, ``.``, ``_``, ``-``;
anything else, such as ``../x.json``, is 400 / 108), so no request reaches
outside that folder. An import applies every record it can and reports the
others under ``skipped``; existing records with the same key are replaced,
as EMQX does. File I/O and the store writes run off the event loop.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import time
from pathlib import Path
from typing import Any

from aiohttp import web

from ferrymq.access.passwords import hash_password
from ferrymq.admin.apps import SECRET_HASH
from ferrymq.api import backup
from ferrymq.api.banned import add_ban
from ferrymq.api.cluster import cluster
from ferrymq.api.context import ApiContext, ctx
from ferrymq.api.errors import BAD_JSON, BAD_PARAMETER, UNKNOWN_ERROR, bad_request, not_found
from ferrymq.api.ops import strftime
from ferrymq.api.params import as_object, get_str, read_json
from ferrymq.api.routes import INT, STR, Route, arr, obj, ok
from ferrymq.storage.store import DuplicateError

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,200}\.json")
_FILE = obj({"filename": STR, "size": INT, "created_at": STR, "node": STR})
_REPORT = obj(
    {
        "apps": INT,
        "auth_mnesia": INT,
        "acl_mnesia": INT,
        "blacklist": INT,
        "skipped": arr(obj({"section": STR, "item": {}, "reason": STR})),
    }
)


def backup_dir(c: ApiContext) -> Path:
    return Path(c.settings.data_dir) / "backup"


def _path(c: ApiContext, filename: str) -> Path:
    if not _NAME.fullmatch(filename):
        raise bad_request(BAD_PARAMETER, f"bad file name {filename!r}: NAME.json, no path")
    return backup_dir(c) / filename


def _info(c: ApiContext, path: Path) -> dict[str, Any]:
    st = path.stat()
    return {
        "filename": path.name,
        "size": st.st_size,
        "created_at": strftime(st.st_mtime),
        "node": c.node,
    }


def _new_name(folder: Path) -> str:
    stamp = time.strftime("%Y-%m-%d-%H-%M-%S")
    name, n = f"ferrymq-export-{stamp}.json", 1
    while (folder / name).exists():
        n += 1
        name = f"ferrymq-export-{stamp}-{n}.json"
    return name


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


async def _run(fn: Any, *args: Any) -> Any:
    return await asyncio.get_running_loop().run_in_executor(None, fn, *args)


# --- export ----------------------------------------------------------------------


async def export(request: web.Request) -> web.Response:
    c = ctx(request)
    store = c.store
    doc = backup.build_export(
        await store.call(store.list_apps),
        {k: await store.call(store.list_auth, k) for k in ("username", "clientid")},
        await store.call(store.list_acl),
        [b for b in c.broker.banned if b.active(time.time())],
        time.time(),
    )
    folder = backup_dir(c)
    path = folder / _new_name(folder)
    await _run(_write, path, json.dumps(doc, ensure_ascii=False, indent=2))
    return ok(_info(c, path))


async def list_exported(request: web.Request) -> web.Response:
    c = ctx(request)
    folder = backup_dir(c)

    def scan() -> list[dict[str, Any]]:
        if not folder.is_dir():
            return []
        files = [p for p in folder.iterdir() if _NAME.fullmatch(p.name) and p.is_file()]
        files.sort(key=lambda p: (p.stat().st_mtime, p.name))
        return [_info(c, p) for p in files]

    return ok(await _run(scan))


# --- import ----------------------------------------------------------------------


def _parse_file(text: str) -> dict[str, Any]:
    try:
        doc = json.loads(text)
    except ValueError:
        raise bad_request(BAD_JSON, "the file is not valid JSON") from None
    return as_object(doc, "an export file")


async def _read(c: ApiContext, filename: str) -> str:
    path = _path(c, filename)
    try:
        return await _run(path.read_text, "utf-8")
    except FileNotFoundError:
        raise not_found(UNKNOWN_ERROR, f"no export file {filename!r}") from None
    except UnicodeDecodeError:
        raise bad_request(BAD_JSON, "the file is not UTF-8 text") from None


def _store_records(c: ApiContext, data: backup.Imported) -> None:
    """The store writes of an import (runs in an executor thread)."""
    store = c.store
    for app in data.apps:
        secret = app["secret"]
        hashed = secret if backup.is_own_hash(secret) else hash_password(secret, SECRET_HASH)
        store.delete_app(app["app_id"])
        store.add_app(app["app_id"], app["name"], hashed, app["desc"], app["enabled"])
    for kind, subject, password_hash in data.auth:
        try:
            store.add_auth(kind, subject, password_hash)
        except DuplicateError:
            store.update_auth(kind, subject, password_hash)
    for kind, subject, topic, action, access, created_at in data.acl:
        store.put_acl(kind, subject, topic, action, access, created_at)


async def import_data(request: web.Request) -> web.Response:
    c = ctx(request)
    body = as_object(await read_json(request))
    if "filename" in body:
        node = get_str(body, "node", required=False)
        if node is not None and cluster(request).member(node).name != c.node:
            # Export files are read from the data directory of the node asked.
            raise not_found(UNKNOWN_ERROR, f"export files of node {node!r} are not read here")
        doc = _parse_file(await _read(c, get_str(body, "filename") or ""))
    else:
        doc = body
        folder = backup_dir(c)
        await _run(_write, folder / _new_name(folder), json.dumps(doc, ensure_ascii=False))
    if not backup.supported_version(doc.get("version")):
        raise bad_request(BAD_PARAMETER, f"unsupported export version {doc.get('version')!r}")
    data = backup.parse_export(doc)
    await _run(_store_records, c, data)
    for ban in data.bans:
        await add_ban(request, ban)
    c.auth.clear()
    await c.sync.reload()
    return ok(data.counts())


# --- files -----------------------------------------------------------------------


async def download(request: web.Request) -> web.Response:
    c = ctx(request)
    filename = request.match_info["filename"]
    return ok({"filename": filename, "file": await _read(c, filename)})


async def upload(request: web.Request) -> web.Response:
    c = ctx(request)
    body = as_object(await read_json(request))
    content = body.get("file")
    if isinstance(content, dict):
        text = json.dumps(content, ensure_ascii=False)
    elif isinstance(content, str):
        _parse_file(content)
        text = content
    else:
        raise bad_request(BAD_PARAMETER, "'file' must be the export, as JSON text or an object")
    folder = backup_dir(c)
    filename = get_str(body, "filename", required=False) or _new_name(folder)
    await _run(_write, _path(c, filename), text)
    return ok({"node": c.node, "filename": filename})


async def delete(request: web.Request) -> web.Response:
    c = ctx(request)
    filename = request.match_info["filename"]
    path = _path(c, filename)
    try:
        await _run(path.unlink)
    except FileNotFoundError:
        raise not_found(UNKNOWN_ERROR, f"no export file {filename!r}") from None
    return ok()


_FILE_PATH = "/data/file/{filename}"
ROUTES = [
    Route(
        "export_data",
        "POST",
        "/data/export",
        export,
        "Write apps, credentials, ACL rules and bans to a new export file (EMQX 4.4 format)",
        data=_FILE,
        errors=(),
    ),
    Route(
        "list_exported",
        "GET",
        "/data/export",
        list_exported,
        "The export files, oldest first",
        data=arr(_FILE),
        errors=(),
    ),
    Route(
        "import_data",
        "POST",
        "/data/import",
        import_data,
        "Import {filename[, node]} of an export file, or the export itself as the body",
        body={"type": "object"},
        data=_REPORT,
        errors=(400, 404),
    ),
    Route(
        "download",
        "GET",
        _FILE_PATH,
        download,
        "One export file: {filename, file}",
        data=obj({"filename": STR, "file": STR}),
        errors=(400, 404),
    ),
    Route(
        "upload",
        "POST",
        "/data/file",
        upload,
        "Store {filename?, file} as an export file",
        body=obj({"filename": STR, "file": {}}, ("file",)),
        data=obj({"node": STR, "filename": STR}),
    ),
    Route("delete_file", "DELETE", _FILE_PATH, delete, "Delete an export file", errors=(400, 404)),
]
