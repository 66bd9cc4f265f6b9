"""ferrymq: an MQTT broker with an EMQX-4-compatible management API."""

__version__ = "0.1.0"
