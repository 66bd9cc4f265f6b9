"""One message on its way to one session, and the stored form of its state.

A Delivery is created per (message, session) and never per packet: the
message itself is shared. Its ``meta`` dict is what the store keeps beside the
stored message (the store serialises it; see ``storage/store.py``), and
:func:`fields_from_meta` is the inverse used when a session is restored.
"""

from __future__ import annotations

from typing import Any

from ferrymq.model.message import Message

__all__ = ["INFLIGHT", "QUEUED", "RELEASING", "Delivery", "DeliveryFields", "fields_from_meta"]

# Delivery states.
QUEUED = 0
INFLIGHT = 1  # PUBLISH sent, waiting for PUBACK / PUBREC
RELEASING = 2  # QoS 2: PUBREL sent, waiting for PUBCOMP

_STATE_NAMES = {QUEUED: "queued", INFLIGHT: "inflight", RELEASING: "pubrel"}
_STATE_BY_NAME = {v: k for k, v in _STATE_NAMES.items()}

#: (qos, retain, sub_ids, pid, state): a Delivery's fields besides its message and key.
DeliveryFields = tuple[int, bool, tuple[int, ...] | None, int, int]


class Delivery:
    """A message on its way to one session, with the QoS and flags it is delivered with.

    ``key`` is the session's store key for it (0: not stored), ``pid`` its packet
    id once it has one (0 while queued).
    """

    __slots__ = ("msg", "qos", "retain", "sub_ids", "pid", "state", "key")

    def __init__(
        self,
        msg: Message,
        qos: int,
        retain: bool,
        sub_ids: tuple[int, ...] | None,
        pid: int = 0,
        state: int = QUEUED,
        key: int = 0,
    ) -> None:
        self.msg = msg
        self.qos = qos
        self.retain = retain
        self.sub_ids = sub_ids
        self.pid = pid
        self.state = state
        self.key = key

    def meta(self) -> dict[str, Any]:
        """The stored form of everything but the message (a fresh dict: the store keeps it)."""
        meta: dict[str, Any] = {"q": self.qos, "s": _STATE_NAMES[self.state]}
        if self.pid:
            meta["p"] = self.pid
        if self.retain:
            meta["r"] = 1
        if self.sub_ids:
            meta["i"] = list(self.sub_ids)
        return meta


def fields_from_meta(meta: dict[str, Any], qos: int) -> DeliveryFields:
    """(qos, retain, sub_ids, pid, state) of a stored meta (the inverse of
    ``Delivery.meta``), for ``Delivery(msg, *fields, key)``."""
    ids = meta.get("i")
    return (
        int(meta.get("q", qos)),
        bool(meta.get("r", 0)),
        tuple(ids) if ids else None,
        int(meta.get("p", 0)),
        _STATE_BY_NAME.get(meta.get("s", "queued"), QUEUED),
    )
