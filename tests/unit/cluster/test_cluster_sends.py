"""The sender's sends written ahead of their replies, against a connection in memory that
answers when the test says so: what leaves when, and which PUBACKs each reply releases."""

from __future__ import annotations

import asyncio
import math
from typing import Any

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from ferrymq.cluster.broker import ClusterBroker
from ferrymq.cluster.codec import split
from ferrymq.cluster.node import SENDS_AHEAD
from ferrymq.mqtt.packets import Puback, Publish
from memory import Peer, settle, until


class Conn:
    """A held Redis connection: keeps what is written, answers each command on demand."""

    is_connected = True

    def __init__(self) -> None:
        self.written: list[tuple[Any, ...]] = []
        self.replies: asyncio.Queue[Any] = asyncio.Queue()

    def pack_commands(self, commands: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
        return commands

    async def _send_packed_command(self, commands: list[tuple[Any, ...]]) -> None:
        self.written += commands

    async def read_response(self) -> Any:
        reply = await self.replies.get()
        if isinstance(reply, Exception):
            raise reply
        return reply


class Pool:
    def __init__(self, conn: Conn) -> None:
        self.conn = conn

    async def get_connection(self) -> Conn:
        return self.conn

    async def release(self, conn: Conn) -> None:
        pass


class Redis:
    def __init__(self, conn: Conn) -> None:
        self.connection_pool = Pool(conn)


def payloads(command: tuple[Any, ...]) -> list[bytes]:
    return [m.payload for m in split(command[-1])]


def pubacks(peer: Peer) -> list[int]:
    return [p.packet_id for p in peer.received() if isinstance(p, Puback)]


async def publish(pub: Peer, payloads: list[bytes]) -> None:
    """QoS 1 PUBLISHes with packet ids from 1, each in a turn of its own (a send each)."""
    for i, payload in enumerate(payloads, 1):
        pub.send(Publish("t/1", payload, 1, packet_id=i))
        await settle()


@pytest.fixture
async def pub(broker: ClusterBroker) -> Peer:
    peer = Peer(broker, "pub")
    await peer.connack()
    return peer


@pytest.fixture
async def sending(broker: ClusterBroker) -> Any:
    conn = Conn()
    broker.node.replica.add("n2", "t/#")
    # n2's stream length is never due with a send (cluster/pressure.py): these tests are
    # about the order of sends and replies, test_cluster_pressure.py about the lengths.
    broker.node.destinations._checked["n2"] = math.inf
    task = asyncio.create_task(broker.node._send(Redis(conn)))  # type: ignore[arg-type]
    yield conn, task
    task.cancel()
    await asyncio.wait({task})


async def test_a_message_leaves_while_the_send_before_it_awaits_its_reply(
    broker: ClusterBroker, pub: Peer, sending: tuple[Conn, asyncio.Task[None]]
) -> None:
    conn, _ = sending
    await publish(pub, [b"one", b"two"])
    assert [payloads(c) for c in conn.written] == [[b"one"], [b"two"]]  # no reply yet
    assert pubacks(pub) == []  # each waits until its message is in Redis
    conn.replies.put_nowait(b"1-0")
    await settle()
    assert pubacks(pub) == [1]
    conn.replies.put_nowait(b"1-1")
    await settle()
    assert pubacks(pub) == [2]
    assert broker.metrics["cluster.forwarded"] == 2


async def test_past_the_sends_ahead_what_is_queued_joins_one_send(
    pub: Peer, sending: tuple[Conn, asyncio.Task[None]]
) -> None:
    conn, _ = sending
    await publish(pub, [b"%d" % i for i in range(SENDS_AHEAD + 3)])
    assert len(conn.written) == SENDS_AHEAD
    conn.replies.put_nowait(b"1-0")
    await settle()
    assert len(conn.written) == SENDS_AHEAD + 1
    assert payloads(conn.written[-1]) == [b"%d" % i for i in range(SENDS_AHEAD, SENDS_AHEAD + 3)]
    for _ in range(SENDS_AHEAD):
        conn.replies.put_nowait(b"1-1")
    await settle()
    assert pubacks(pub) == list(range(1, SENDS_AHEAD + 4))


async def test_a_lost_connection_counts_what_it_had_not_answered(
    broker: ClusterBroker, pub: Peer, sending: tuple[Conn, asyncio.Task[None]]
) -> None:
    conn, task = sending
    await publish(pub, [b"0", b"1"])
    conn.replies.put_nowait(RedisConnectionError("gone"))
    await asyncio.wait({task}, timeout=2)
    with pytest.raises(RedisConnectionError):
        task.result()
    assert broker.metrics["cluster.forward.paused"] == 2
    assert broker.metrics["cluster.forwarded"] == 0


async def test_a_node_that_says_it_is_behind_pauses_the_qos0_publishers_feeding_it(
    broker: ClusterBroker, sending: tuple[Conn, asyncio.Task[None]]
) -> None:
    """The flag is read with the QoS 0 send to n2; while it is set, the publisher whose
    messages go there is not read, a local-only publisher is; once n2's flag is gone
    (read again on its own every ``CHECK_EVERY``) the publisher is read again, and
    every message it published went to n2."""
    conn, _ = sending
    feeder, local = Peer(broker, "feeder"), Peer(broker, "local")
    await feeder.connack()
    await local.connack()
    feeder.send(Publish("t/1", b"0", 0))
    await settle()
    assert conn.written[-1] == ("EXISTS", "ferrymq:behind0:n2")
    assert [c[0] for c in conn.written] == ["PUBLISH", "EXISTS"]
    conn.replies.put_nowait(1)  # PUBLISH: one subscriber had it
    conn.replies.put_nowait(1)  # EXISTS: n2 is behind
    await settle()
    assert set(broker.node.destinations.behind) == {"n2"}
    assert feeder.transport.reading  # its message went before n2 said so
    feeder.send(Publish("t/1", b"1", 0))
    local.send(Publish("here/1", b"x", 0))
    await settle()
    assert not feeder.transport.reading  # paused: its message went to n2
    assert local.transport.reading  # nothing of it goes to n2
    conn.replies.put_nowait(1)  # the PUBLISH of b"1" (its flag is not due yet)
    await until(
        lambda: conn.written[-1] == ("EXISTS", "ferrymq:behind0:n2") and len(conn.written) == 4
    )
    assert not feeder.transport.reading
    conn.replies.put_nowait(0)  # n2 caught up
    await until(lambda: feeder.transport.reading)
    assert not broker.node.destinations.behind
    sent = [p for c in conn.written if c[0] == "PUBLISH" for p in payloads(c)]
    assert sent == [b"0", b"1"]
