"""The change stream as a node applies it, in memory: other nodes' route and retained
changes update this node; its own entries and entries it cannot read change nothing."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import pytest

from ferrymq.cluster.broker import ClusterBroker, clustered_broker
from ferrymq.config import Settings
from ferrymq.model.message import Message
from ferrymq.storage.codec import dump_message


@pytest.fixture
async def broker() -> AsyncIterator[ClusterBroker]:
    settings = Settings(node_name="me", sys_interval=0, cluster_redis_url="redis://unused")
    b = clustered_broker(settings, None, asyncio.get_running_loop())
    yield b
    b.shutdown()


def entry(op: str, node: str, **fields: object) -> dict[bytes, bytes]:
    out = {b"op": op.encode(), b"node": node.encode()}
    for key, value in fields.items():
        data = value if isinstance(value, bytes) else json.dumps(value).encode()
        out[key.encode()] = data
    return out


def test_route_changes_of_other_nodes(broker: ClusterBroker) -> None:
    node = broker.node
    node._apply_change(entry("add", "n2", f=["a/#", "b"]))
    node._apply_change(entry("add", "me", f=["mine"]))  # this node's own: its Router's
    assert node.replica.nodes_for("a/1") == ("n2",)
    assert node.replica.nodes_for("mine") == ()
    node._apply_change(entry("del", "n2", f=["b"]))
    assert node.replica.filters_of("n2") == {"a/#"}
    node._apply_change(entry("set", "n2", f=["c"]))  # its whole set after a resync
    assert node.replica.filters_of("n2") == {"c"}
    node._apply_change(entry("add", "n3", f=["c"]))
    node._apply_change(entry("down", "n2"))
    assert node.replica.nodes_for("c") == ("n3",)
    assert "n2" in node._down
    node.peers["n3"] = (True, {})
    node._apply_change(entry("leave", "n3"))
    assert node.replica.nodes_for("c") == () and "n3" not in node.peers


def test_retained_changes_of_other_nodes(broker: ClusterBroker) -> None:
    node = broker.node
    kept = dump_message(Message("r", b"theirs", 1, True, publisher="x"))
    node._apply_change(entry("retain", "n2", m=kept))
    assert broker.retained.get("r").payload == b"theirs"  # type: ignore[union-attr]
    assert node._retained_out == {}  # not announced back
    cleared = dump_message(Message("r", b"", 0, True))
    node._apply_change(entry("retain", "n2", m=cleared))
    assert broker.retained.get("r") is None


def test_unreadable_entries_and_batches_are_skipped(broker: ClusterBroker, caplog) -> None:
    node = broker.node
    with pytest.raises(ValueError):
        node._apply_change(entry("add", "n2", f=b"not json"))
    assert node._decode(b"\x05\x00") is None  # a truncated batch: logged, nothing dispatched
    assert node._decode(b"\xff\xff\xff\xff") is None
    assert sum("cannot read" in r.message for r in caplog.records) == 1
