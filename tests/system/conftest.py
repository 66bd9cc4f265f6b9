"""Fixtures of the system tests: real brokers as subprocesses (brokers.py), unique names."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from brokers import BrokerProcess


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    """A broker shared by the tests that only need default settings."""
    b = BrokerProcess(tmp_path_factory.mktemp("shared-broker"), "--sys-interval", "1").start()
    yield b
    assert b.alive(), "the shared broker died during the tests:\n" + b.log()[-4000:]
    b.stop()


@pytest.fixture
def make_broker(tmp_path: Path) -> Iterator[Callable[..., BrokerProcess]]:
    """Start brokers with their own settings; all are stopped after the test."""
    started: list[BrokerProcess] = []

    def make(
        *args: str, env: dict[str, str] | None = None, data_dir: Path | None = None
    ) -> BrokerProcess:
        b = BrokerProcess(data_dir or tmp_path / f"b{len(started)}", *args, env=env).start()
        started.append(b)
        return b

    yield make
    for b in started:
        b.stop()


@pytest.fixture
def uid() -> str:
    """A unique token for client ids and topics, so tests sharing a broker do not meet."""
    return uuid.uuid4().hex[:10]
