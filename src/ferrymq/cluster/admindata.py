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
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path
from typing import Any

from ferrymq.storage.records import KINDS, Record, digest

View = dict[str, dict[str, Record]]
#: (kind, key, the record or None for deleted).
Edit = tuple[str, str, Record | None]

BASELINE_FILE = "cluster-admin.json"


class Baseline:
    """kind -> key -> digest of the cluster's record, as this node last knew it."""

    def __init__(self, digests: dict[str, dict[str, str]] | None = None) -> None:
        self.digests: dict[str, dict[str, str]] = {kind: {} for kind in KINDS}
        for kind, items in (digests or {}).items():
            if kind in self.digests:
                self.digests[kind].update(items)

    @classmethod
    def of(cls, view: View) -> Baseline:
        return cls(
            {kind: {key: digest(r) or "" for key, r in recs.items()} for kind, recs in view.items()}
        )

    def get(self, kind: str, key: str) -> str | None:
        return self.digests[kind].get(key)

    def set(self, kind: str, key: str, value: str | None) -> None:
        if value is None:
            self.digests[kind].pop(key, None)
        else:
            self.digests[kind][key] = value

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
        return json.dumps({"digests": self.digests}, separators=(",", ":"))

    @classmethod
    def loads(cls, text: str) -> Baseline:
        data = json.loads(text)
        digests = data["digests"] if isinstance(data, dict) else None
        if not isinstance(digests, dict):
            raise ValueError("not a baseline")
        return cls({k: dict(v) for k, v in digests.items() if isinstance(v, dict)})


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
