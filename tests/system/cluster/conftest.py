"""Fixtures of the cluster tests: a real redis-server and ferrymq nodes joined through it.

``cluster3`` is one three-node cluster shared by the tests of a module that
leave it as they found it (each uses its own topics); tests that kill a node
or Redis start their own with ``make_cluster``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from brokers import BrokerProcess
from clients import TestClient
from redis_server import RedisServer, start_nodes

Cluster = tuple[RedisServer, list[BrokerProcess]]


def _need_redis() -> None:
    if not RedisServer.available():
        if os.environ.get("CI"):
            pytest.fail("redis-server is not installed (.ci/run installs it)")
        pytest.skip("redis-server is not installed (apt-get install redis-server)")


@pytest.fixture(autouse=True)
def _redis_installed() -> None:
    """Every test here needs redis-server (the cluster fixtures check it too, earlier)."""
    _need_redis()


def _stop(redis: RedisServer, nodes: list[BrokerProcess]) -> None:
    for node in nodes:
        node.stop()
    redis.stop()


@pytest.fixture(scope="module")
def cluster3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    _need_redis()
    root = tmp_path_factory.mktemp("cluster")
    redis = RedisServer(root / "redis").start()
    nodes = start_nodes(redis, root, 3)
    yield redis, nodes
    dead = [n for n in nodes if not n.alive()]
    _stop(redis, nodes)
    assert not dead, "a node died during the tests:\n" + dead[0].log()[-4000:]


@pytest.fixture
def make_cluster(tmp_path: Path) -> Iterator[Callable[..., Cluster]]:
    """Start a cluster of its own: ``make_cluster(count, *flags)``; stopped after the test."""
    _need_redis()
    started: list[Cluster] = []

    def make(count: int = 3, *args: str) -> Cluster:
        redis = RedisServer(tmp_path / f"redis{len(started)}").start()
        try:
            nodes = start_nodes(redis, tmp_path / f"c{len(started)}", count, *args)
        except BaseException:  # a node that does not start: Redis is not left behind
            redis.stop()
            raise
        started.append((redis, nodes))
        return redis, nodes

    yield make
    for redis, nodes in started:
        _stop(redis, nodes)


@pytest.fixture
def clients() -> Iterator[list[TestClient]]:
    """The test's MQTT clients (``redis_server.connect`` adds to it), dropped after it."""
    made: list[TestClient] = []
    yield made
    for c in made:
        c.drop()
