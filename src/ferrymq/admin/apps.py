"""API apps (AppID + AppSecret): creation, the first-start app, verification.

Secrets are random (``new_secret``: 192 bits), so a salted sha256 is as safe
as a slow hash for them and keeps checking a request cheap; they are shown
once, at creation, and only their hash is stored. No aiohttp here: the
command line uses this module too.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from typing import TYPE_CHECKING

from ferrymq.access.passwords import hash_password, new_secret, verify_password
from ferrymq.digests import token_hex
from ferrymq.storage.store import DuplicateError

if TYPE_CHECKING:
    from ferrymq.config import Settings
    from ferrymq.storage.sqlite import SqliteStore

log = logging.getLogger("ferrymq.api")  # the API's log, where these lines always were

SECRET_HASH = "sha256"


def new_app_id() -> str:
    return token_hex(6)


def valid_app_id(app_id: str) -> bool:
    """AppIDs are the Basic user name: no colon, nothing invisible, at most 128 characters."""
    return 0 < len(app_id) <= 128 and ":" not in app_id and app_id.isprintable()


def create_app(
    store: SqliteStore,
    name: str,
    app_id: str | None = None,
    secret: str | None = None,
    desc: str = "",
) -> tuple[str, str]:
    """Create an app; return (app_id, secret). Raises DuplicateError, ValueError."""
    app_id = app_id or new_app_id()
    if not valid_app_id(app_id):
        raise ValueError(f"invalid AppID {app_id!r}: 1-128 printable characters, no ':'")
    secret = secret or new_secret()
    store.add_app(app_id, name, hash_password(secret, SECRET_HASH), desc, True)
    return app_id, secret


def secret_matches(app: dict[str, object], secret: str) -> bool:
    stored = app.get("secret_hash")
    return isinstance(stored, str) and verify_password(secret, stored)


def ensure_configured_app(store: SqliteStore, settings: Settings) -> None:
    """Make the app of ``api_app_id`` / ``api_app_secret`` exist with that secret.

    Like EMQX's default application: the configured pair always works, even
    after its secret was changed in the configuration.
    """
    app_id, secret = settings.api_app_id, settings.api_app_secret
    app = store.get_app(app_id)
    if app is not None:
        if secret_matches(app, secret):
            if not app["enabled"]:
                log.warning("the configured API app %s is disabled", app_id)
            return
        store.delete_app(app_id)
        log.info("API app %s: secret replaced by the configured one", app_id)
    else:
        log.info("created API app %s from the configuration", app_id)
    with contextlib.suppress(DuplicateError):  # created by a command meanwhile: keep it
        create_app(store, "default", app_id, secret, "configured (api_app_id)")


def bootstrap_apps(store: SqliteStore, settings: Settings) -> None:
    """At start: apply the configured app, or create the first app when there is none.

    A generated secret is printed once, on standard output, and never logged.
    """
    if settings.api_app_id or settings.api_app_secret:
        if not (settings.api_app_id and settings.api_app_secret):
            log.warning("api_app_id and api_app_secret must be set together; ignoring them")
        else:
            ensure_configured_app(store, settings)
            return
    if store.list_apps():
        return
    app_id, secret = create_app(store, "default", desc="created at first start")
    log.info("created the first API app %s (its secret is printed on standard output)", app_id)
    curl = "curl -k" if settings.api_certfile else "curl"
    scheme = "https" if settings.api_certfile else "http"
    host = settings.api_bind if settings.api_bind not in ("0.0.0.0", "::", "") else "127.0.0.1"
    print(
        "ferrymq: created the first API app; the secret is shown only this once:\n"
        f"  AppID:     {app_id}\n"
        f"  AppSecret: {secret}\n"
        f"  try: {curl} -u {app_id}:{secret} {scheme}://{host}:{settings.api_port}/api/v4/clients",
        flush=True,
        file=sys.stdout,
    )
