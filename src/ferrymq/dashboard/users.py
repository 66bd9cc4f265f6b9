"""Dashboard users: who may log in to the web dashboard (not MQTT clients, not API apps).

Passwords are chosen by people, so they are hashed with the slow pbkdf2
scheme of ``access.passwords``. No aiohttp here: the ``ferrymq dashboard``
command uses this module too.
"""

from __future__ import annotations

import logging
import sys
from typing import TYPE_CHECKING, Any

from ferrymq.access.passwords import hash_password, new_secret, verify_password

if TYPE_CHECKING:
    from ferrymq.config import Settings
    from ferrymq.storage.sqlite import SqliteStore

log = logging.getLogger("ferrymq.dashboard")

ADMIN = "admin"
PASSWORD_HASH = "pbkdf2"
MAX_NAME = 64


def check_username(username: str) -> None:
    """Raise ValueError unless ``username`` is 1-64 printable characters without ':'."""
    if not 0 < len(username) <= MAX_NAME or ":" in username or not username.isprintable():
        raise ValueError(f"invalid dashboard username {username!r}: 1-64 printable characters")


def check_password(password: str) -> None:
    if not password:
        raise ValueError("the password must not be empty")


def add_user(store: SqliteStore, username: str, password: str, desc: str = "") -> None:
    """Create a user; raises ValueError for a bad name or password, DuplicateError."""
    check_username(username)
    check_password(password)
    store.add_dashboard_user(username, hash_password(password, PASSWORD_HASH), desc)


def set_password(store: SqliteStore, username: str, password: str) -> bool:
    check_password(password)
    return store.update_dashboard_user(username, hash_password(password, PASSWORD_HASH))


def delete_user(store: SqliteStore, username: str) -> bool:
    """Delete a user; the last one stays (ValueError), so the dashboard cannot lock itself out."""
    users = store.list_dashboard_users()
    if not any(u["username"] == username for u in users):
        return False
    if len(users) == 1:
        raise ValueError(f"{username!r} is the only dashboard user and cannot be deleted")
    return store.delete_dashboard_user(username)


def verify(store: SqliteStore, username: str, password: str) -> dict[str, Any] | None:
    """The user record when ``password`` is right, else None (slow: run it off the loop)."""
    user = store.get_dashboard_user(username)
    if user is None or not verify_password(password, user["password_hash"]):
        return None
    return user


def bootstrap_admin(store: SqliteStore, settings: Settings) -> None:
    """At the first start (no users yet), create ``admin``.

    Its password is ``dashboard_password`` when set, else a generated one,
    printed once on standard output and never logged.
    """
    if store.list_dashboard_users():
        return
    password = settings.dashboard_password or new_secret(12)
    add_user(store, ADMIN, password, "created at first start")
    if settings.dashboard_password:
        log.info("created the dashboard user %s with the configured password", ADMIN)
        return
    log.info("created the dashboard user %s (its password is printed on standard output)", ADMIN)
    host = settings.dashboard_bind
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    print(
        "ferrymq: created the dashboard user; the password is shown only this once:\n"
        f"  Username: {ADMIN}\n"
        f"  Password: {password}\n"
        f"  open: http://{host}:{settings.dashboard_port}/",
        flush=True,
        file=sys.stdout,
    )
