"""The frames forwarded messages travel in between nodes.

A batch is the concatenation of frames, each ``u32 length (little endian) |
stored message`` (``storage.codec.dump_message``: topic, payload, QoS,
retain, MQTT 5 properties, publisher client id for no-local, and the expiry
as a wall-clock deadline, so expiry holds across processes whose clocks are
synchronised). A message is framed once, whatever the number of nodes it
goes to: the same bytes join each destination's batch.
"""

from __future__ import annotations

import struct

from ferrymq.model.message import Message
from ferrymq.storage.codec import dump_message, load_message

_LEN = struct.Struct("<I")
_LEN_SIZE = _LEN.size


def frame(msg: Message) -> bytes:
    """``msg`` as one frame of a batch."""
    data = dump_message(msg)
    return _LEN.pack(len(data)) + data


def split(batch: bytes) -> list[Message]:
    """The messages of a batch of frames, in order; ValueError when it is malformed."""
    out: list[Message] = []
    view = memoryview(batch)
    pos, end = 0, len(batch)
    unpack = _LEN.unpack_from
    while pos < end:
        if end - pos < _LEN_SIZE:
            raise ValueError("forwarded batch is truncated")
        (size,) = unpack(view, pos)
        pos += _LEN_SIZE
        if end - pos < size:
            raise ValueError("forwarded batch is truncated")
        out.append(load_message(bytes(view[pos : pos + size])))
        pos += size
    return out
