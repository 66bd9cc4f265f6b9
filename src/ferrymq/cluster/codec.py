"""The frames forwarded messages travel in between nodes.

A batch is the concatenation of frames, each ``u32 length (little endian) |
stored message`` (``storage.codec.dump_message``: topic, payload, QoS,
retain, MQTT 5 properties, publisher client id for no-local, and the expiry
as a wall-clock deadline, so expiry holds across processes whose clocks are
synchronised). A message is framed once, whatever the number of nodes it
goes to: the same bytes join each destination's batch.

A message that the receiving node must also give to shared groups
(``cluster/shared.py``) has the top bit of its length set and, before the
stored message, ``u8 hops | u16 size | the group keys joined by NUL`` (a
topic filter never holds U+0000). ``hops`` is 1 on a message a node passes
on because its members left meanwhile; such a message is not passed on
again. A frame without the bit serves no shared group on arrival.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable

from ferrymq.model.message import Message
from ferrymq.storage.codec import dump_message, load_message

_LEN = struct.Struct("<I")
_LEN_SIZE = _LEN.size
_GROUPS = struct.Struct("<BH")
_SHARED = 0x8000_0000

#: What an annotated frame asks of its receiving node: (group keys, hops).
Serve = tuple[tuple[str, ...], int]


def frame(msg: Message) -> bytes:
    """``msg`` as one frame of a batch."""
    data = dump_message(msg)
    return _LEN.pack(len(data)) + data


def frame_stored(stored: bytes) -> bytes:
    """The plain frame of ``stored`` (``dump_message``)."""
    return _LEN.pack(len(stored)) + stored


def frame_shared(stored: bytes, keys: Iterable[str], hops: int = 0) -> bytes:
    """A frame of ``stored`` (``dump_message``) that also serves the groups ``keys``."""
    names = "\x00".join(keys).encode()
    head = _GROUPS.pack(hops, len(names)) + names
    return _LEN.pack((len(head) + len(stored)) | _SHARED) + head + stored


def split(batch: bytes) -> list[Message]:
    """The messages of a batch of frames, in order; ValueError when it is malformed."""
    return read_batch(batch)[0]


def read_batch(batch: bytes) -> tuple[list[Message], dict[int, Serve] | None]:
    """The messages of a batch, and for those that serve shared groups, by index, what they
    ask (None when none does); ValueError when the batch is malformed."""
    out: list[Message] = []
    served: dict[int, Serve] | None = None
    view = memoryview(batch)
    pos, end = 0, len(batch)
    unpack = _LEN.unpack_from
    while pos < end:
        if end - pos < _LEN_SIZE:
            raise ValueError("forwarded batch is truncated")
        (size,) = unpack(view, pos)
        pos += _LEN_SIZE
        start = pos
        if size & _SHARED:
            size &= ~_SHARED
            if size < _GROUPS.size or end - pos < size:
                raise ValueError("forwarded batch is truncated")
            hops, names = _GROUPS.unpack_from(view, pos)
            start = pos + _GROUPS.size + names
            if start > pos + size:
                raise ValueError("forwarded frame's groups overrun it")
            keys = bytes(view[pos + _GROUPS.size : start]).decode().split("\x00")
            if served is None:
                served = {}
            served[len(out)] = (tuple(keys), hops)
        elif end - pos < size:
            raise ValueError("forwarded batch is truncated")
        out.append(load_message(bytes(view[start : pos + size])))
        pos += size
    return out, served


def count_frames(batch: bytes) -> int:
    """How many frames ``batch`` holds (read from their lengths alone, nothing decoded);
    a truncated last frame counts as one."""
    count = 0
    pos, end = 0, len(batch)
    unpack = _LEN.unpack_from
    while pos + _LEN_SIZE <= end:
        (size,) = unpack(batch, pos)
        pos += _LEN_SIZE + (size & ~_SHARED)
        count += 1
    return count
