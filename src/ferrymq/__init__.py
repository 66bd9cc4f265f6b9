"""ferrymq: an MQTT broker with an EMQX-4-compatible management API."""

from ferrymq import native

__version__ = "0.1.0"

# Before anything imports a hot module: compiled, or its source (FERRYMQ_PURE_PYTHON).
native.install()
