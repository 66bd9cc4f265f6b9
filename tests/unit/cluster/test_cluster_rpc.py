"""The requests between nodes (``cluster.rpc``) in memory: two ``Rpc`` parts joined by a
stand-in for Redis pub/sub that delivers each PUBLISH to the subscribed part."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest

from ferrymq.cluster.rpc import Rpc, RpcFailed, RpcUnanswered, rpc_channel


class Bus:
    """PUBLISH to the parts whose channel it is; the number of listeners, as Redis says."""

    def __init__(self) -> None:
        self.listening: dict[str, Rpc] = {}
        self.published: list[dict[str, Any]] = []

    async def publish(self, channel: str, data: str) -> int:
        self.published.append(json.loads(data))
        part = self.listening.get(channel)
        if part is None:
            return 0
        asyncio.get_running_loop().call_soon(part._received, data.encode())
        return 1


def _joined(bus: Bus, *names: str) -> list[Rpc]:
    parts = []
    for name in names:
        part = Rpc(name)
        part._redis = bus  # type: ignore[assignment]  # what resync sets
        bus.listening[rpc_channel(name)] = part
        parts.append(part)
    return parts


async def test_a_request_is_answered_by_the_handler_of_the_node_asked() -> None:
    bus = Bus()
    a, b = _joined(bus, "a", "b")

    async def handler(op: str, args: Any) -> Any:
        return {"op": op, "args": args, "on": "b"}

    b.handler = handler
    assert await a.call("b", "stats", {"x": 1}, timeout=2) == {
        "op": "stats",
        "args": {"x": 1},
        "on": "b",
    }
    assert not a._pending


async def test_a_handler_that_raises_is_a_failure_and_no_handler_too() -> None:
    bus = Bus()
    a, b = _joined(bus, "a", "b")
    with pytest.raises(RpcFailed):
        await a.call("b", "stats", {}, timeout=2)  # b has no handler yet

    async def broken(op: str, args: Any) -> Any:
        raise KeyError(op)

    b.handler = broken
    with pytest.raises(RpcFailed, match="KeyError on b"):
        await a.call("b", "stats", {}, timeout=2)


async def test_no_answer_in_time_or_no_listener_is_unanswered() -> None:
    bus = Bus()
    a, b = _joined(bus, "a", "b")

    async def slow(op: str, args: Any) -> Any:
        await asyncio.sleep(5)

    b.handler = slow
    began = time.monotonic()
    with pytest.raises(RpcUnanswered, match="did not answer"):
        await a.call("b", "stats", {}, timeout=0.3)
    with pytest.raises(RpcUnanswered):
        await a.call("nobody", "stats", {}, timeout=0.3)  # published again until the timeout
    assert time.monotonic() - began < 3
    assert sum(1 for m in bus.published if m.get("op") and m["id"]) >= 3
    await b.stop(None)  # the slow handler is cancelled


async def test_a_request_received_after_its_deadline_is_dropped() -> None:
    bus = Bus()
    (b,) = _joined(bus, "b")
    ran = []

    async def handler(op: str, args: Any) -> Any:
        ran.append(op)

    b.handler = handler
    late = {"id": "1", "from": "a", "op": "kick", "args": {}, "until": time.time() - 1}
    b._received(json.dumps(late).encode())
    b._received(b"not json")  # skipped, logged
    await asyncio.sleep(0.05)
    assert ran == [] and bus.published == []


async def test_losing_redis_fails_the_requests_waiting_and_the_next_ones() -> None:
    bus = Bus()
    a, b = _joined(bus, "a", "b")

    async def never(op: str, args: Any) -> Any:
        await asyncio.Event().wait()

    b.handler = never
    waiting = asyncio.create_task(a.call("b", "stats", {}, timeout=5))
    await asyncio.sleep(0.05)
    a.went_down()
    with pytest.raises(RpcUnanswered, match="unreachable"):
        await waiting
    with pytest.raises(RpcUnanswered, match="unreachable"):
        await a.call("b", "stats", {}, timeout=5)
    await b.stop(None)
