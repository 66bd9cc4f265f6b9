"""The in-memory cluster broker the forwarding and shared-group tests drive (no Redis:
what it would send stays in its outbox)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from ferrymq.cluster.broker import ClusterBroker, clustered_broker
from ferrymq.config import Settings


@pytest.fixture
async def broker() -> AsyncIterator[ClusterBroker]:
    settings = Settings(node_name="me", sys_interval=0, cluster_redis_url="redis://unused")
    b = clustered_broker(settings, None, asyncio.get_running_loop())
    b.node.up = True  # as if joined: forward() queues instead of counting a pause
    b.node.subacks.bound = 0.0  # no Redis writes the routes here: SUBACKs wait no longer
    yield b
    b.shutdown()
