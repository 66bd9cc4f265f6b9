"""The ``$SYS/brokers/{node}/...`` topics, published periodically and retained in memory.

Rules kept here:
- the broker describing itself is not traffic: a ``$SYS`` publication leaves
  the inbound message counters as they were, so an idle broker reports no
  messages received or dropped;
- ``$SYS`` messages are QoS 0 and retained in memory only (never stored);
- they are published every ``sys_interval`` seconds, first at start-up.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

from ferrymq import __version__
from ferrymq.model.message import Message

if TYPE_CHECKING:
    from ferrymq.core.broker import Broker

# Counters that $SYS publications must not move.
_SYS_UNCOUNTED = (
    "messages.received",
    "messages.qos0.received",
    "messages.publish",
    "messages.retained",
    "messages.dropped",
    "messages.dropped.no_subscribers",
)
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


def uncounted(metrics: dict[str, int]) -> list[tuple[str, int]]:
    """The counters a ``$SYS`` publication must leave as they are, to restore after it."""
    return [(key, metrics[key]) for key in _SYS_UNCOUNTED]


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


class SysPublisher:
    """Publishes the broker's own messages: the periodic ``$SYS`` topics, and others'
    (alarms) through :meth:`publish`."""

    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self._last = 0.0

    def tick(self, now: float) -> None:
        """Publish the ``$SYS`` topics if ``sys_interval`` has passed since the last time."""
        interval = self.broker.settings.sys_interval
        # Ticks come once a second from a loop timer whose clock can run a hair behind
        # ``time.monotonic``; half a tick of slack keeps one from skipping a whole interval.
        if interval > 0 and now - self._last >= interval - 0.5:
            self.publish_topics()

    def publish_topics(self) -> None:
        self._last = time.monotonic()
        self.publish(list(sys_messages(self.broker)), retain=True)

    def publish(self, messages: Iterable[tuple[str, bytes]], retain: bool) -> None:
        """Publish QoS 0 messages (``$SYS/...``) without counting them as traffic."""
        broker = self.broker
        saved = uncounted(broker.metrics)
        for topic, payload in messages:
            broker.publish(Message(topic, payload, 0, retain))
        broker.metrics.update(saved)  # read again: what the publications held, added
