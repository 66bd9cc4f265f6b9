"""MQTT control packets as slotted classes, shared by every protocol version.

One class per packet type; fields that exist only in MQTT 5 (reason codes,
properties) are present on all versions and ignored when encoding for 3.1/3.1.1.
Properties are a plain ``dict`` keyed by the property's snake_case name (see
``properties.py``); ``user_property`` holds a list of ``(key, value)`` pairs and
``subscription_identifier`` on PUBLISH holds a list of ints. An empty or ``None``
properties value means "no properties" to the encoder.

PUBLISH and its four acknowledgements, built for every message, are compiled classes
with hand-written methods (``message_packets.py``); the rest are dataclasses.

Rules this file keeps:
- ``__init__`` takes the fields in the order declared here, so positional
  construction (``Puback(pid, reason, props)``) is part of the API;
- ``type`` is a class constant, not a field: it takes no part in ``__eq__``,
  which compares the class and every field;
- ``None`` for properties means none and is stored as ``{}`` (UNSUBACK's
  ``reason_codes``: ``[]``), by the dataclasses in ``__post_init__``."""

from __future__ import annotations

from dataclasses import KW_ONLY, dataclass, field
from typing import Any, ClassVar

from ferrymq.mqtt.message_packets import (
    PUBACK,
    PUBCOMP,
    PUBLISH,
    PUBREC,
    PUBREL,
    Packet,
    Properties,
    Puback,
    Pubcomp,
    Publish,
    Pubrec,
    Pubrel,
)

__all__ = ["Packet", "Properties", "Puback", "Pubcomp", "Publish", "Pubrec", "Pubrel"]

# Control packet type numbers (first nibble of the fixed header).
CONNECT = 1
CONNACK = 2
SUBSCRIBE = 8
SUBACK = 9
UNSUBSCRIBE = 10
UNSUBACK = 11
PINGREQ = 12
PINGRESP = 13
DISCONNECT = 14
AUTH = 15

PACKET_NAMES = {
    CONNECT: "connect",
    CONNACK: "connack",
    PUBLISH: "publish",
    PUBACK: "puback",
    PUBREC: "pubrec",
    PUBREL: "pubrel",
    PUBCOMP: "pubcomp",
    SUBSCRIBE: "subscribe",
    SUBACK: "suback",
    UNSUBSCRIBE: "unsubscribe",
    UNSUBACK: "unsuback",
    PINGREQ: "pingreq",
    PINGRESP: "pingresp",
    DISCONNECT: "disconnect",
    AUTH: "auth",
}

# Protocol levels.
MQTT31 = 3
MQTT311 = 4
MQTT5 = 5


def _none_to_empty(packet: Any) -> None:
    """``None`` passed for properties (or UNSUBACK's reason codes) means "none": store empty."""
    if packet.properties is None:
        packet.properties = {}


@dataclass(slots=True)
class Will:
    """The will message carried in CONNECT."""

    topic: str
    payload: bytes
    qos: int = 0
    retain: bool = False
    properties: Properties = field(default_factory=dict)

    def __post_init__(self) -> None:
        _none_to_empty(self)


@dataclass(slots=True)
class Connect(Packet):
    """CONNECT; only the client id is positional."""

    type: ClassVar[int] = CONNECT
    client_id: str = ""
    _: KW_ONLY
    protocol_name: str = "MQTT"
    protocol_version: int = MQTT311
    clean_start: bool = True
    keepalive: int = 60
    will: Will | None = None
    username: str | None = None
    password: bytes | None = None
    properties: Properties = field(default_factory=dict)

    def __post_init__(self) -> None:
        _none_to_empty(self)


@dataclass(slots=True)
class Connack(Packet):
    """``reason_code`` is the v3 return code (0-5) or the v5 reason code."""

    type: ClassVar[int] = CONNACK
    session_present: bool = False
    reason_code: int = 0
    properties: Properties = field(default_factory=dict)

    def __post_init__(self) -> None:
        _none_to_empty(self)


@dataclass(slots=True)
class SubscriptionOptions:
    """One topic filter of a SUBSCRIBE with its options (v5 options default to v3 behaviour)."""

    topic_filter: str
    qos: int = 0
    no_local: bool = False
    retain_as_published: bool = False
    retain_handling: int = 0


@dataclass(slots=True)
class Subscribe(Packet):
    type: ClassVar[int] = SUBSCRIBE
    packet_id: int
    subscriptions: list[SubscriptionOptions]
    properties: Properties = field(default_factory=dict)

    def __post_init__(self) -> None:
        _none_to_empty(self)


@dataclass(slots=True)
class Suback(Packet):
    """``reason_codes``: granted QoS (0-2) or failure (0x80 in v3, v5 reason codes)."""

    type: ClassVar[int] = SUBACK
    packet_id: int
    reason_codes: list[int]
    properties: Properties = field(default_factory=dict)

    def __post_init__(self) -> None:
        _none_to_empty(self)


@dataclass(slots=True)
class Unsubscribe(Packet):
    type: ClassVar[int] = UNSUBSCRIBE
    packet_id: int
    topic_filters: list[str]
    properties: Properties = field(default_factory=dict)

    def __post_init__(self) -> None:
        _none_to_empty(self)


@dataclass(slots=True)
class Unsuback(Packet):
    """``reason_codes`` is empty for v3 (UNSUBACK has no payload there)."""

    type: ClassVar[int] = UNSUBACK
    packet_id: int
    reason_codes: list[int] = field(default_factory=list)
    properties: Properties = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.reason_codes is None:
            self.reason_codes = []
        _none_to_empty(self)


@dataclass(slots=True)
class Pingreq(Packet):
    type: ClassVar[int] = PINGREQ


@dataclass(slots=True)
class Pingresp(Packet):
    type: ClassVar[int] = PINGRESP


@dataclass(slots=True)
class Disconnect(Packet):
    type: ClassVar[int] = DISCONNECT
    reason_code: int = 0
    properties: Properties = field(default_factory=dict)

    def __post_init__(self) -> None:
        _none_to_empty(self)


@dataclass(slots=True)
class Auth(Packet):
    type: ClassVar[int] = AUTH
    reason_code: int = 0
    properties: Properties = field(default_factory=dict)

    def __post_init__(self) -> None:
        _none_to_empty(self)
