"""The ``$SYS/brokers/{node}/...`` topics, published periodically and retained in memory."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

from ferrymq import __version__

if TYPE_CHECKING:
    from ferrymq.core.broker import Broker

# Metrics republished under $SYS/brokers/{node}/metrics/<name with / for .>.
_SYS_METRICS = (
    "bytes.received",
    "bytes.sent",
    "messages.received",
    "messages.sent",
    "messages.dropped",
    "messages.retained",
    "messages.delivered",
    "messages.acked",
    "delivery.dropped",
    "delivery.dropped.queue_full",
    "delivery.dropped.expired",
    "packets.received",
    "packets.sent",
    "client.connected",
    "client.disconnected",
)


def sys_messages(broker: Broker) -> Iterator[tuple[str, bytes]]:
    """(topic, payload) pairs describing the broker now."""
    prefix = f"$SYS/brokers/{broker.settings.node_name}"
    uptime = int(time.time() - broker.started_at)
    yield f"{prefix}/version", __version__.encode()
    yield f"{prefix}/uptime", str(uptime).encode()
    yield f"{prefix}/datetime", time.strftime("%Y-%m-%d %H:%M:%S").encode()
    stats = broker.stats()
    yield f"{prefix}/stats/connections/count", str(stats["connections.count"]).encode()
    yield f"{prefix}/stats/sessions/count", str(stats["sessions.count"]).encode()
    yield f"{prefix}/stats/subscriptions/count", str(stats["subscriptions.count"]).encode()
    yield f"{prefix}/stats/retained/count", str(stats["retained.count"]).encode()
    metrics = broker.metrics
    for name in _SYS_METRICS:
        yield f"{prefix}/metrics/{name.replace('.', '/')}", str(metrics[name]).encode()
