"""Retained topics after an outage or a Redis that lost its data, in memory: the newest
change of each topic wins (``cluster/retained.py``)."""

from __future__ import annotations

from ferrymq.cluster.retained import CLEARED_KEEP, CLEARED_TTL_MS, Cleared, plan
from ferrymq.model.message import Message


def msg(topic: str, payload: bytes, at: float) -> Message:
    return Message(topic, payload, 0, True, created=at)


def test_the_newest_change_of_each_topic_wins() -> None:
    local = {
        "mine-newer": msg("mine-newer", b"new", 20),
        "theirs-newer": msg("theirs-newer", b"old", 10),
        "same": msg("same", b"x", 5),
        "cleared-since": msg("cleared-since", b"stale", 10),
        "set-after-clear": msg("set-after-clear", b"again", 30),
        "only-here": msg("only-here", b"h", 1),
    }
    stored = {
        "mine-newer": msg("mine-newer", b"old", 10),
        "theirs-newer": msg("theirs-newer", b"new", 20),
        "same": msg("same", b"x", 5),
        "cleared-here": msg("cleared-here", b"stale", 10),
        "only-there": msg("only-there", b"t", 1),
    }
    cleared = {"cleared-since": 20_000, "set-after-clear": 20_000, "cleared-here": 15_000}
    send, take, drop = plan(local, stored, cleared)
    assert sorted((m.topic, m.payload) for m in send) == [
        ("cleared-here", b""),  # a clear this node knows, newer than Redis' message
        ("mine-newer", b"new"),
        ("only-here", b"h"),  # a node joining with its own retained messages
        ("set-after-clear", b"again"),
    ]
    assert next(m for m in send if m.topic == "cleared-here").created == 15.0
    assert sorted((m.topic, m.payload) for m in take) == [
        ("only-there", b"t"),
        ("theirs-newer", b"new"),
    ]
    assert drop == ["cleared-since"]  # cleared elsewhere after this node's copy was set
    assert plan(stored, stored, {}) == ([], [], [])


def test_a_node_remembers_its_last_clears_for_a_while() -> None:
    known = Cleared()
    for i in range(CLEARED_KEEP + 5):
        known.add(f"t{i}", 1_000 + i)
    assert len(known.at) == CLEARED_KEEP and "t0" not in known.at
    known.add("t10", 99_999)  # cleared again: the newest
    assert list(known.at)[-1] == "t10"
    known.forget_old(99_999 + CLEARED_TTL_MS)
    assert known.at == {"t10": 99_999}
