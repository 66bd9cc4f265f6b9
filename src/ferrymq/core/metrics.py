"""Broker-wide counters under their EMQX names.

A plain ``dict`` of name -> int, which the API serves as it is. The counters
of every message (bytes and packets in and out, received and sent by QoS, PUBACKs,
acknowledged, dropped without subscribers, retained, the ACL's open check) are
held in native integers of the ``Broker`` and added to the dict when something
reads ``Broker.metrics`` (``Broker.add_held``): a dict increment costs about 650
instructions, and the metrics are read far less often than messages come.
"""

from __future__ import annotations

from ferrymq.mqtt.packets import PACKET_NAMES

_BASE = [
    "bytes.received",
    "bytes.sent",
    "client.connect",
    "client.connack",
    "client.connected",
    "client.disconnected",
    "client.authenticate",
    "client.auth.anonymous",
    "client.auth.success",
    "client.auth.success.anonymous",
    "client.auth.failure",
    "client.check_acl",
    "client.acl.allow",
    "client.acl.deny",
    "client.acl.cache_hit",
    "client.subscribe",
    "client.unsubscribe",
    "delivery.dropped",
    "delivery.dropped.acl",
    "delivery.dropped.too_large",
    "delivery.dropped.queue_full",
    "delivery.dropped.qos0_msg",
    "delivery.dropped.expired",
    "delivery.dropped.no_local",
    "messages.received",
    "messages.sent",
    "messages.qos0.received",
    "messages.qos1.received",
    "messages.qos2.received",
    "messages.qos0.sent",
    "messages.qos1.sent",
    "messages.qos2.sent",
    "messages.publish",
    "messages.delivered",
    "messages.acked",
    "messages.dropped",
    "messages.dropped.expired",
    "messages.dropped.await_pubrel_timeout",
    "messages.dropped.no_subscribers",
    "messages.forward",
    "messages.retained",
    "messages.delayed",
    "packets.received",
    "packets.sent",
    "session.created",
    "session.resumed",
    "session.takeovered",
    "session.discarded",
    "session.terminated",
    "rules.matched",
    "actions.success",
    "actions.failure",
]

# EMQX names the failure counters per packet type without a direction:
# packets.publish.auth_error, packets.puback.missed, packets.connack.auth_error ...
_PACKET_VARIANTS = ("error", "auth_error", "inuse", "missed", "dropped")


def metric_names() -> list[str]:
    """Every metric name the broker reports, in a stable order."""
    names = list(_BASE)
    for ptype in sorted(PACKET_NAMES):
        pname = PACKET_NAMES[ptype]
        names.append(f"packets.{pname}.received")
        names.append(f"packets.{pname}.sent")
        for variant in _PACKET_VARIANTS:
            names.append(f"packets.{pname}.{variant}")
    return names


def new_metrics() -> dict[str, int]:
    return dict.fromkeys(metric_names(), 0)


# Precomputed keys for the per-packet counters, indexed by packet type number.
RECEIVED_KEYS = {t: f"packets.{n}.received" for t, n in PACKET_NAMES.items()}
SENT_KEYS = {t: f"packets.{n}.sent" for t, n in PACKET_NAMES.items()}
