"""The application message as the broker routes, queues, retains and stores it."""

from __future__ import annotations

import time
from typing import Any

#: The MQTT 5 PUBLISH properties a message carries on to its subscribers (the rest are
#: per hop); a will's properties are forwarded by the same list.
FORWARDED = (
    "payload_format_indicator",
    "content_type",
    "response_topic",
    "correlation_data",
    "user_property",
)


class Message:
    """One published message, shared (never copied) by every subscriber it goes to.

    ``properties`` holds the MQTT 5 properties that travel with the message
    (user_property, content_type, response_topic, correlation_data,
    payload_format_indicator); ``expiry_at`` is a ``time.monotonic()`` deadline
    derived from message_expiry_interval, or 0 for "never". ``publisher`` is
    the publishing client id ("" for messages from the API or the broker).
    ``cache`` memoises encoded PUBLISH bytes per (version, qos, retain, ...) so
    a fan-out encodes once per distinct variant.
    """

    __slots__ = (
        "topic",
        "payload",
        "qos",
        "retain",
        "properties",
        "publisher",
        "expiry_at",
        "created",
        "cache",
    )

    def __init__(
        self,
        topic: str,
        payload: bytes,
        qos: int = 0,
        retain: bool = False,
        properties: dict[str, Any] | None = None,
        publisher: str = "",
        expiry_at: Any = 0.0,  # a float; see below
        created: Any = None,  # a float, or None for now
    ) -> None:
        self.topic = topic
        self.payload = payload
        self.qos = qos
        self.retain = retain
        self.properties = properties or None
        self.publisher = publisher
        # Any, not float, here and in the signature: compiled code unboxes a float and
        # boxes it anew (a 24-byte object a message), where these keep the object they
        # are given, which is shared (the read's clock, the one "never").
        self.expiry_at = expiry_at
        if created is None:
            created = time.time()
        self.created = created
        self.cache: dict[Any, bytes] | None = None

    def expired(self, now: float) -> bool:
        """``now`` is ``time.monotonic()``."""
        return self.expiry_at != 0.0 and now >= self.expiry_at

    def remaining_expiry(self, now: float) -> int | None:
        """Seconds left of message_expiry_interval (rounded up), or None when it never expires."""
        if self.expiry_at == 0.0:
            return None
        left = self.expiry_at - now
        return max(0, int(left + 0.999))

    def __repr__(self) -> str:
        return (
            f"Message(topic={self.topic!r}, payload={self.payload[:32]!r}, qos={self.qos}, "
            f"retain={self.retain})"
        )
