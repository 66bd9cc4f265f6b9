"""Compact binary form of a Message for the database.

Layout (little endian)::

    u8 version | u8 flags (qos in bits 0-1, retain in bit 2)
    f64 expiry deadline, wall clock (0 = never) | f64 created, wall clock
    u32 topic length | u32 publisher length | u32 properties length
    topic (UTF-8) | publisher (UTF-8) | properties (JSON, absent when empty) | payload

A retained row leaves the topic out of its blob (its key is the topic), which
``topic`` length 0 says; rows written before carry it inside. The retained
journal holds a batch's retained writes as such rows, each with two lengths
before it and its topic after it (:func:`journal_rows`).

``Message.expiry_at`` is a ``time.monotonic()`` deadline, meaningless in another
process, so it is stored as a wall-clock deadline and converted back on load.
JSON cannot hold bytes or tuples, and properties carry both (correlation_data,
user_property pairs), so such values are wrapped in one-key tag objects:
``{"b": base64}`` for bytes, ``{"t": [...]}`` for tuples, ``{"d": {...}}`` for
nested dicts (so that every dict met while decoding is a tag).

A session's will is stored in the same form, as base64 text inside the
session record (:func:`dump_will` / :func:`load_will`).
"""

from __future__ import annotations

import binascii
import json
import logging
import struct
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any, Final, TypeVar

from ferrymq.model.message import Message
from ferrymq.mqtt.packets import Will

__all__ = [
    "dump_message",
    "dump_row",
    "dump_will",
    "journal_merge",
    "journal_rows",
    "latest_retained",
    "load_message",
    "load_will",
]

_B = TypeVar("_B", bytes, bytearray)

log = logging.getLogger("ferrymq.storage")

# Final: compiled code reads them as C constants, not module attributes (each message
# forwarded between nodes is dumped on one and loaded on the other).
_VERSION: Final = 1
_HEADER = struct.Struct("<BBddIII")
_HEADER_SIZE: Final = 30
assert _HEADER.size == _HEADER_SIZE
_ENTRY = struct.Struct("<II")  # a retained journal write: topic length, row length
_ENTRY_SIZE: Final = 8
_ENTRY_ROW = struct.Struct("<IIBBddIII")  # the two lengths and the row's header at once
assert _ENTRY_ROW.size == _ENTRY_SIZE + _HEADER_SIZE
_RETAIN: Final = 0x04
_NEVER_PAST: Final = 1e-9  # a deadline that already passed, but is not 0.0 ("never")

_encode_json = json.JSONEncoder(
    ensure_ascii=False, check_circular=False, separators=(",", ":")
).encode
_decode_json = json.JSONDecoder().decode


def dump_message(msg: Message, with_topic: bool = True) -> bytes:
    """Serialise ``msg``; the inverse of :func:`load_message`. Without ``with_topic`` the
    topic is left out (length 0), for a row whose key is the topic already."""
    return _dump(msg, with_topic, _join_bytes)


def dump_row(msg: Message, with_topic: bool = True) -> bytearray:
    """:func:`dump_message` as a ``bytearray``, for an SQLite parameter: ``sqlite3`` binds a
    bytearray as it is, a bytes only after its adapter look-up (which raises and clears an
    AttributeError per row: about a sixth of the writer thread's work on retained rows)."""
    return _dump(msg, with_topic, _join_bytearray)


_join_bytes = b"".join
_join_bytearray = bytearray().join  # a new bytearray per call


def latest_retained(log: deque[Message | str], count: int) -> dict[str, Message | None]:
    """The first ``count`` retained writes of ``log`` (a Message to put, a topic to delete),
    taken off it, as the last write per topic (None: a delete). Compiled: in pure Python
    this loop was a tenth of the writer thread's work per retained row."""
    out: dict[str, Message | None] = {}
    popleft = log.popleft
    for _ in range(count):
        item = popleft()
        if isinstance(item, str):
            out[item] = None
        else:
            out[item.topic] = item
    return out


def journal_rows(retained: dict[str, Message | None], per_row: int) -> list[tuple[bytearray]]:
    """A batch's retained writes as rows of the retained journal, ``per_row`` writes a row:
    each write ``u32 topic length | u32 row length | row | topic`` (row length 0: a
    delete), the row :func:`dump_row` without the topic. Compiled, with one ``struct``
    call a write (the lengths and the row's header packed together) and one join a row,
    because this is all a burst of retained messages costs the writer thread until the
    journal is folded (:func:`journal_merge`). The wall-clock offset is read once a batch
    and each publisher encoded once; a write that cannot be encoded is logged and left
    out."""
    offset = time.time() - time.monotonic()
    pack = _ENTRY_ROW.pack
    entry = _ENTRY.pack
    publishers: dict[str, bytes] = {}  # a batch's messages come from few clients
    out: list[tuple[bytearray]] = []
    # parts.append each time, not bound once to a local: compiled, the local is a
    # generic call (about 700 instructions) where the method is a list append (40).
    parts: list[bytes] = []
    count = 0
    for topic, msg in retained.items():
        try:
            name = topic.encode()
            if msg is None:
                parts.append(entry(len(name), 0))
            elif msg.properties:
                row = _dump(msg, False, _join_bytes)
                parts.append(entry(len(name), len(row)))
                parts.append(row)
            else:
                by = msg.publisher
                publisher = publishers.get(by)
                if publisher is None:
                    publisher = publishers[by] = by.encode()
                expiry = msg.expiry_at
                if expiry:
                    expiry += offset
                flags = msg.qos | (_RETAIN if msg.retain else 0)
                payload = msg.payload
                size = _HEADER_SIZE + len(publisher) + len(payload)
                by_len = len(publisher)
                header = pack(len(name), size, _VERSION, flags, expiry, msg.created, 0, by_len, 0)
                parts.append(header)
                if by_len:
                    parts.append(publisher)
                parts.append(payload)
            parts.append(name)
        except Exception:
            log.exception("cannot store retained message on %r", topic)
            continue
        count += 1
        if count == per_row:
            out.append((_join_bytearray(parts),))
            parts.clear()
            count = 0
    if count:
        out.append((_join_bytearray(parts),))
    return out


def _u32(data: bytes, pos: int) -> int:
    """The little-endian u32 at ``pos`` (the caller checked there are four bytes)."""
    return data[pos] | data[pos + 1] << 8 | data[pos + 2] << 16 | data[pos + 3] << 24


def journal_merge(latest: dict[str, bytearray | None], data: bytes) -> int:
    """Apply the writes of one journal row (:func:`journal_rows`) to ``latest``, topic ->
    row (None: deleted), and return how many there were; ValueError when ``data`` is not
    a journal row. The rows are ``bytearray`` slices: ``sqlite3`` binds those as they
    are, a ``bytes`` only after its adapter look-up. Lengths by byte indexing and the
    topic by a ``bytes`` slice: a ``struct`` call and a generic slice cost five times
    as much compiled."""
    rows = bytearray(data)
    end = len(data)
    pos = 0
    count = 0
    while pos < end:
        if pos + _ENTRY_SIZE > end:
            raise ValueError("retained journal row is truncated")
        topic_len = _u32(data, pos)
        row_len = _u32(data, pos + 4)
        pos += _ENTRY_SIZE
        stop = pos + row_len
        if stop + topic_len > end:
            raise ValueError("retained journal row is truncated")
        topic = data[stop : stop + topic_len].decode()
        latest[topic] = rows[pos:stop] if row_len else None
        pos = stop + topic_len
        count += 1
    return count


def _dump(msg: Message, with_topic: bool, join: Callable[[Iterable[bytes]], _B]) -> _B:
    topic = msg.topic.encode() if with_topic else b""
    publisher = msg.publisher.encode() if msg.publisher else b""
    props = msg.properties
    props_data = _encode_json({k: _tag(v) for k, v in props.items()}).encode() if props else b""
    expiry = msg.expiry_at
    if expiry:
        expiry += time.time() - time.monotonic()
    header = _HEADER.pack(
        _VERSION,
        msg.qos | (_RETAIN if msg.retain else 0),
        expiry,
        msg.created,
        len(topic),
        len(publisher),
        len(props_data),
    )
    return join((header, topic, publisher, props_data, msg.payload))


def load_message(data: bytes, strings: dict[str, str] | None = None, topic: str = "") -> Message:
    """Rebuild a Message from :func:`dump_message` output; ValueError when it is not one.
    ``topic`` is the topic of a message dumped without it.

    ``strings``, shared over many calls, makes equal topics and publishers one string
    object each (as they mostly are in a running broker), which matters for memory when
    a whole database is loaded.
    """
    if len(data) < _HEADER_SIZE:
        raise ValueError("stored message is truncated")
    # Typed: the lengths and flags are native integers from here on.
    header: tuple[int, int, float, float, int, int, int] = _HEADER.unpack_from(data)
    version, flags, expiry, created, topic_len, publisher_len, props_len = header
    if version != _VERSION:
        raise ValueError(f"unknown stored message version {version}")
    start = _HEADER_SIZE
    end = start + topic_len + publisher_len + props_len
    if end > len(data):
        raise ValueError("stored message is truncated")
    if topic_len or not topic:
        topic = str(data[start : start + topic_len], "utf-8")
    start += topic_len
    publisher = str(data[start : start + publisher_len], "utf-8") if publisher_len else ""
    start += publisher_len
    if strings is not None:
        topic = strings.setdefault(topic, topic)
        publisher = strings.setdefault(publisher, publisher)
    props = None
    if props_len:
        raw = _decode_json(str(data[start:end], "utf-8"))
        props = {k: _untag(v) for k, v in raw.items()}
    if expiry:
        expiry += time.monotonic() - time.time()
        if expiry <= 0.0:
            expiry = _NEVER_PAST
    return Message(
        topic,
        bytes(data[end:]),
        flags & 0x03,
        bool(flags & _RETAIN),
        props,
        publisher,
        expiry,
        created,
    )


def dump_will(will: Will) -> str:
    """A will as text for the stored session (the stored-message form, base64)."""
    msg = Message(will.topic, will.payload, will.qos, will.retain, will.properties or None)
    return binascii.b2a_base64(dump_message(msg), newline=False).decode("ascii")


def load_will(text: str) -> Will:
    """Inverse of :func:`dump_will`; ValueError when ``text`` is not one."""
    try:
        msg = load_message(binascii.a2b_base64(text))
    except binascii.Error as exc:
        raise ValueError(str(exc)) from None
    return Will(msg.topic, msg.payload, msg.qos, msg.retain, msg.properties or {})


def _tag(value: Any) -> Any:
    """Make ``value`` JSON-representable without losing its type."""
    if type(value) in (str, int):
        return value
    if isinstance(value, bytes | bytearray | memoryview):
        return {"b": binascii.b2a_base64(value, newline=False).decode("ascii")}
    if isinstance(value, tuple):
        return {"t": [_tag(v) for v in value]}
    if isinstance(value, list):
        return [_tag(v) for v in value]
    if isinstance(value, dict):
        return {"d": {k: _tag(v) for k, v in value.items()}}
    return value


def _untag(value: Any) -> Any:
    """Inverse of :func:`_tag`."""
    kind = type(value)
    if kind is list:
        return [_untag(v) for v in value]
    if kind is not dict:
        return value
    if len(value) != 1:
        raise ValueError("malformed stored property")
    ((tag, inner),) = value.items()
    if tag == "b":
        return binascii.a2b_base64(inner)
    if tag == "t":
        return tuple(_untag(v) for v in inner)
    if tag == "d":
        return {k: _untag(v) for k, v in inner.items()}
    raise ValueError(f"unknown stored property tag {tag!r}")
