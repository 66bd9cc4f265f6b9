"""The QoS 0 inbox reader on raw bytes as Redis sends them: RESP2 arrays and RESP3
pushes, replies split across reads, the subscription's confirmation skipped."""

from __future__ import annotations

import asyncio
import time

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from ferrymq.cluster.codec import frame
from ferrymq.cluster.inbox0 import read_inbox0
from ferrymq.cluster.pressure import BACKLOG0_BYTES, SLICE, Backlog0
from ferrymq.model.message import Message
from memory import until


def bulk(data: bytes) -> bytes:
    return b"$%d\r\n%s\r\n" % (len(data), data)


def reply(kind: bytes, *items: bytes) -> bytes:
    return kind + b"%d\r\n" % len(items) + b"".join(bulk(i) for i in items)


def confirmation(kind: bytes, channel: bytes) -> bytes:
    return kind + b"3\r\n" + bulk(b"subscribe") + bulk(channel) + b":1\r\n"


def whole(batch: bytes) -> tuple[list[bytes], None]:
    """Each batch as one "message": what these tests follow is the reader's bytes."""
    return [batch], None


async def read_all(chunks: list[bytes]) -> tuple[list[bytes], BaseException]:
    """What the reader dispatched from ``chunks`` fed one by one, then the error that
    ended it (the connection closes after the last chunk, once the reader is idle)."""
    stream = asyncio.StreamReader()
    got: list[bytes] = []

    def dispatch(messages: list[bytes], served: object, start: int, until: float) -> int:
        got.extend(messages[start:])
        return len(messages)

    task = asyncio.create_task(read_inbox0(stream, whole, dispatch, lambda n: None))
    for chunk in chunks:
        stream.feed_data(chunk)
        for _ in range(3):  # the reader's turn, then its dispatcher's
            await asyncio.sleep(0)
    stream.feed_eof()
    with pytest.raises((RedisConnectionError, ResponseError)) as failure:
        await asyncio.wait_for(task, 5)
    return got, failure.value


@pytest.mark.parametrize("kind", [b"*", b">"], ids=["RESP2", "RESP3"])
async def test_every_batch_is_dispatched_in_order_however_the_bytes_arrive(kind: bytes) -> None:
    channel = b"ferrymq:inbox0:n2"
    batches = [b"first", b"", b"\r\n$3\r\nnot a reply", bytes(range(256)) * 40]
    data = confirmation(kind, channel) + b"".join(
        reply(kind, b"message", channel, b) for b in batches
    )
    for size in (1, 7, 64, len(data)):
        chunks = [data[i : i + size] for i in range(0, len(data), size)]
        got, ended = await read_all(chunks)
        assert got == batches, size
        assert isinstance(ended, RedisConnectionError)  # the closed connection


async def test_an_error_reply_ends_the_reader() -> None:
    """The batch read with the error is not dispatched: the reconnection drops it (QoS 0)
    and counts it, as it counts everything the backlog held."""
    one = reply(b"*", b"message", b"c", b"one")
    got, ended = await read_all([one, one + b"-ERR broken\r\n"])
    assert got == [b"one"]
    assert isinstance(ended, ResponseError) and "broken" in str(ended)


async def test_bytes_that_are_no_reply_end_the_connection() -> None:
    got, ended = await read_all([b"?what\r\n"])
    assert got == []
    assert isinstance(ended, RedisConnectionError) and "unreadable" in str(ended)


async def test_batches_not_yet_dispatched_wait_in_order_and_a_slice_at_a_time() -> None:
    """A dispatch that takes its whole slice per message leaves the loop between
    messages, and the reader keeps reading meanwhile: nothing waits in Redis."""
    channel = b"ferrymq:inbox0:n2"
    stream = asyncio.StreamReader()
    order: list[str] = []
    got: list[bytes] = []

    def dispatch(messages: list[bytes], served: object, start: int, until: float) -> int:
        got.append(messages[start])
        order.append("dispatch")
        time.sleep(SLICE)  # a message that takes the whole slice
        return start + 1

    async def reader_turns() -> None:
        for i in range(5):
            stream.feed_data(reply(b"*", b"message", channel, b"b%d" % i))
            order.append("fed")
            await asyncio.sleep(0)

    task = asyncio.create_task(read_inbox0(stream, whole, dispatch, lambda n: None))
    await reader_turns()
    await until(lambda: len(got) == 5)
    task.cancel()
    assert got == [b"b0", b"b1", b"b2", b"b3", b"b4"]
    assert order.index("dispatch") > order.index("fed")
    assert order[:2] != ["dispatch", "dispatch"]  # the loop ran between the slices


async def test_a_backlog_past_its_bound_drops_its_oldest_and_counts_them() -> None:
    """While the dispatcher is behind, what is read past ``BACKLOG0_BYTES`` pushes the
    oldest batches out, each counted by its messages; what the reader held when the
    connection closed is counted too."""
    channel = b"ferrymq:inbox0:n2"
    one = frame(Message("t", b"x" * 1000))
    batch = one * 100  # 100 messages, some 100 KB
    dropped: list[int] = []
    stream = asyncio.StreamReader()

    def dispatch(messages: list[bytes], served: object, start: int, until: float) -> int:
        return start  # never gets anywhere: the node is that far behind

    task = asyncio.create_task(read_inbox0(stream, whole, dispatch, dropped.append))
    count = BACKLOG0_BYTES // len(batch) + 10
    stream.feed_data(b"".join(reply(b"*", b"message", channel, batch) for _ in range(count)))
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    held = sum(dropped)
    assert 9 * 100 <= held <= 11 * 100  # ten batches past the bound, about
    stream.feed_eof()
    with pytest.raises(RedisConnectionError):
        await asyncio.wait_for(task, 5)
    assert sum(dropped) == count * 100 - 100  # the one being dispatched is not counted


def test_a_backlog_counts_frames_without_decoding_them() -> None:
    backlog = Backlog0(limit=10)
    assert backlog.put(frame(Message("a", b"1")) * 3) == 0  # one batch is always kept
    newest = frame(Message("a", b"2"))
    assert backlog.put(newest) == 3
    assert backlog.take() == newest and not backlog and backlog.size == 0


def test_a_backlog_says_it_is_behind_from_its_high_mark_down_to_its_low_one() -> None:
    said: list[bool] = []
    backlog = Backlog0(limit=100, say=said.append, high=50, low=20)
    backlog.put(b"x" * 30)
    assert said == []
    backlog.put(b"x" * 20)
    assert said == [True]
    backlog.put(b"x" * 10)  # still behind: said once
    backlog.take()
    backlog.done()
    assert said == [True]  # 30 bytes left: above the low mark
    backlog.take()
    assert said == [True]  # 10 bytes left, but 20 not dispatched yet
    backlog.done()
    assert said == [True, False]
    backlog.take()
    backlog.done()
    backlog.put(b"x" * 60)
    assert backlog.clear() == 1 and said == [True, False, True, False]


async def test_a_failed_dispatch_ends_the_reader_instead_of_stalling_it() -> None:
    """A bug in dispatching stops the dispatcher task; the reader raises it at the next read
    (the node logs it and reconnects) rather than filling its backlog to the bound and
    dropping everything after it unseen."""
    stream = asyncio.StreamReader()
    calls = []

    def dispatch(messages: list[bytes], served: object, start: int, until: float) -> int:
        calls.append(messages)
        raise KeyError("a bug")

    task = asyncio.create_task(read_inbox0(stream, whole, dispatch, lambda n: None))
    one = reply(b"*", b"message", b"c", b"one")
    stream.feed_data(one)
    await until(lambda: calls)
    stream.feed_data(one)
    with pytest.raises(KeyError, match="a bug"):
        await asyncio.wait_for(task, 5)
