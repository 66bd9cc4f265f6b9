"""``GET /emqx_prometheus``: the node's metrics and stats under EMQX 4's Prometheus names.

``type=prometheus`` is the text exposition format, written by
``prometheus_client`` from a collector that reads the broker's counters and
stats at scrape time (nothing is mirrored on the message path);
``type=json`` (EMQX's default) the same figures grouped as
``emqx_prometheus`` does: ``stats``, ``metrics`` (the machine), ``packets``,
``messages``, ``delivery``, ``client``, ``session``.

Series names are EMQX's (``emqx_connections_count``, ``emqx_messages_received``
...), so Grafana dashboards made for EMQX 4 find them. EMQX exports its
counters without the ``_total`` suffix that ``prometheus_client`` gives a
counter family, so they are exposed untyped with exactly those names. Every
other ferrymq counter follows as ``emqx_<name with _ for .>``.
Each node exports only itself, as in EMQX: scrape every node.
``prometheus_client`` is imported at the first text-format scrape: a broker
nobody scrapes that way does not hold it (about 1 MB).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from aiohttp import web

from ferrymq.api.cluster import LocalNode, cluster
from ferrymq.api.params import query_choice
from ferrymq.api.routes import Param, Route, ok
from ferrymq.core import system
from ferrymq.core.stats import NAMES as STAT_NAMES

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric
    from prometheus_client.registry import CollectorRegistry

    from ferrymq.core.broker import Broker

_PACKETS = (
    "bytes.received",
    "bytes.sent",
    "packets.received",
    "packets.sent",
    "packets.connect.received",
    "packets.connack.sent",
    "packets.connack.error",
    "packets.connack.auth_error",
    "packets.publish.received",
    "packets.publish.sent",
    "packets.publish.inuse",
    "packets.publish.error",
    "packets.publish.auth_error",
    "packets.publish.dropped",
    "packets.puback.received",
    "packets.puback.sent",
    "packets.puback.inuse",
    "packets.puback.missed",
    "packets.pubrec.received",
    "packets.pubrec.sent",
    "packets.pubrec.inuse",
    "packets.pubrec.missed",
    "packets.pubrel.received",
    "packets.pubrel.sent",
    "packets.pubrel.missed",
    "packets.pubcomp.received",
    "packets.pubcomp.sent",
    "packets.pubcomp.inuse",
    "packets.pubcomp.missed",
    "packets.subscribe.received",
    "packets.subscribe.error",
    "packets.subscribe.auth_error",
    "packets.suback.sent",
    "packets.unsubscribe.received",
    "packets.unsubscribe.error",
    "packets.unsuback.sent",
    "packets.pingreq.received",
    "packets.pingresp.sent",
    "packets.disconnect.received",
    "packets.disconnect.sent",
    "packets.auth.received",
    "packets.auth.sent",
)
_MESSAGES = tuple(
    "messages." + n
    for n in (
        "received",
        "sent",
        "qos0.received",
        "qos0.sent",
        "qos1.received",
        "qos1.sent",
        "qos2.received",
        "qos2.sent",
        "publish",
        "dropped",
        "dropped.expired",
        "dropped.no_subscribers",
        "forward",
        "retained",
        "delayed",
        "delivered",
        "acked",
    )
)
_DELIVERY = tuple(
    "delivery.dropped" + n
    for n in ("", ".no_local", ".too_large", ".qos0_msg", ".queue_full", ".expired")
)
_CLIENT = tuple(
    "client." + n
    for n in (
        "connected",
        "authenticate",
        "auth.success.anonymous",
        "check_acl",
        "subscribe",
        "unsubscribe",
        "disconnected",
    )
)
_SESSION = tuple(
    "session." + n for n in ("created", "resumed", "takeovered", "discarded", "terminated")
)
_GROUPS = (
    ("packets", _PACKETS),
    ("messages", _MESSAGES),
    ("delivery", _DELIVERY),
    ("client", _CLIENT),
    ("session", _SESSION),
)
_EMQX_METRICS = frozenset(k for _group, keys in _GROUPS for k in keys)


def series_name(metric: str) -> str:
    """EMQX's series name of a metric (``packets.connect.received``: ``emqx_packets_connect``)."""
    if metric == "packets.connect.received":
        return "emqx_packets_connect"
    return "emqx_" + metric.replace(".", "_")


def _stats(node: LocalNode) -> dict[str, int]:
    stats = node.broker.stats()
    return {
        series_name(f"{name}.{kind}"): stats[f"{name}.{kind}"]
        for name in STAT_NAMES
        for kind in ("count", "max")
    }


class BrokerCollector:
    """A ``prometheus_client`` collector reading one node at scrape time."""

    def __init__(self, node: LocalNode, cpu: system.CpuMeter, cluster_size: int = 1) -> None:
        self.node = node
        self.cpu = cpu
        self.cluster_size = cluster_size

    def vm(self) -> dict[str, float]:
        busy = self.cpu.busy()
        mem = system.memory()
        return {
            "emqx_vm_cpu_use": busy,
            "emqx_vm_cpu_idle": round(100.0 - busy, 2),
            "emqx_vm_run_queue": system.running_tasks(),
            "emqx_vm_process_messages_in_queues": 0,  # EMQX 4.4 reports 0 too
            "emqx_vm_total_memory": mem.total,
            "emqx_vm_used_memory": mem.used,
        }

    def collect(self) -> Iterator[Metric]:
        from prometheus_client.metrics_core import GaugeMetricFamily, Metric

        broker: Broker = self.node.broker
        gauges = {
            **_stats(self.node),
            **self.vm(),
            "emqx_cluster_nodes_running": self.cluster_size,
            "emqx_cluster_nodes_stopped": 0,
        }
        for name, value in gauges.items():
            yield GaugeMetricFamily(name, "", value=value)
        metrics = broker.metrics
        keys = [k for _group, ks in _GROUPS for k in ks]
        keys += [k for k in metrics if k not in _EMQX_METRICS]
        for key in keys:
            name = series_name(key)
            family = Metric(name, f"ferrymq counter {key}", "unknown")
            family.add_sample(name, {}, metrics.get(key, 0))
            yield family

    def as_json(self) -> dict[str, dict[str, Any]]:
        metrics = self.node.broker.metrics
        data: dict[str, dict[str, Any]] = {"stats": _stats(self.node), "metrics": self.vm()}
        for group, keys in _GROUPS:
            data[group] = {series_name(k): metrics.get(k, 0) for k in keys}
        return data


class Exporter:
    """The collector of the local node and its registry; one per API server."""

    def __init__(self, node: LocalNode) -> None:
        self.collector = BrokerCollector(node, system.CpuMeter())
        self._registry: CollectorRegistry | None = None

    def text(self) -> tuple[bytes, str]:
        """The text exposition format: the body and its content type."""
        from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
        from prometheus_client.registry import CollectorRegistry

        if self._registry is None:
            self._registry = CollectorRegistry(auto_describe=False)
            self._registry.register(self.collector)  # type: ignore[arg-type]
        return generate_latest(self._registry), CONTENT_TYPE_LATEST


EXPORTER = web.AppKey("ferrymq_prometheus", Exporter)


async def prometheus_stats(request: web.Request) -> web.Response:
    kind = query_choice(request, "type", ("prometheus", "json")) or "json"
    exporter = request.app[EXPORTER]
    members = cluster(request).members()
    exporter.collector.cluster_size = sum(1 for m in members if m.status == "Running")
    if kind == "json":
        return ok(exporter.collector.as_json())
    body, content_type = exporter.text()
    return web.Response(body=body, headers={"Content-Type": content_type})


def with_auth(route: Route) -> Route:
    """``route``, needing credentials if it is this endpoint (``prometheus_auth``)."""
    return dataclasses.replace(route, public=False) if route.handler is prometheus_stats else route


ROUTES = [
    Route(
        "prometheus_stats",
        "GET",
        "/emqx_prometheus",
        prometheus_stats,
        "This node's metrics and stats with EMQX's Prometheus names: type=prometheus for the "
        "text format, type=json (default) grouped as EMQX does; no credentials unless "
        "prometheus_auth is set",
        query=(Param("type", "string", "output format", ("prometheus", "json")),),
        data={"type": "object", "additionalProperties": {"type": "object"}},
        public=True,
    ),
]
