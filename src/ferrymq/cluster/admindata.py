"""Bookkeeping of the cluster-wide admin data, without I/O: views, diffs, the baseline.

A *view* is admin data as records, kind -> key -> record
(``storage/records.py``). Bans past their deadline are records like any
other: a node drops them from its database at start, and that deletion
spreads like any edit.

The *baseline* is, per record, the digest of what this node last knew the
cluster's copy to hold. It is what tells this node's own edits (API,
dashboard, command line, made while connected or not) from the cluster's:
a local record whose digest differs from the baseline was changed here and
is pushed; anything else that differs from the cluster's copy was changed
elsewhere and is taken in. It is kept in the data directory
(``cluster-admin.json``) so that a restarted node does not take records
deleted elsewhere meanwhile for its own additions.

The baseline also keeps each record's *version*: the time (ms) of the write
to the cluster's copy that this node last knew, for deleted records too (a
*tombstone*, kept ``TOMBSTONE_DAYS``). When the copy is behind what a node
knows (Redis lost its data and a node with an older copy refilled it), the
node sends its newer knowledge back (``behind``); the newest version of each
record wins, whichever node reconnects first.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from pathlib import Path
from typing import Any

from ferrymq.storage.records import KINDS, Record, digest

View = dict[str, dict[str, Record]]
#: (kind, key, the record or None for deleted).
Edit = tuple[str, str, Record | None]

#: kind -> key -> version (ms), of the records the copy holds and of its tombstones.
Versions = dict[str, dict[str, int]]

BASELINE_FILE = "cluster-admin.json"
#: How long a deletion is remembered: a node stopped or cut off for longer may bring back
#: a record deleted meanwhile if Redis also lost its copy.
TOMBSTONE_DAYS = 30
TOMBSTONE_MS = TOMBSTONE_DAYS * 86_400_000


class Baseline:
    """kind -> key -> digest of the cluster's record, as this node last knew it, and the
    version of each (``versions``; a key there without a digest is a tombstone)."""

    def __init__(
        self,
        digests: dict[str, dict[str, str]] | None = None,
        versions: dict[str, dict[str, int]] | None = None,
    ) -> None:
        self.digests: dict[str, dict[str, str]] = {kind: {} for kind in KINDS}
        self.versions: Versions = {kind: {} for kind in KINDS}
        for kind, items in (digests or {}).items():
            if kind in self.digests:
                self.digests[kind].update(items)
        for kind, stamps in (versions or {}).items():
            if kind in self.versions:
                self.versions[kind].update((k, int(v)) for k, v in stamps.items())

    @classmethod
    def of(cls, view: View, versions: Versions | None = None) -> Baseline:
        """The copy ``view`` with its ``versions`` (tombstones too), old tombstones left out."""
        baseline = cls(
            {
                kind: {key: digest(r) or "" for key, r in recs.items()}
                for kind, recs in view.items()
            },
            versions,
        )
        baseline.forget_old_tombstones()
        return baseline

    def version(self, kind: str, key: str) -> int:
        return self.versions[kind].get(key, 0)

    def forget_old_tombstones(self, now_ms: int | None = None) -> None:
        oldest = (now_ms or int(time.time() * 1000)) - TOMBSTONE_MS
        for kind, stamps in self.versions.items():
            present = self.digests[kind]
            for key in [k for k, v in stamps.items() if v < oldest and k not in present]:
                del stamps[key]

    def behind(self, local: View, copy: Versions) -> list[tuple[str, str, Record | None, int]]:
        """What this node knows newer than the cluster's copy (versions ``copy``): (kind,
        key, its record or None for a tombstone, its version), for records it did not edit
        (those are ``local_edits``)."""
        out: list[tuple[str, str, Record | None, int]] = []
        for kind in KINDS:
            mine, known, theirs = local.get(kind, {}), self.digests[kind], copy.get(kind, {})
            for key, version in self.versions[kind].items():
                if version <= theirs.get(key, 0):
                    continue
                record = mine.get(key)
                if key in known and known[key] == digest(record):
                    out.append((kind, key, record, version))
                elif key not in known and record is None:
                    out.append((kind, key, None, version))
        return out

    def get(self, kind: str, key: str) -> str | None:
        return self.digests[kind].get(key)

    def set(self, kind: str, key: str, value: str | None, version: int | None = None) -> None:
        if value is None:
            self.digests[kind].pop(key, None)
        else:
            self.digests[kind][key] = value
        if version is not None:
            self.versions[kind][key] = version

    def local_edits(self, view: View) -> list[Edit]:
        """What ``view`` (this node's data) changed since the baseline: records added or
        changed here, and deleted ones (None)."""
        edits: list[Edit] = []
        for kind in KINDS:
            mine = view.get(kind, {})
            known = self.digests[kind]
            for key, record in mine.items():
                if known.get(key) != digest(record):
                    edits.append((kind, key, record))
            edits.extend((kind, key, None) for key in known if key not in mine)
        return edits

    def dumps(self) -> str:
        return json.dumps(
            {"digests": self.digests, "versions": self.versions}, separators=(",", ":")
        )

    @classmethod
    def loads(cls, text: str) -> Baseline:
        data = json.loads(text)
        digests = data["digests"] if isinstance(data, dict) else None
        if not isinstance(digests, dict):
            raise ValueError("not a baseline")
        versions = data.get("versions") or {}  # none in a baseline kept before versions
        if not isinstance(versions, dict):
            raise ValueError("not a baseline")
        return cls(
            {k: dict(v) for k, v in digests.items() if isinstance(v, dict)},
            {k: dict(v) for k, v in versions.items() if isinstance(v, dict)},
        )


def load_baseline(data_dir: str | os.PathLike[str]) -> Baseline:
    """The baseline kept in ``data_dir``; empty when there is none (or it is unreadable:
    then this node's records count as its own, added to the cluster's)."""
    try:
        return Baseline.loads((Path(data_dir) / BASELINE_FILE).read_text())
    except (OSError, ValueError, TypeError):
        return Baseline()


def save_baseline(data_dir: str | os.PathLike[str], text: str) -> None:
    """Replace the kept baseline with ``text`` (``Baseline.dumps``) atomically."""
    path = Path(data_dir) / BASELINE_FILE
    tmp = path.with_name(f"{BASELINE_FILE}.{secrets.token_hex(4)}")
    tmp.write_text(text)
    os.replace(tmp, path)


def to_take_in(cluster: View, local: View) -> list[tuple[str, str, Record | None, str | None]]:
    """The writes that make ``local`` equal ``cluster``: (kind, key, record or None,
    the digest the local row has now), for ``SqliteStore.apply_admin_records``."""
    out: list[tuple[str, str, Record | None, str | None]] = []
    for kind in KINDS:
        theirs, mine = cluster.get(kind, {}), local.get(kind, {})
        for key in sorted(theirs.keys() | mine.keys(), key=lambda k: _order(kind, k, theirs)):
            want, have = theirs.get(key), mine.get(key)
            if digest(want) != digest(have):
                out.append((kind, key, want, digest(have)))
    return out


def _order(kind: str, key: str, records: dict[str, Record]) -> Any:
    """ACL rules are written oldest first, so the newest rule is also newest here."""
    record = records.get(key)
    return (record["created_at"] if kind == "acl" and record else 0, key)


def encode(record: Record | None) -> str:
    return "" if record is None else json.dumps(record, separators=(",", ":"))


def decode(data: bytes | str) -> Record | None:
    """A record as Redis holds it ("" for a deletion); ValueError when unreadable."""
    if not data:
        return None
    record = json.loads(data)
    if not isinstance(record, dict):
        raise ValueError(f"not a record: {data!r}")
    return record
