"""The packets of every message: PUBLISH and its four acknowledgements, and their base.

They are compiled (``native.HOT``) with hand-written methods, where ``packets.py``'s
dataclasses have generated ones that run interpreted: the decoder builds a ``Publish``
or a ``Puback`` for every packet it reads, and a dataclass ``__init__`` of seven fields
took about 2,000 instructions. ``packets.py`` re-exports them; what its rules say of
the dataclasses holds here too: positional and keyword construction in field order,
``==`` compares the class and every field, ``repr`` names every field, and ``None``
for properties means none and is stored as ``{}``."""

from __future__ import annotations

from typing import Any, ClassVar

from mypy_extensions import mypyc_attr

Properties = dict[str, Any]

# Control packet type numbers of these (``packets.py`` has them all).
PUBLISH = 3
PUBACK = 4
PUBREC = 5
PUBREL = 6
PUBCOMP = 7


@mypyc_attr(allow_interpreted_subclasses=True)
class Packet:
    """Base class; ``type`` is the control packet type number (a class constant).

    Subclasses are slotted: the dataclasses of ``packets.py`` and the compiled classes
    below.
    """

    __slots__ = ()
    type: ClassVar[int] = 0


class Publish(Packet):
    """PUBLISH; ``packet_id`` is 0 for QoS 0. ``topic`` may be "" when a v5 topic alias is used."""

    __slots__ = ("topic", "payload", "qos", "retain", "dup", "packet_id", "properties")
    type: ClassVar[int] = PUBLISH

    def __init__(
        self,
        topic: str,
        payload: bytes = b"",
        qos: int = 0,
        retain: bool = False,
        dup: bool = False,
        packet_id: int = 0,
        properties: Properties | None = None,
    ) -> None:
        self.topic = topic
        self.payload = payload
        self.qos = qos
        self.retain = retain
        self.dup = dup
        self.packet_id = packet_id
        self.properties: Properties = {} if properties is None else properties

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        assert isinstance(other, Publish)
        return (
            self.topic == other.topic
            and self.payload == other.payload
            and self.qos == other.qos
            and self.retain == other.retain
            and self.dup == other.dup
            and self.packet_id == other.packet_id
            and self.properties == other.properties
        )

    def __repr__(self) -> str:
        return (
            f"Publish(topic={self.topic!r}, payload={self.payload!r}, qos={self.qos!r}, "
            f"retain={self.retain!r}, dup={self.dup!r}, packet_id={self.packet_id!r}, "
            f"properties={self.properties!r})"
        )


class _Ack(Packet):
    """PUBACK / PUBREC / PUBREL / PUBCOMP: packet id, v5 reason code and properties."""

    __slots__ = ("packet_id", "reason_code", "properties")

    def __init__(
        self, packet_id: int, reason_code: int = 0, properties: Properties | None = None
    ) -> None:
        self.packet_id = packet_id
        self.reason_code = reason_code
        self.properties: Properties = {} if properties is None else properties

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        assert isinstance(other, _Ack)
        return (
            self.packet_id == other.packet_id
            and self.reason_code == other.reason_code
            and self.properties == other.properties
        )

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(packet_id={self.packet_id!r}, "
            f"reason_code={self.reason_code!r}, properties={self.properties!r})"
        )


class Puback(_Ack):
    __slots__ = ()
    type: ClassVar[int] = PUBACK


class Pubrec(_Ack):
    __slots__ = ()
    type: ClassVar[int] = PUBREC


class Pubrel(_Ack):
    __slots__ = ()
    type: ClassVar[int] = PUBREL


class Pubcomp(_Ack):
    __slots__ = ()
    type: ClassVar[int] = PUBCOMP
