"""The QoS 0 inbox reader on raw bytes as Redis sends them: RESP2 arrays and RESP3
pushes, replies split across reads, the subscription's confirmation skipped."""

from __future__ import annotations

import asyncio

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from ferrymq.cluster.inbox0 import read_inbox0


def bulk(data: bytes) -> bytes:
    return b"$%d\r\n%s\r\n" % (len(data), data)


def reply(kind: bytes, *items: bytes) -> bytes:
    return kind + b"%d\r\n" % len(items) + b"".join(bulk(i) for i in items)


def confirmation(kind: bytes, channel: bytes) -> bytes:
    return kind + b"3\r\n" + bulk(b"subscribe") + bulk(channel) + b":1\r\n"


async def read_all(chunks: list[bytes]) -> tuple[list[bytes], BaseException]:
    """What the reader dispatched from ``chunks`` fed one by one, then the error that
    ended it (the connection closes after the last chunk)."""
    stream = asyncio.StreamReader()
    got: list[bytes] = []
    task = asyncio.create_task(read_inbox0(stream, got.append))
    for chunk in chunks:
        stream.feed_data(chunk)
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
    got, ended = await read_all([reply(b"*", b"message", b"c", b"one") + b"-ERR broken\r\n"])
    assert got == [b"one"]
    assert isinstance(ended, ResponseError) and "broken" in str(ended)


async def test_bytes_that_are_no_reply_end_the_connection() -> None:
    got, ended = await read_all([b"?what\r\n"])
    assert got == []
    assert isinstance(ended, RedisConnectionError) and "unreadable" in str(ended)
