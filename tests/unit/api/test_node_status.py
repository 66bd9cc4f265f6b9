"""/status through the lifecycle of an in-process API app, and the EMQX number forms of /nodes."""

from __future__ import annotations

from pathlib import Path

from aiohttp.test_utils import TestClient as HttpClient
from aiohttp.test_utils import TestServer

from ferrymq.api.app import build_app
from ferrymq.api.cluster import kmg, uptime_text
from ferrymq.api.status import LIFECYCLE
from ferrymq.config import Settings
from ferrymq.core.broker import Broker
from ferrymq.storage.sqlite import SqliteStore


async def test_status_is_503_until_running_and_while_stopping(tmp_path: Path) -> None:
    settings = Settings(data_dir=str(tmp_path), node_name="n1@host")
    store = SqliteStore(settings.db_path)
    store.open()
    try:
        app = build_app(Broker(settings, store))
        async with HttpClient(TestServer(app)) as http:
            r = await http.get("/status")
            assert r.status == 503
            assert await r.text() == "Node n1@host is starting\nferrymq is not_running"
            app[LIFECYCLE].state = "running"
            assert (await http.get("/status")).status == 200
            app[LIFECYCLE].state = "stopping"
            r = await http.get("/status")
            assert r.status == 503
            assert await r.text() == "Node n1@host is stopping\nferrymq is not_running"
    finally:
        store.close()


def test_emqx_number_forms() -> None:
    assert uptime_text(5) == "5 seconds"
    assert uptime_text(3600 + 5) == "1 hours, 0 minutes, 5 seconds"
    assert uptime_text(2 * 86400 + 61) == "2 days, 0 hours, 1 minutes, 1 seconds"
    assert kmg(512) == 512
    assert kmg(1536) == "1.50K"
    assert kmg(3 * (1 << 30) + (1 << 29)) == "3.50G"
