"""Lists merged from several nodes and paged as one, in memory: ``paging.slices`` and
``Cluster.paged`` over three nodes joined by an in-memory stand-in for the RPC."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

import pytest
from aiohttp.test_utils import make_mocked_request

from ferrymq.api import nodes, ops
from ferrymq.api.cluster import OPS, Cluster
from ferrymq.api.errors import ApiError
from ferrymq.api.paging import slices
from ferrymq.config import Settings
from ferrymq.core.topic_metrics import TopicMetricsError

assert nodes.ROUTES and "routes" in OPS  # importing the endpoint registers its operation


def test_slices_cut_the_page_from_the_nodes_one_after_another() -> None:
    assert slices([4, 0, 5], 0, 3) == [(0, 3), (0, 0), (0, 0)]
    assert slices([4, 0, 5], 3, 3) == [(3, 1), (0, 0), (0, 2)]
    assert slices([4, 0, 5], 6, 3) == [(0, 0), (0, 0), (2, 3)]
    assert slices([4, 0, 5], 9, 3) == [(0, 0), (0, 0), (0, 0)]  # past the end
    assert slices([4, 0, 5], 0, 10000) == [(0, 4), (0, 0), (0, 5)]
    assert slices([], 0, 10) == []


class Link:
    """The RPC between in-memory clusters: a request runs ``ops.answer`` on the target,
    JSON in and out as on the wire; ``frozen`` nodes never answer."""

    def __init__(self) -> None:
        self.clusters: dict[str, Cluster] = {}
        self.frozen: set[str] = set()
        self.asked: list[tuple[str, dict[str, Any]]] = []
        self.timeouts: list[float] = []
        self.handler = None

    async def call(self, node: str, op: str, args: Any, timeout: float) -> Any:
        self.asked.append((node, args))
        self.timeouts.append(timeout)
        if node in self.frozen:
            raise TimeoutError(f"node {node} did not answer within {timeout:g} s")
        try:
            target = self.clusters[node].local.ctx
            answer = await ops.answer(target, op, json.loads(json.dumps(args)))
        except Exception as exc:  # as cluster.rpc answers a request whose handler raised
            raise RuntimeError(f"{type(exc).__name__} on {node}") from None
        return json.loads(json.dumps(answer))


class Peers:
    def __init__(self, rpc: Link, peers: dict[str, tuple[bool, dict[str, Any]]]) -> None:
        self.rpc = rpc
        self.peers = peers


def _cluster(
    routes: dict[str, list[str]], ask: str, settings: Settings | None = None
) -> tuple[Cluster, Link]:
    """A cluster view per node, each node with its ``routes``; the one of node ``ask``."""
    link = Link()
    for name, filters in routes.items():
        router = SimpleNamespace(route_filters=lambda filters=filters: list(filters))
        metrics = SimpleNamespace(register=_refuse)
        ctx = SimpleNamespace(
            node=name,
            broker=SimpleNamespace(
                router=router, topic_metrics=metrics, settings=settings or Settings()
            ),
        )
        others = {n: (True, {}) for n in routes if n != name}
        link.clusters[name] = Cluster(ctx, Peers(link, others))  # type: ignore[arg-type]
    return link.clusters[ask], link


def _refuse(topic: str) -> None:
    raise TopicMetricsError(f"topic metrics for {topic!r} exist already")


ROUTES = {
    "b@h": ["b1", "b2", "b3", "b4"],
    "a@h": [],
    "c@h": ["c1", "c2", "c3", "c4", "c5"],
}
ALL = [(t, n) for n in sorted(ROUTES) for t in ROUTES[n]]  # node name order, from any node


async def _page(cluster: Cluster, query: str) -> dict[str, Any]:
    return await cluster.paged(make_mocked_request("GET", f"/api/v4/routes?{query}"), "routes")


@pytest.mark.parametrize("ask", sorted(ROUTES))
async def test_pages_from_any_node_are_the_same_and_cover_every_item(ask: str) -> None:
    cluster, _link = _cluster(ROUTES, ask)
    seen = []
    for page in (1, 2, 3, 4):
        body = await _page(cluster, f"_limit=3&_page={page}")
        assert body["meta"] == {"page": page, "limit": 3, "count": 9, "hasnext": page < 3}
        seen += [(i["topic"], i["node"]) for i in body["data"]]
    assert seen == ALL
    whole = await _page(cluster, "")
    assert [(i["topic"], i["node"]) for i in whole["data"]] == ALL
    assert whole["meta"]["count"] == 9 and not whole["meta"]["hasnext"]


async def test_a_first_page_takes_one_round_a_later_one_asks_only_the_nodes_on_it() -> None:
    cluster, link = _cluster(ROUTES, "a@h")
    await _page(cluster, "_limit=3")
    assert sorted(node for node, _ in link.asked) == ["b@h", "c@h"]  # a@h answers itself
    link.asked.clear()
    body = await _page(cluster, "_limit=3&_page=3")
    assert [i["topic"] for i in body["data"]] == ["c3", "c4", "c5"]
    # The counts first (nothing listed), then node c alone for its three.
    assert link.asked == [
        ("b@h", {"start": 0, "limit": 0}),
        ("c@h", {"start": 0, "limit": 0}),
        ("c@h", {"start": 2, "limit": 3}),
    ]


async def test_one_node_of_the_path_is_asked_alone() -> None:
    cluster, link = _cluster(ROUTES, "a@h")
    request = make_mocked_request(
        "GET", "/api/v4/nodes/c@h/routes?_limit=2&_page=2", match_info={"node": "c@h"}
    )
    body = await cluster.paged(request, "routes")
    assert [i["topic"] for i in body["data"]] == ["c3", "c4"]
    assert body["meta"] == {"page": 2, "limit": 2, "count": 5, "hasnext": True}
    assert link.asked == [("c@h", {"start": 2, "limit": 2})]
    with pytest.raises(ApiError) as unknown:
        await cluster.paged(make_mocked_request("GET", "/x", match_info={"node": "z@h"}), "routes")
    assert (unknown.value.status, unknown.value.code) == (404, 102)


async def test_a_node_that_does_not_answer_fails_the_list_with_101() -> None:
    cluster, link = _cluster(ROUTES, "a@h")
    link.frozen.add("c@h")
    with pytest.raises(ApiError) as failed:
        await _page(cluster, "")
    assert (failed.value.status, failed.value.code) == (500, 101)
    assert "c@h" in failed.value.message
    assert set(link.timeouts) == {5.0}  # cluster_rpc_timeout's default


async def test_the_rpc_timeout_is_the_cluster_rpc_timeout_setting() -> None:
    cluster, link = _cluster(ROUTES, "a@h", Settings(cluster_rpc_timeout=0.7))
    link.frozen.add("b@h")
    with pytest.raises(ApiError) as failed:
        await _page(cluster, "")
    assert (failed.value.status, failed.value.code) == (500, 101)
    assert "0.7 s" in failed.value.message
    assert set(link.timeouts) == {0.7}


async def test_a_stopped_node_is_not_asked() -> None:
    cluster, link = _cluster(ROUTES, "a@h")
    assert cluster.peers is not None
    cluster.peers.peers["c@h"] = (False, {})
    body = await _page(cluster, "")
    assert [i["node"] for i in body["data"]] == ["b@h"] * 4
    assert all(node != "c@h" for node, _ in link.asked)
    with pytest.raises(ApiError) as stopped:
        await cluster.node("c@h").call("routes", start=0, limit=1)
    assert (stopped.value.status, stopped.value.code) == (500, 101)


async def test_an_api_error_on_another_node_is_raised_as_it_was() -> None:
    cluster, _link = _cluster(ROUTES, "a@h")
    with pytest.raises(ApiError) as refused:
        await cluster.node("b@h").register_topic_metrics("t")
    assert (refused.value.status, refused.value.code) == (400, 108)
    assert refused.value.message == "topic metrics for 't' exist already"
    with pytest.raises(ApiError) as crashed:
        await cluster.node("b@h").call("routes", start=0)  # a request the node cannot run
    assert (crashed.value.status, crashed.value.code) == (500, 102)
    with pytest.raises(ApiError) as unknown_op:
        await cluster.node("b@h").call("no-such-operation")
    assert (unknown_op.value.status, unknown_op.value.code) == (500, 102)
