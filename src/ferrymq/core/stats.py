"""EMQX's stats: current counts of connections, sessions, routes ... and their high-water marks.

Every figure is a length the broker already keeps (no walk over sessions or
the trie), so sampling costs a few attribute reads. The broker samples once a
second and every reader samples again, so ``.max`` holds the peak since start
as seen at one-second resolution or by any reader, as EMQX's stats timer does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ferrymq.core.broker import Broker

NAMES = (
    "connections",
    "live_connections",
    "channels",
    "sessions",
    "topics",
    "subscribers",
    "subscriptions",
    "subscriptions.shared",
    "suboptions",
    "routes",
    "retained",
)


class Stats:
    """The counts of one broker with their maxima."""

    def __init__(self, broker: Broker) -> None:
        self._broker = broker
        self._max = dict.fromkeys(NAMES, 0)

    def counts(self) -> dict[str, int]:
        broker = self._broker
        router = broker.router
        subscriptions = len(router)
        # A session is EMQX's channel: connected, or offline and kept for its client.
        sessions = len(broker.sessions)
        return {
            "connections": sessions,
            "live_connections": len(broker.clients),
            "channels": sessions,
            "sessions": sessions,
            "topics": router.routes,
            "subscribers": subscriptions,
            "subscriptions": subscriptions,
            "subscriptions.shared": router.shared,
            "suboptions": subscriptions,
            "routes": router.routes,
            "retained": len(broker.retained),
        }

    def sample(self) -> dict[str, int]:
        """``{name.count, name.max}`` for every name, raising the maxima to the counts."""
        peaks = self._max
        out: dict[str, int] = {}
        for name, value in self.counts().items():
            if value > peaks[name]:
                peaks[name] = value
            out[name + ".count"] = value
            out[name + ".max"] = peaks[name]
        return out
