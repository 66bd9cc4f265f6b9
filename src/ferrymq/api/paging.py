"""Paging a list that several nodes hold between them, as EMQX 4.4's ``cluster_query``:
the nodes in name order, each node's matching items one after another, and the page cut
from that sequence. Pure functions: ``Cluster.paged`` does the asking.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any


def slices(counts: Sequence[int], start: int, limit: int) -> list[tuple[int, int]]:
    """For nodes holding ``counts`` matching items each, which of its items each node
    contributes to items ``[start, start + limit)`` of the whole sequence: one
    ``(offset, length)`` per node, ``(0, 0)`` for a node with none on the page."""
    out: list[tuple[int, int]] = []
    before = 0  # items of the nodes before this one
    end = start + limit
    for count in counts:
        lo = max(start - before, 0)
        hi = min(end - before, count)
        out.append((lo, hi - lo) if hi > lo else (0, 0))
        before += count
    return out


def page_body(page: int, limit: int, count: int, data: list[Any]) -> dict[str, Any]:
    """The success body of a list endpoint (API.md "Paging")."""
    start = (page - 1) * limit
    return {
        "code": 0,
        "data": data,
        "meta": {"page": page, "limit": limit, "count": count, "hasnext": start + limit < count},
    }


def window(
    items: Sequence[Any], start: int, limit: int, fmt: Callable[[Any], Any]
) -> dict[str, Any]:
    """One node's answer to a paged operation: how many items match, and ``limit`` of
    them from ``start``, formatted (only those are)."""
    return {"count": len(items), "items": [fmt(item) for item in items[start : start + limit]]}
