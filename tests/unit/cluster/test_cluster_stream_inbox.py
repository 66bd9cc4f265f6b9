"""The QoS 1/2 inbox reader's commands as Redis reads them, and its reading of Redis'
raw replies (cluster/stream_inbox.py); the reader itself runs against a real Redis in
tests/system/cluster/test_cluster_inbox.py."""

from __future__ import annotations

import hiredis
from redis.asyncio.connection import Connection

from ferrymq.cluster.stream_inbox import ACK_DELAY, ACK_MOST, Owed, StreamCommands, _entries, pack


def commands_in(data: bytes) -> list[list[bytes]]:
    """The commands packed in ``data`` (RESP arrays, which hiredis reads as replies)."""
    reader = hiredis.Reader()
    reader.feed(data)
    out = []
    while (command := reader.gets()) is not False:
        out.append(command)
    return out


def test_pack_writes_what_redis_py_writes() -> None:
    args = (b"XACK", b"ferrymq:inbox:me", b"ferrymq", b"1-0", b"")
    assert pack(*args) == b"".join(Connection().pack_command(*args))


def test_the_read_asks_the_group_for_pending_then_new_entries() -> None:
    commands = StreamCommands("ferrymq:inbox:me", "ferrymq", "me@host", 1000, quiet=True)
    head = [b"XREADGROUP", b"GROUP", b"ferrymq", b"me@host", b"COUNT", b"100", b"BLOCK"]
    head += [b"1000", b"STREAMS", b"ferrymq:inbox:me"]
    assert commands_in(commands.read(b"0")) == [[*head, b"0"]]
    assert commands_in(commands.read(b">")) == [[*head, b">"]]


def test_the_read_blocks_briefly_while_acknowledgements_are_owed() -> None:
    commands = StreamCommands("ferrymq:inbox:me", "ferrymq", "me@host", 1000, quiet=True)
    [read] = commands_in(commands.read(b">", owing=True))
    assert read[read.index(b"BLOCK") + 1] == b"%d" % round(ACK_DELAY * 1000)
    assert read[-1] == b">"


def test_acknowledgements_wait_for_others_until_due() -> None:
    owed = Owed()
    assert not owed.ready(0.0, True)  # nothing owed
    owed.add([b"1-0"], 10.0)
    assert not owed.ready(10.0, False)
    owed.add([b"2-0"], 10.0 + ACK_DELAY / 2)  # joins, the oldest's deadline kept
    assert not owed.ready(10.0 + ACK_DELAY * 0.9, False)
    assert owed.ready(10.0 + ACK_DELAY, False)
    assert owed.take() == [b"1-0", b"2-0"] and not owed.ids


def test_acknowledgements_leave_at_once_when_idle_or_many() -> None:
    owed = Owed()
    owed.add([b"1-0"], 10.0)
    assert owed.ready(10.0, True)  # the last read found nothing: no reason to wait more
    owed.add([b"%d-0" % i for i in range(ACK_MOST)], 10.0)
    assert owed.ready(10.0, False)


def test_acknowledgements_skip_their_replies_where_redis_allows() -> None:
    ids = [b"1-0", b"2-0"]
    skip = [b"CLIENT", b"REPLY", b"SKIP"]
    xack = [b"XACK", b"ferrymq:inbox:me", b"ferrymq", *ids]
    xdel = [b"XDEL", b"ferrymq:inbox:me", *ids]
    quiet = StreamCommands("ferrymq:inbox:me", "ferrymq", "me", 1000, quiet=True)
    assert commands_in(quiet.ack(ids)) == [skip, xack, skip, xdel]
    loud = StreamCommands("ferrymq:inbox:me", "ferrymq", "me", 1000, quiet=False)
    assert commands_in(loud.ack(ids)) == [xack, xdel]


def test_raw_inbox_replies_are_read_in_both_protocols() -> None:
    """The inbox reader reads Redis' raw XREADGROUP reply: RESP2 and RESP3 shapes."""
    entries = [[b"1-0", [b"m", b"batch"]], [b"2-0", None]]  # the second deleted while pending
    assert _entries([[b"ferrymq:inbox:me", entries]]) == entries
    assert _entries({b"ferrymq:inbox:me": entries}) == entries
    assert _entries(None) == [] and _entries([]) == []
