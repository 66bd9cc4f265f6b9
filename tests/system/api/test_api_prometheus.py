"""GET /emqx_prometheus: the text format parsed with prometheus_client, EMQX 4's series names."""

from __future__ import annotations

import re

from prometheus_client.parser import text_string_to_metric_families

from api_http import Api, wait_for
from clients import TestClient

# Every series the Grafana dashboards shipped with EMQX 4.4's emqx_prometheus
# (grafana_template/EMQ.json and EMQ_Dashboard.json) query.
GRAFANA_SERIES = [
    "emqx_connections_count",
    "emqx_connections_max",
    "emqx_retained_count",
    "emqx_retained_max",
    "emqx_routes_count",
    "emqx_routes_max",
    "emqx_sessions_count",
    "emqx_sessions_max",
    "emqx_suboptions_count",
    "emqx_suboptions_max",
    "emqx_subscribers_count",
    "emqx_subscribers_max",
    "emqx_subscriptions_count",
    "emqx_subscriptions_max",
    "emqx_subscriptions_shared_count",
    "emqx_subscriptions_shared_max",
    "emqx_packets_auth_received",
    "emqx_packets_auth_sent",
    "emqx_packets_connack_auth_error",
    "emqx_packets_connack_error",
    "emqx_packets_connack_sent",
    "emqx_packets_connect",
    "emqx_packets_disconnect_sent",
    "emqx_packets_puback_received",
    "emqx_packets_puback_sent",
    "emqx_packets_pubcomp_received",
    "emqx_packets_pubcomp_sent",
    "emqx_packets_publish_received",
    "emqx_packets_publish_sent",
    "emqx_packets_pubrel_received",
    "emqx_packets_pubrel_sent",
    "emqx_packets_suback_sent",
    "emqx_packets_subscribe_auth_error",
    "emqx_packets_subscribe_error",
    "emqx_packets_subscribe_received",
    "emqx_packets_unsuback_sent",
    "emqx_packets_unsubscribe_error",
    "emqx_packets_unsubscribe_received",
    "emqx_bytes_received",
    "emqx_bytes_sent",
    "emqx_delivery_dropped",
    "emqx_delivery_dropped_expired",
    "emqx_delivery_dropped_no_local",
    "emqx_delivery_dropped_qos0_msg",
    "emqx_delivery_dropped_queue_full",
    "emqx_delivery_dropped_too_large",
    "emqx_messages_delayed",
    "emqx_messages_dropped_expired",
    "emqx_messages_dropped_no_subscribers",
    "emqx_messages_dropped",
    "emqx_messages_forward",
    "emqx_messages_qos0_received",
    "emqx_messages_qos0_sent",
    "emqx_messages_qos1_received",
    "emqx_messages_qos1_sent",
    "emqx_messages_qos2_received",
    "emqx_messages_qos2_sent",
    "emqx_messages_received",
    "emqx_messages_retained",
    "emqx_messages_sent",
    "emqx_packets_pingreq_received",
    "emqx_packets_pingresp_sent",
    "emqx_client_connected",
    "emqx_client_disconnected",
]


def _scrape(api: Api, **kw) -> tuple[str, dict[str, float]]:
    r = api.get("/emqx_prometheus?type=prometheus", **kw)
    assert r.status == 200, r
    assert r.headers["Content-Type"].startswith("text/plain")
    text = r.raw.decode()
    values = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            values[sample.name] = sample.value
    return text, values


def test_text_format_has_the_grafana_series(make_broker) -> None:
    b = make_broker()
    api = Api(b.api_port, auth=None)  # no credentials needed by default
    text, before = _scrape(api)
    for name in GRAFANA_SERIES:
        # the exact series name Prometheus stores, as a sample line of its own
        assert re.search(rf"^{name} \S+$", text, re.MULTILINE), name
        assert name in before, name
    assert before["emqx_vm_total_memory"] > 0
    assert 0 <= before["emqx_vm_cpu_use"] <= 100
    assert before["emqx_cluster_nodes_running"] == 1

    sub, pub = TestClient("prom-sub"), TestClient("prom-pub")
    sub.connect(b.port)
    pub.connect(b.port)
    sub.subscribe("prom/#", 1)
    for _ in range(3):
        pub.publish("prom/x", b"hello", qos=1)
    sub.get_many(3)
    _text, after = wait_for(
        lambda: (
            (s := _scrape(api))[1]["emqx_messages_qos1_sent"]
            >= before["emqx_messages_qos1_sent"] + 3
            and s
        )
    )
    assert after["emqx_messages_received"] >= before["emqx_messages_received"] + 3
    assert after["emqx_packets_connect"] == before["emqx_packets_connect"] + 2
    assert after["emqx_client_connected"] == before["emqx_client_connected"] + 2
    assert after["emqx_connections_count"] == 2 and after["emqx_connections_max"] >= 2
    assert after["emqx_subscriptions_count"] == 1
    assert after["emqx_bytes_received"] > before["emqx_bytes_received"]
    sub.disconnect()
    pub.disconnect()


def test_json_format_groups_as_emqx(broker) -> None:
    api = Api(broker.api_port, auth=None)
    data = api.ok("GET", "/emqx_prometheus")  # EMQX's default type is json
    assert set(data) == {"stats", "metrics", "packets", "messages", "delivery", "client", "session"}
    assert data["stats"]["emqx_connections_max"] >= data["stats"]["emqx_connections_count"]
    assert "emqx_vm_used_memory" in data["metrics"]
    assert "emqx_packets_connect" in data["packets"]
    assert "emqx_messages_received" in data["messages"]
    assert "emqx_session_created" in data["session"]
    assert set(api.ok("GET", "/emqx_prometheus?type=json")) == set(data)
    r = api.get("/emqx_prometheus?type=xml")
    assert (r.status, r.code) == (400, 108)


def test_credentials_when_configured(make_broker) -> None:
    b = make_broker("--prometheus-auth")
    r = Api(b.api_port).get("/emqx_prometheus?type=prometheus", auth=False)
    assert (r.status, r.code) == (401, 103)
    _scrape(Api(b.api_port))
