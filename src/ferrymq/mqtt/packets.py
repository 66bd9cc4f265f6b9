"""MQTT control packets as small slotted classes, shared by every protocol version.

One class per packet type; fields that exist only in MQTT 5 (reason codes,
properties) are present on all versions and ignored when encoding for 3.1/3.1.1.
Properties are a plain ``dict`` keyed by the property's snake_case name (see
``properties.py``); ``user_property`` holds a list of ``(key, value)`` pairs and
``subscription_identifier`` on PUBLISH holds a list of ints. An empty or ``None``
properties value means "no properties".
"""

from __future__ import annotations

from typing import Any

Properties = dict[str, Any]

# Control packet type numbers (first nibble of the fixed header).
CONNECT = 1
CONNACK = 2
PUBLISH = 3
PUBACK = 4
PUBREC = 5
PUBREL = 6
PUBCOMP = 7
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


class Packet:
    """Base class; ``type`` is the control packet type number."""

    __slots__ = ()
    type: int = 0

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in self.__slots__)
        return f"{type(self).__name__}({fields})"

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return all(getattr(self, n) == getattr(other, n) for n in self.__slots__)

    __hash__ = None  # type: ignore[assignment]


class Will:
    """The will message carried in CONNECT."""

    __slots__ = ("topic", "payload", "qos", "retain", "properties")

    def __init__(
        self,
        topic: str,
        payload: bytes,
        qos: int = 0,
        retain: bool = False,
        properties: Properties | None = None,
    ) -> None:
        self.topic = topic
        self.payload = payload
        self.qos = qos
        self.retain = retain
        self.properties = properties or {}

    __repr__ = Packet.__repr__
    __eq__ = Packet.__eq__  # type: ignore[assignment]
    __hash__ = None  # type: ignore[assignment]


class Connect(Packet):
    __slots__ = (
        "protocol_name",
        "protocol_version",
        "clean_start",
        "keepalive",
        "client_id",
        "will",
        "username",
        "password",
        "properties",
    )
    type = CONNECT

    def __init__(
        self,
        client_id: str = "",
        *,
        protocol_name: str = "MQTT",
        protocol_version: int = MQTT311,
        clean_start: bool = True,
        keepalive: int = 60,
        will: Will | None = None,
        username: str | None = None,
        password: bytes | None = None,
        properties: Properties | None = None,
    ) -> None:
        self.protocol_name = protocol_name
        self.protocol_version = protocol_version
        self.clean_start = clean_start
        self.keepalive = keepalive
        self.client_id = client_id
        self.will = will
        self.username = username
        self.password = password
        self.properties = properties or {}


class Connack(Packet):
    """``reason_code`` is the v3 return code (0-5) or the v5 reason code."""

    __slots__ = ("session_present", "reason_code", "properties")
    type = CONNACK

    def __init__(
        self,
        session_present: bool = False,
        reason_code: int = 0,
        properties: Properties | None = None,
    ) -> None:
        self.session_present = session_present
        self.reason_code = reason_code
        self.properties = properties or {}


class Publish(Packet):
    """PUBLISH; ``packet_id`` is 0 for QoS 0. ``topic`` may be "" when a v5 topic alias is used."""

    __slots__ = ("topic", "payload", "qos", "retain", "dup", "packet_id", "properties")
    type = PUBLISH

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
        self.properties = properties or {}


class _Ack(Packet):
    """PUBACK / PUBREC / PUBREL / PUBCOMP: packet id, v5 reason code and properties."""

    __slots__ = ("packet_id", "reason_code", "properties")

    def __init__(
        self, packet_id: int, reason_code: int = 0, properties: Properties | None = None
    ) -> None:
        self.packet_id = packet_id
        self.reason_code = reason_code
        self.properties = properties or {}


class Puback(_Ack):
    __slots__ = ()
    type = PUBACK


class Pubrec(_Ack):
    __slots__ = ()
    type = PUBREC


class Pubrel(_Ack):
    __slots__ = ()
    type = PUBREL


class Pubcomp(_Ack):
    __slots__ = ()
    type = PUBCOMP


class SubscriptionOptions:
    """One topic filter of a SUBSCRIBE with its options (v5 options default to v3 behaviour)."""

    __slots__ = ("topic_filter", "qos", "no_local", "retain_as_published", "retain_handling")

    def __init__(
        self,
        topic_filter: str,
        qos: int = 0,
        no_local: bool = False,
        retain_as_published: bool = False,
        retain_handling: int = 0,
    ) -> None:
        self.topic_filter = topic_filter
        self.qos = qos
        self.no_local = no_local
        self.retain_as_published = retain_as_published
        self.retain_handling = retain_handling

    __repr__ = Packet.__repr__
    __eq__ = Packet.__eq__  # type: ignore[assignment]
    __hash__ = None  # type: ignore[assignment]


class Subscribe(Packet):
    __slots__ = ("packet_id", "subscriptions", "properties")
    type = SUBSCRIBE

    def __init__(
        self,
        packet_id: int,
        subscriptions: list[SubscriptionOptions],
        properties: Properties | None = None,
    ) -> None:
        self.packet_id = packet_id
        self.subscriptions = subscriptions
        self.properties = properties or {}


class Suback(Packet):
    """``reason_codes``: granted QoS (0-2) or failure (0x80 in v3, v5 reason codes)."""

    __slots__ = ("packet_id", "reason_codes", "properties")
    type = SUBACK

    def __init__(
        self, packet_id: int, reason_codes: list[int], properties: Properties | None = None
    ) -> None:
        self.packet_id = packet_id
        self.reason_codes = reason_codes
        self.properties = properties or {}


class Unsubscribe(Packet):
    __slots__ = ("packet_id", "topic_filters", "properties")
    type = UNSUBSCRIBE

    def __init__(
        self, packet_id: int, topic_filters: list[str], properties: Properties | None = None
    ) -> None:
        self.packet_id = packet_id
        self.topic_filters = topic_filters
        self.properties = properties or {}


class Unsuback(Packet):
    """``reason_codes`` is empty for v3 (UNSUBACK has no payload there)."""

    __slots__ = ("packet_id", "reason_codes", "properties")
    type = UNSUBACK

    def __init__(
        self,
        packet_id: int,
        reason_codes: list[int] | None = None,
        properties: Properties | None = None,
    ) -> None:
        self.packet_id = packet_id
        self.reason_codes = reason_codes or []
        self.properties = properties or {}


class Pingreq(Packet):
    __slots__ = ()
    type = PINGREQ


class Pingresp(Packet):
    __slots__ = ()
    type = PINGRESP


class Disconnect(Packet):
    __slots__ = ("reason_code", "properties")
    type = DISCONNECT

    def __init__(self, reason_code: int = 0, properties: Properties | None = None) -> None:
        self.reason_code = reason_code
        self.properties = properties or {}


class Auth(Packet):
    __slots__ = ("reason_code", "properties")
    type = AUTH

    def __init__(self, reason_code: int = 0, properties: Properties | None = None) -> None:
        self.reason_code = reason_code
        self.properties = properties or {}
