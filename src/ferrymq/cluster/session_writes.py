"""Persistent-session writes on their way to Redis, and a session's form there.

Pure bookkeeping, no I/O: ``cluster.clients`` sends what this collects.

A session is four keys (see ``cluster/clients.py``): its record (JSON, as
``Session.snapshot`` makes it), its messages (hash key -> ``storage.codec``
bytes), their meta (hash key -> JSON, rewritten alone on a state change) and
its incoming QoS 2 packet ids awaiting PUBREL (a set). Writes are collected
per client id between two sends, and only the last operation on a key counts:
a message queued and acknowledged within one send never reaches Redis, and a
deleted session drops what was still pending for it. Each operation becomes
five script arguments (``op, client id, a, b, c``) for the write script, which
applies only those of client ids this node still owns. What a session handed
over to another node still collects here is not a write of its own: each
message goes, as it comes, to whichever node owns the session when the write
script runs (``hand_on``).
"""

from __future__ import annotations

import json
from typing import Any

from ferrymq.model.message import Message
from ferrymq.storage.codec import dump_message, load_message
from ferrymq.storage.store import SessionMessage

#: Marks a message key deleted in a pending batch.
_GONE = None


class _Pending:
    """What one client id has pending: wiped first?, record, messages, meta, QoS 2 ids."""

    __slots__ = ("wiped", "record", "messages", "metas", "rel")

    def __init__(self) -> None:
        self.wiped = False
        self.record: dict[str, Any] | None = None
        self.messages: dict[int, tuple[Message, dict[str, Any]] | None] = {}
        self.metas: dict[int, dict[str, Any]] = {}
        self.rel: dict[int, bool] = {}


class SessionWrites:
    """Session writes not yet sent, collapsed per key."""

    def __init__(self) -> None:
        self._pending: dict[str, _Pending] = {}
        #: Messages for sessions handed over (client id, message, meta), in order.
        self._hand_on: list[tuple[str, Message, dict[str, Any]]] = []
        self.count = 0  # operations taken in since the last ``take``

    def __bool__(self) -> bool:
        return bool(self._pending) or bool(self._hand_on)

    def _of(self, client_id: str) -> _Pending:
        self.count += 1
        p = self._pending.get(client_id)
        if p is None:
            p = self._pending[client_id] = _Pending()
        return p

    def discard(self, client_id: str) -> None:
        """Forget what is pending for ``client_id`` (a stale copy's last writes; what it
        hands on is the session's owner's, and still goes)."""
        self._pending.pop(client_id, None)

    def hand_on(self, client_id: str, msg: Message, meta: dict[str, Any]) -> None:
        """``msg`` reached the session of ``client_id`` after it was handed over: for its
        owner's hand-over stream."""
        self.count += 1
        self._hand_on.append((client_id, msg, meta))

    def put_session(self, client_id: str, data: dict[str, Any]) -> None:
        self._of(client_id).record = data

    def delete_session(self, client_id: str) -> None:
        p = self._of(client_id)
        p.wiped = True
        p.record = None
        p.messages.clear()
        p.metas.clear()
        p.rel.clear()

    def put_message(self, client_id: str, key: int, msg: Message, meta: dict[str, Any]) -> None:
        p = self._of(client_id)
        p.messages[key] = (msg, meta)
        p.metas.pop(key, None)

    def update_meta(self, client_id: str, key: int, meta: dict[str, Any]) -> None:
        p = self._of(client_id)
        put = p.messages.get(key)
        if put is not None:
            p.messages[key] = (put[0], meta)
        elif key not in p.messages:
            p.metas[key] = meta

    def delete_message(self, client_id: str, key: int) -> None:
        p = self._of(client_id)
        p.messages[key] = _GONE
        p.metas.pop(key, None)

    def awaiting_rel(self, client_id: str, pid: int, awaiting: bool) -> None:
        self._of(client_id).rel[pid] = awaiting

    def take(self) -> tuple[list[bytes | str], set[str]]:
        """The pending writes as write-script arguments, and the client ids whose session
        was deleted (the caller decides whether their registration goes too)."""
        pending, self._pending = self._pending, {}
        late, self._hand_on = self._hand_on, []
        self.count = 0
        args: list[bytes | str] = []
        for cid, msg, meta in late:
            args += ("late", cid, dump_message(msg), json.dumps(meta), "")
        deleted = set()
        for cid, p in pending.items():
            if p.wiped:
                args += ("del", cid, "", "", "")
                deleted.add(cid)
            if p.record is not None:
                args += ("rec", cid, json.dumps(p.record), "", "")
                deleted.discard(cid)
            for key, put in p.messages.items():
                if put is _GONE:
                    args += ("rm", cid, str(key), "", "")
                else:
                    args += ("put", cid, str(key), dump_message(put[0]), json.dumps(put[1]))
            for key, meta in p.metas.items():
                args += ("meta", cid, str(key), json.dumps(meta), "")
            for pid, awaiting in p.rel.items():
                args += ("rel" if awaiting else "unrel", cid, str(pid), "", "")
        return args, deleted


def load_session(
    record: bytes | None,
    messages: dict[bytes, bytes],
    metas: dict[bytes, bytes],
    rel: list[bytes],
) -> tuple[dict[str, Any], list[int], list[SessionMessage]] | None:
    """A session as Redis holds it: (record, QoS 2 ids, messages ordered by key) for
    ``Restore.revive``; None when there is no record (no persistent session)."""
    if not record:
        return None
    data = json.loads(record)
    out: list[SessionMessage] = []
    for raw_key, body in messages.items():
        key = int(raw_key)
        meta_text = metas.get(raw_key)
        meta = json.loads(meta_text) if meta_text else {}
        out.append((key, load_message(body), meta))
    out.sort(key=lambda item: item[0])
    return data, sorted(int(pid) for pid in rel), out


def pairs(flat: list[bytes]) -> dict[bytes, bytes]:
    """A flat ``HGETALL`` reply (as a script returns it) as a dict."""
    return dict(zip(flat[::2], flat[1::2], strict=True))
