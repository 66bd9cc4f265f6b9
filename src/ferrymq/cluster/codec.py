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

Compiled with mypyc (``native.HOT``): every forwarded message is framed here on one node
and read here on the other, so lengths are read and written with byte indexing and
``int.to_bytes`` (native operations compiled) rather than ``struct`` (a Python call each).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

from ferrymq.model.message import Message
from ferrymq.storage.codec import dump_message, load_message

_LEN_SIZE: Final = 4
_GROUPS_SIZE: Final = 3  # u8 hops | u16 size
_SHARED: Final = 0x8000_0000
_SIZE: Final = 0x7FFF_FFFF

#: What an annotated frame asks of its receiving node: (group keys, hops).
Serve = tuple[tuple[str, ...], int]


def frame(msg: Message) -> bytes:
    """``msg`` as one frame of a batch."""
    data = dump_message(msg)
    return len(data).to_bytes(_LEN_SIZE, "little") + data


def frame_stored(stored: bytes) -> bytes:
    """The plain frame of ``stored`` (``dump_message``)."""
    return len(stored).to_bytes(_LEN_SIZE, "little") + stored


def frame_shared(stored: bytes, keys: Iterable[str], hops: int = 0) -> bytes:
    """A frame of ``stored`` (``dump_message``) that also serves the groups ``keys``."""
    names = "\x00".join(keys).encode()
    if hops > 0xFF or len(names) > 0xFFFF:
        raise ValueError("too many group keys for one frame")
    head = bytes((hops, len(names) & 0xFF, len(names) >> 8)) + names
    size = (len(head) + len(stored)) | _SHARED
    return size.to_bytes(_LEN_SIZE, "little") + head + stored


def split(batch: bytes) -> list[Message]:
    """The messages of a batch of frames, in order; ValueError when it is malformed."""
    return read_batch(batch)[0]


def _u32(data: bytes, pos: int) -> int:
    """The little-endian u32 at ``pos`` (the caller checked there are four bytes)."""
    return data[pos] | data[pos + 1] << 8 | data[pos + 2] << 16 | data[pos + 3] << 24


def read_batch(batch: bytes) -> tuple[list[Message], dict[int, Serve] | None]:
    """The messages of a batch, and for those that serve shared groups, by index, what they
    ask (None when none does); ValueError when the batch is malformed."""
    out: list[Message] = []
    served: dict[int, Serve] | None = None
    pos = 0
    end = len(batch)
    while pos < end:
        if end - pos < _LEN_SIZE:
            raise ValueError("forwarded batch is truncated")
        size = _u32(batch, pos)
        pos += _LEN_SIZE
        start = pos
        if size & _SHARED:
            size &= _SIZE
            if size < _GROUPS_SIZE or end - pos < size:
                raise ValueError("forwarded batch is truncated")
            hops = batch[pos]
            start = pos + _GROUPS_SIZE + (batch[pos + 1] | batch[pos + 2] << 8)
            if start > pos + size:
                raise ValueError("forwarded frame's groups overrun it")
            keys = batch[pos + _GROUPS_SIZE : start].decode().split("\x00")
            if served is None:
                served = {}
            served[len(out)] = (tuple(keys), hops)
        elif end - pos < size:
            raise ValueError("forwarded batch is truncated")
        out.append(load_message(batch[start : pos + size]))
        pos += size
    return out, served


def count_frames(batch: bytes) -> int:
    """How many frames ``batch`` holds (read from their lengths alone, nothing decoded);
    a truncated last frame counts as one."""
    count = 0
    pos = 0
    end = len(batch)
    while pos + _LEN_SIZE <= end:
        pos += _LEN_SIZE + (_u32(batch, pos) & _SIZE)
        count += 1
    return count
