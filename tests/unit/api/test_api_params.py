"""Paging and query helpers in isolation: pages tile the list exactly, bad values are 400/108."""

from __future__ import annotations

import pytest
from aiohttp.test_utils import make_mocked_request
from hypothesis import given, settings
from hypothesis import strategies as st

from ferrymq.api.auth import parse_basic
from ferrymq.api.errors import ApiError
from ferrymq.api.params import paged, query_time


def _request(query: str):
    return make_mocked_request("GET", f"/api/v4/clients?{query}")


@settings(deadline=None)  # many mocked requests per example: slow on a loaded machine
@given(count=st.integers(0, 60), limit=st.integers(1, 25))
def test_pages_tile_the_list(count: int, limit: int) -> None:
    items = list(range(count))
    seen = []
    page = 1
    while True:
        body = paged(_request(f"_page={page}&_limit={limit}"), items, lambda i: i * 10)
        meta = body["meta"]
        assert meta["count"] == count and meta["page"] == page and meta["limit"] == limit
        assert len(body["data"]) <= limit
        seen += body["data"]
        if not meta["hasnext"]:
            break
        page += 1
    assert seen == [i * 10 for i in items]
    beyond = paged(_request(f"_page={page + 1}&_limit={limit}"), items)
    assert beyond["data"] == [] and beyond["meta"]["hasnext"] is False


@pytest.mark.parametrize(
    "query",
    [
        "_page=0",
        "_limit=-2",
        "_page=x",
        "_limit=",
        "_page=1e3",
        "_page=%201",  # " 1"
        "_page=%2B1",  # "+1"
        "_page=%D9%A1",  # the Arabic-Indic digit one
        "_limit=1_0",
    ],
)
def test_bad_paging(query: str) -> None:
    with pytest.raises(ApiError) as info:
        paged(_request(query), [1, 2, 3])
    assert (info.value.status, info.value.code) == (400, 108)


def test_defaults() -> None:
    assert paged(_request(""), [1])["meta"] == {
        "page": 1,
        "limit": 10000,
        "count": 1,
        "hasnext": False,
    }


@pytest.mark.parametrize(
    ("value", "ok"), [("1700000000", True), ("1700000000.5", True), ("inf", False), ("x", False)]
)
def test_time_filter_values(value: str, ok: bool) -> None:
    request = _request(f"_gte_created_at={value}")
    if ok:
        assert query_time(request, "_gte_created_at") == float(value)
    else:
        with pytest.raises(ApiError):
            query_time(request, "_gte_created_at")


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("Basic YTpi", ("a", "b")),
        ("basic YTpiOmM=", ("a", "b:c")),
        ("Basic YQ==", None),
        ("Basic OmI=", None),
        ("Basic ***", None),
        ("Digest YTpi", None),
        (None, None),
    ],
)
def test_parse_basic(header: str | None, expected) -> None:
    assert parse_basic(header) == expected
