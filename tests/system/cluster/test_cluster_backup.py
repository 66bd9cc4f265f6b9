"""The backup API on a cluster: an export from any node holds the admin data made on every
node, and an import on one node is in force on all. Real redis-server, real nodes, HTTP."""

from __future__ import annotations

import json

import pytest

from api_http import Api
from clients import connack_code
from redis_server import wait_until

pytestmark = pytest.mark.timeout(90)

SPREAD = 5.0


def test_an_export_from_any_node_holds_the_clusters_data_and_an_import_spreads(
    make_cluster, uid
) -> None:
    _redis, (n1, n2, n3) = make_cluster(3, "--no-allow-anonymous")
    a1, a2, a3 = Api(n1.api_port), Api(n2.api_port), Api(n3.api_port)
    user, app = f"{uid}-user", f"{uid}-app"
    a1.ok("POST", "/auth_username", {"username": user, "password": "pw"})
    a2.ok("POST", "/apps", {"name": "ops", "app_id": app, "secret": "s3cret"})
    a2.ok("POST", "/banned", {"who": f"{uid}-bad", "as": "clientid", "reason": "test"})

    def exported() -> dict:
        name = a3.ok("POST", "/data/export")["filename"]
        return json.loads(a3.ok("GET", f"/data/file/{name}")["file"])

    def holds_all(doc: dict) -> bool:
        return (
            user in [r["login"] for r in doc["auth_mnesia"]]
            and app in [a["id"] for a in doc["apps"]]
            and f"{uid}-bad" in [b["who"].get("clientid") for b in doc["blacklist"]]
        )

    assert wait_until(lambda: holds_all(exported()), SPREAD)  # made on nodes 1 and 2
    doc = exported()

    # Gone from the cluster, then imported on node 2: in force on nodes 1 and 3 again.
    a1.ok("DELETE", f"/auth_username/{user}")
    assert wait_until(lambda: connack_code(n3.port, f"{uid}-c", user, "pw") != 0, SPREAD)
    report = a2.ok("POST", "/data/import", doc)
    assert report["auth_mnesia"] >= 1 and report["apps"] >= 1
    assert wait_until(lambda: connack_code(n1.port, f"{uid}-c", user, "pw") == 0, SPREAD)
    assert wait_until(lambda: connack_code(n3.port, f"{uid}-c", user, "pw") == 0, SPREAD)
