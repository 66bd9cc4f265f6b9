"""EMQX 4.4's data export format both ways: what ``/data/export`` writes, ``/data/import`` reads.

The layout is that of ``emqx_mgmt_data_backup`` (4.4, open-source edition)::

    {"version": "4.4", "date": "...", "rules": [], "resources": [],
     "blacklist": [{"who": {"clientid": "c1"}, "by", "reason", "at", "until"}],
     "apps": [{"id", "secret", "name", "desc", "status", "expired"}],
     "users": [{"username", "password", "tags"}],          # dashboard users
     "auth_mnesia": [{"login", "type", "password", "created_at"}],
     "acl_mnesia": [{"type", "type_value", "topic", "action", "access", "created_at"}]}

``auth_mnesia`` passwords are base64 of EMQX's stored secret: with the
default ``sha256`` hash, a 4-byte salt followed by the 64 hex digits of
``sha256(salt + password)``, or the 64 hex digits alone for unsalted records.
That is ferrymq's ``sha256$<salt hex>$<digest hex>`` scheme with the salt's
bytes spelled out, so such records keep verifying after an import; ferrymq's
own sha256 records go out the same way (their 16-byte salt verifies in
ferrymq, but EMQX only splits off 4 bytes). pbkdf2 and bcrypt records have
no EMQX form: they are exported as base64 of ferrymq's own hash string,
which ferrymq reads back and EMQX cannot verify. Records made with EMQX's
other hash settings (md5, sha, sha512, plain) cannot be checked here and
are reported as skipped.

App secrets: EMQX exports them in clear text, ferrymq only has their hash,
which it exports in the ``secret`` field (and recognises on import). Old
layouts of EMQX before 4.3 (``auth_clientid``, ``auth_username``) are read
too; the fields ferrymq has no use for (rules, resources) are ignored.
"""

from __future__ import annotations

import base64
import binascii
import re
import time
from dataclasses import dataclass, field
from typing import Any, TypeGuard

from ferrymq.access.passwords import ALGORITHMS
from ferrymq.admin.apps import valid_app_id
from ferrymq.core.banned import KINDS as BAN_KINDS
from ferrymq.core.banned import Ban, normalize_peerhost
from ferrymq.mqtt.topics import TopicError, validate_topic_filter

VERSION = "4.4"
_HEX64 = re.compile(rb"[0-9a-fA-F]{64}")
_ACTIONS = ("pub", "sub", "pubsub")
_ACCESS = ("allow", "deny")


# --- passwords -----------------------------------------------------------------


def password_to_emqx(stored: str) -> str:
    """base64 of EMQX's stored form of a ferrymq hash (see the module docstring)."""
    scheme, _, rest = stored.partition("$")
    if scheme == "sha256":
        salt_hex, _, digest = rest.partition("$")
        try:
            raw = bytes.fromhex(salt_hex) + digest.encode("ascii")
        except (ValueError, UnicodeError):
            raw = stored.encode("utf-8")
    else:
        raw = stored.encode("utf-8")
    return base64.b64encode(raw).decode("ascii")


def password_from_emqx(text: str) -> str:
    """ferrymq's hash string for an exported password; ValueError if it cannot be checked."""
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("password is not base64") from None
    own = _own_hash(raw)
    if own is not None:
        return own
    if len(raw) >= 64 and _HEX64.fullmatch(raw[-64:]):
        return f"sha256${raw[:-64].hex()}${raw[-64:].decode('ascii').lower()}"
    raise ValueError("password hash is not EMQX's sha256 (md5, sha, sha512, plain: unsupported)")


def _own_hash(raw: bytes) -> str | None:
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError:
        return None
    scheme = text.partition("$")[0]
    return text if scheme in ALGORITHMS and scheme != "sha256" and "$" in text else None


def is_own_hash(secret: str) -> bool:
    """Whether an app ``secret`` is one of ferrymq's hash strings rather than a clear secret."""
    scheme, sep, rest = secret.partition("$")
    return bool(sep) and scheme in ALGORITHMS and bool(rest)


# --- the whole document ------------------------------------------------------------


@dataclass
class Imported:
    """What an export holds, checked and converted; ``skipped`` says what was left out and why."""

    apps: list[dict[str, Any]] = field(default_factory=list)
    auth: list[tuple[str, str, str]] = field(default_factory=list)  # (kind, subject, hash)
    acl: list[tuple[str, str, str, str, str, int | None]] = field(default_factory=list)
    bans: list[Ban] = field(default_factory=list)
    skipped: list[dict[str, Any]] = field(default_factory=list)

    def skip(self, section: str, item: Any, reason: str) -> None:
        self.skipped.append({"section": section, "item": _describe(item), "reason": reason})

    def counts(self) -> dict[str, Any]:
        return {
            "apps": len(self.apps),
            "auth_mnesia": len(self.auth),
            "acl_mnesia": len(self.acl),
            "blacklist": len(self.bans),
            "skipped": self.skipped,
        }


def _describe(item: Any) -> Any:
    """An item for the report, without secrets."""
    if isinstance(item, dict):
        return {k: v for k, v in item.items() if k not in ("password", "secret")}
    return item


def supported_version(version: Any) -> bool:
    return isinstance(version, str) and re.fullmatch(r"4\.\d+(\.\d+)?", version) is not None


def parse_export(doc: dict[str, Any]) -> Imported:
    """Check and convert every record of an export; bad records are skipped, not fatal."""
    out = Imported()
    for item in _section(doc, "apps", out):
        _app(item, out)
    for item in _section(doc, "auth_mnesia", out):
        kind, login = item.get("type"), item.get("login")
        _auth(kind, login, item, "auth_mnesia", out)
    for kind in ("clientid", "username"):  # the layout of EMQX before 4.3
        for item in _section(doc, "auth_" + kind, out):
            _auth(kind, item.get(kind), item, "auth_" + kind, out)
    for item in sorted(_section(doc, "acl_mnesia", out), key=_created_at):
        _acl(item, out)
    for item in _section(doc, "blacklist", out):
        _ban(item, out)
    for item in _section(doc, "users", out):
        out.skip("users", {"username": item.get("username")}, "dashboard users are not imported")
    return out


def _section(doc: dict[str, Any], name: str, out: Imported) -> list[dict[str, Any]]:
    items = doc.get(name, [])
    if not isinstance(items, list):
        out.skip(name, None, "not a list")
        return []
    good = [i for i in items if isinstance(i, dict)]
    for bad in (i for i in items if not isinstance(i, dict)):
        out.skip(name, bad, "not an object")
    return good


def _created_at(item: dict[str, Any]) -> float:
    value = item.get("created_at")
    return float(value) if isinstance(value, (int, float)) else 0.0


def _text(value: Any) -> TypeGuard[str]:
    return isinstance(value, str) and value != ""


def _app(item: dict[str, Any], out: Imported) -> None:
    app_id, secret = item.get("id"), item.get("secret")
    if not _text(app_id) or not _text(secret):
        out.skip("apps", item, "an app needs id and secret")
        return
    if not valid_app_id(app_id):
        out.skip("apps", item, "an AppID is 1-128 printable characters without ':'")
        return
    status = item.get("status", True)
    out.apps.append(
        {
            "app_id": app_id,
            "secret": secret,
            "name": item.get("name") if isinstance(item.get("name"), str) else app_id,
            "desc": item.get("desc") if isinstance(item.get("desc"), str) else "",
            "enabled": status is True or status == "true",
        }
    )


def _auth(kind: Any, subject: Any, item: dict[str, Any], section: str, out: Imported) -> None:
    if kind not in ("clientid", "username") or not _text(subject):
        out.skip(section, item, "needs type clientid or username and a login")
        return
    password = item.get("password")
    if not isinstance(password, str):
        out.skip(section, item, "no password")
        return
    try:
        out.auth.append((kind, subject, password_from_emqx(password)))
    except ValueError as exc:
        out.skip(section, item, str(exc))


def _acl(item: dict[str, Any], out: Imported) -> None:
    kind, topic = item.get("type"), item.get("topic")
    action, access = item.get("action"), item.get("access")
    if kind == "all" or (kind in ("clientid", "username") and "type_value" not in item):
        kind, subject = "all", ""
    elif kind in ("clientid", "username") and _text(item.get("type_value")):
        subject = item["type_value"]
    else:
        out.skip("acl_mnesia", item, "type must be clientid, username (with type_value) or all")
        return
    if action == "subpub":
        action = "pubsub"
    if not _text(topic) or action not in _ACTIONS or access not in _ACCESS:
        out.skip("acl_mnesia", item, "needs topic, action pub|sub|pubsub, access allow|deny")
        return
    try:
        validate_topic_filter(topic)
    except TopicError as exc:
        out.skip("acl_mnesia", item, f"invalid topic filter: {exc}")
        return
    created = item.get("created_at")
    created_ms = int(created) if isinstance(created, int) and created > 0 else None
    out.acl.append((kind, subject, topic, action, access, created_ms))


def _ban(item: dict[str, Any], out: Imported) -> None:
    who = item.get("who")
    if not isinstance(who, dict) or len(who) != 1:
        out.skip("blacklist", item, 'who must be {"clientid" | "username" | "peerhost": value}')
        return
    ((kind, value),) = who.items()
    if kind not in BAN_KINDS or not _text(value):
        out.skip("blacklist", item, "unknown kind of ban")
        return
    if kind == "peerhost":
        try:
            value = normalize_peerhost(value)
        except ValueError:
            out.skip("blacklist", item, "peerhost is not an IP address")
            return
    at, until = item.get("at"), item.get("until")
    if not isinstance(at, int) or not isinstance(until, int) or isinstance(at, bool):
        out.skip("blacklist", item, "at and until must be epoch seconds")
        return
    if until <= time.time():
        out.skip("blacklist", item, "expired")
        return
    by = item.get("by") if isinstance(item.get("by"), str) else "user"
    reason = item.get("reason") if isinstance(item.get("reason"), str) else ""
    out.bans.append(Ban(kind, value, by or "user", reason or "", at, until))


def build_export(
    apps: list[dict[str, Any]],
    auth: dict[str, list[dict[str, Any]]],
    acl: list[dict[str, Any]],
    bans: list[Ban],
    now: float,
) -> dict[str, Any]:
    """The export document of the given store rows."""
    return {
        "version": VERSION,
        "rules": [],
        "resources": [],
        "blacklist": [
            {"who": {b.kind: b.who}, "by": b.by, "reason": b.reason, "at": b.at, "until": b.until}
            for b in bans
        ],
        "apps": [
            {
                "id": a["app_id"],
                "secret": a["secret_hash"],
                "name": a["name"],
                "desc": a["desc"],
                "status": a["enabled"],
                "expired": "undefined",
            }
            for a in apps
        ],
        "users": [],
        "auth_mnesia": [
            {
                "login": r["subject"],
                "type": kind,
                "password": password_to_emqx(r["password_hash"]),
                "created_at": int(r["created_at"] * 1000),
            }
            for kind in ("username", "clientid")
            for r in auth[kind]
        ],
        "acl_mnesia": [_acl_out(r) for r in acl],
        "date": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(now)),
    }


def _acl_out(row: dict[str, Any]) -> dict[str, Any]:
    head: dict[str, Any] = {"type": row["kind"]}
    if row["kind"] != "all":
        head["type_value"] = row["subject"]
    return {
        **head,
        "topic": row["topic"],
        "action": row["action"],
        "access": row["access"],
        "created_at": int(row["created_at"]),  # stored in epoch milliseconds
    }
