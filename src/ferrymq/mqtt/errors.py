"""Errors raised by the codec; each carries the MQTT 5 reason code to report."""

from __future__ import annotations

from ferrymq.mqtt import reason_codes as rc


class MQTTError(Exception):
    """A packet the peer sent breaks the specification; the connection must close."""

    reason_code: int = rc.UNSPECIFIED_ERROR
    # Packets decoded successfully before the bad one, in the same feed() call.
    packets: list = []

    def __init__(self, message: str, reason_code: int | None = None) -> None:
        super().__init__(message)
        if reason_code is not None:
            self.reason_code = reason_code


class MalformedPacket(MQTTError):
    """The bytes cannot be parsed as the packet they claim to be (0x81)."""

    reason_code = rc.MALFORMED_PACKET


class ProtocolError(MQTTError):
    """The packet parses but is not allowed here (0x82)."""

    reason_code = rc.PROTOCOL_ERROR


class PacketTooLarge(MQTTError):
    """The packet exceeds the maximum packet size this side accepts (0x95)."""

    reason_code = rc.PACKET_TOO_LARGE


class UnsupportedProtocolVersion(MQTTError):
    """CONNECT names a protocol level or name we do not speak (0x84 / v3 return code 1)."""

    reason_code = rc.UNSUPPORTED_PROTOCOL_VERSION
    protocol_version: int = 4
    protocol_name: str = ""
