"""Other nodes' admin changes as a node takes them in, in memory (real SQLite store, no
Redis): into its database and its in-memory tables; a ban kicks; an edit of this node not
sent yet is never overwritten; entries it cannot read are skipped."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from ferrymq.access.authn import AuthResult
from ferrymq.cluster.admindata import BASELINE_FILE, encode
from ferrymq.cluster.adminsync import AdminSync
from ferrymq.cluster.broker import ClusterBroker, clustered_broker
from ferrymq.config import Settings
from ferrymq.storage.records import digest
from memory import Peer, open_store


@pytest.fixture
async def broker(tmp_path: Path) -> AsyncIterator[ClusterBroker]:
    store = open_store(tmp_path / "ferrymq.db", flush_interval=0.001)
    settings = Settings(
        node_name="me", sys_interval=0, cluster_redis_url="redis://unused", data_dir=str(tmp_path)
    )
    b = clustered_broker(settings, store, asyncio.get_running_loop())
    b.load_state()
    yield b
    b.shutdown()
    store.close()


def admin(broker: ClusterBroker) -> AdminSync:
    assert broker.admin is not None
    return broker.admin


def entry(n: int, kind: str, key: str, record: dict | None) -> tuple[bytes, dict[bytes, bytes]]:  # type: ignore[type-arg]
    fields = {"node": "n2", "kind": kind, "key": key, "v": encode(record)}
    return f"{n}-0".encode(), {k.encode(): v.encode() for k, v in fields.items()}


def user(name: str, password_hash: str) -> dict:  # type: ignore[type-arg]
    return {"subject": name, "password_hash": password_hash, "created_at": 1.0}


HASH = "sha256$c2FsdA$"  # a salted sha256 of no particular password


async def test_another_nodes_users_rules_and_apps_reach_store_and_memory(
    broker: ClusterBroker, tmp_path: Path
) -> None:
    sync = admin(broker)
    cleared: list[int] = []
    sync.on_taken_in.append(lambda: cleared.append(1))
    rule = {"kind": "all", "subject": "", "topic": "x/#", "action": "pub", "access": "deny"}
    rule["created_at"] = 7
    app = {"app_id": "a1", "name": "ops", "secret_hash": HASH, "desc": "", "enabled": True}
    app["created_at"] = 1.0
    await sync._apply_entries(
        [
            entry(1, "username", "alice", user("alice", HASH)),
            entry(2, "clientid", "dev1", user("dev1", HASH)),
            entry(3, "acl", json.dumps(["all", "", "x/#", "pub"]), rule),
            entry(4, "app", "a1", app),
        ]
    )
    store = broker.store
    assert store.get_auth("username", "alice")["password_hash"] == HASH  # type: ignore[union-attr,index]
    assert broker.authenticator._usernames["alice"] == HASH
    assert broker.authenticator._clientids["dev1"] == HASH
    assert not broker.acl.check_publish("c", None, "x/1") and broker.acl.check_publish(
        "c", None, "y"
    )
    assert store.get_app("a1")["name"] == "ops" and cleared == [1]  # type: ignore[union-attr,index]
    assert (tmp_path / BASELINE_FILE).exists()
    assert sync._last == "4-0"

    await sync._apply_entries(
        [
            entry(5, "username", "alice", None),
            entry(6, "acl", json.dumps(["all", "", "x/#", "pub"]), None),
        ]
    )
    assert store.get_auth("username", "alice") is None  # type: ignore[union-attr]
    assert "alice" not in broker.authenticator._usernames
    assert broker.acl.check_publish("c", None, "x/1")


async def test_a_ban_from_another_node_kicks_the_clients_it_matches(broker: ClusterBroker) -> None:
    victim, bystander = Peer(broker, "victim"), Peer(broker, "bystander")
    await victim.connack()
    await bystander.connack()
    ban = {"kind": "clientid", "who": "victim", "by": "op", "reason": "r", "at": 1}
    ban["until"] = 2**40
    await admin(broker)._apply_entries([entry(1, "ban", json.dumps(["clientid", "victim"]), ban)])
    assert victim.closed and not bystander.closed
    assert broker.banned.check("victim", None, "10.0.0.1") is not None
    again = Peer(broker, "victim")
    assert (await again.connack()).reason_code != 0
    await admin(broker)._apply_entries([entry(2, "ban", json.dumps(["clientid", "victim"]), None)])
    assert broker.banned.check("victim", None, "10.0.0.1") is None


async def test_an_edit_of_this_node_not_sent_yet_is_kept(broker: ClusterBroker) -> None:
    sync = admin(broker)
    store = broker.store
    await sync._apply_entries([entry(1, "username", "alice", user("alice", "sha256$old$"))])
    await store.call(store.update_auth, "username", "alice", "sha256$mine$")  # type: ignore[union-attr]
    await asyncio.sleep(0.05)  # the store's listener wakes the sender
    assert sync._dirty.is_set()
    sync._dirty.clear()
    # Another node's change to the same user, written to Redis before this edit got there.
    await sync._apply_entries([entry(2, "username", "alice", user("alice", "sha256$theirs$"))])
    assert store.get_auth("username", "alice")["password_hash"] == "sha256$mine$"  # type: ignore[union-attr,index]
    assert sync._dirty.is_set()  # sent next: it wins
    (edit,) = sync.baseline.local_edits(await store.call(store.admin_records))  # type: ignore[union-attr]
    assert edit[2]["password_hash"] == "sha256$mine$"  # type: ignore[index]
    assert sync.baseline.get("username", "alice") == digest(user("alice", "sha256$theirs$"))


async def test_entries_it_cannot_read_are_skipped(broker: ClusterBroker, caplog) -> None:  # type: ignore[no-untyped-def]
    sync = admin(broker)
    bad = [
        (b"1-0", {b"node": b"n2", b"kind": b"widget", b"key": b"k", b"v": b"{}"}),
        (b"2-0", {b"node": b"n2", b"kind": b"username", b"key": b"a", b"v": b"{not json"}),
        (b"3-0", {b"node": b"n2", b"kind": b"username", b"key": b"a", b"v": b'{"subject": "b"}'}),
        entry(4, "username", "ok", user("ok", HASH)),
    ]
    await sync._apply_entries(bad)
    assert broker.authenticator.authenticate("c", "a", b"x") == AuthResult.SUCCESS  # anonymous
    assert broker.authenticator._usernames == {"ok": HASH}
    assert caplog.text.count("cannot read") == 1
