"""The baseline that tells this node's admin edits from the cluster's, in memory."""

from __future__ import annotations

import time
from pathlib import Path

from ferrymq.cluster.admindata import (
    BASELINE_FILE,
    TOMBSTONE_MS,
    Baseline,
    decode,
    encode,
    load_baseline,
    save_baseline,
    to_take_in,
)
from ferrymq.storage.records import KINDS, digest

NOW = int(time.time() * 1000)  # versions are wall-clock ms


def user(name: str, password_hash: str = "h") -> dict:  # type: ignore[type-arg]
    return {"subject": name, "password_hash": password_hash, "created_at": 1.0}


def view(**kinds: dict) -> dict:  # type: ignore[type-arg]
    return {kind: dict(kinds.get(kind, {})) for kind in KINDS}


def test_local_edits_are_what_differs_from_the_baseline() -> None:
    known = view(username={"a": user("a"), "b": user("b"), "c": user("c")})
    baseline = Baseline.of(known)
    assert baseline.local_edits(known) == []
    local = view(username={"a": user("a"), "b": user("b", "new"), "d": user("d")})
    edits = baseline.local_edits(local)
    assert sorted((k, key, r is None) for k, key, r in edits) == [
        ("username", "b", False),
        ("username", "c", True),  # deleted here
        ("username", "d", False),
    ]
    assert Baseline().local_edits(local) == [
        ("username", k, r) for k, r in local["username"].items()
    ]


def test_taking_in_the_cluster_copy_says_what_each_row_must_be_now() -> None:
    cluster = view(username={"a": user("a", "theirs"), "n": user("n")})
    local = view(username={"a": user("a"), "gone": user("gone")})
    writes = to_take_in(cluster, local)
    assert sorted((key, r and r["password_hash"], expected) for _k, key, r, expected in writes) == [
        ("a", "theirs", digest(user("a"))),
        ("gone", None, digest(user("gone"))),
        ("n", "h", None),
    ]
    assert to_take_in(cluster, cluster) == []


def test_acl_rules_are_taken_in_oldest_first() -> None:
    def rule(topic: str, at: int) -> dict:  # type: ignore[type-arg]
        return {
            "kind": "all",
            "subject": "",
            "topic": topic,
            "action": "pub",
            "access": "deny",
            "created_at": at,
        }

    cluster = view(
        acl={"k-new": rule("new", 30), "k-old": rule("old", 10), "k-mid": rule("mid", 20)}
    )
    assert [r["topic"] for _k, _key, r, _e in to_take_in(cluster, view())] == ["old", "mid", "new"]  # type: ignore[index]


def test_the_baseline_is_kept_in_the_data_directory(tmp_path: Path) -> None:
    assert load_baseline(tmp_path).local_edits(view()) == []  # none yet: empty
    baseline = Baseline.of(view(username={"a": user("a")}))
    save_baseline(tmp_path, baseline.dumps())
    again = load_baseline(tmp_path)
    assert again.get("username", "a") == digest(user("a"))
    assert again.local_edits(view()) == [("username", "a", None)]
    (tmp_path / BASELINE_FILE).write_text("{not json")
    assert load_baseline(tmp_path).get("username", "a") is None  # unreadable: as if none


def test_records_travel_as_json_and_deletions_as_nothing() -> None:
    assert decode(encode(user("a"))) == user("a")
    assert encode(None) == "" and decode(b"") is None


def test_what_this_node_knows_newer_than_the_copy_goes_back_to_it() -> None:
    known = view(username={"a": user("a"), "b": user("b")})
    baseline = Baseline.of(known, {"username": {"a": NOW + 10, "b": NOW + 20, "gone": NOW + 30}})
    assert (
        baseline.get("username", "gone") is None
        and baseline.version("username", "gone") == NOW + 30
    )
    # The copy lost everything: this node's records and its tombstone go back, versioned.
    assert sorted(baseline.behind(known, {})) == [
        ("username", "a", user("a"), NOW + 10),
        ("username", "b", user("b"), NOW + 20),
        ("username", "gone", None, NOW + 30),
    ]
    # A copy as new or newer is left alone; a record edited here is a local edit instead.
    copy = {"username": {"a": NOW + 10, "b": NOW + 25, "gone": NOW + 30}}
    assert baseline.behind(known, copy) == []
    edited = view(username={"a": user("a", "new"), "b": user("b")})
    assert baseline.behind(edited, {"username": {"b": NOW + 20}}) == [
        ("username", "gone", None, NOW + 30)
    ]


def test_tombstones_are_forgotten_after_a_while_and_kept_with_the_baseline(
    tmp_path: Path,
) -> None:
    now = 100 * TOMBSTONE_MS
    baseline = Baseline.of(view(username={"a": user("a")}), {"username": {"a": 1, "old": 1}})
    assert baseline.version("username", "old") == 0  # older than TOMBSTONE_DAYS: forgotten
    assert baseline.version("username", "a") == 1  # a record's version stays, however old
    baseline.set("username", "gone", None, now)
    save_baseline(tmp_path, baseline.dumps())
    again = load_baseline(tmp_path)
    assert again.version("username", "gone") == now and again.get("username", "gone") is None
    again.forget_old_tombstones(now + TOMBSTONE_MS + 1)
    assert again.version("username", "gone") == 0
    # A baseline kept before versions existed reads as versions 0 (older than any write).
    (tmp_path / BASELINE_FILE).write_text('{"digests": {"username": {"a": "x"}}}')
    assert load_baseline(tmp_path).version("username", "a") == 0
