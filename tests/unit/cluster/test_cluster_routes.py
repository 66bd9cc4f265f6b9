"""The cluster route table in memory: the replica other nodes' routes live in, the pending
changes of this node, and the router that reports first and last local subscribers."""

from __future__ import annotations

from ferrymq.cluster.router import ClusterRouter
from ferrymq.cluster.routes import PendingRoutes, RouteReplica
from ferrymq.model.subscription import Subscription


def test_replica_matches_other_nodes_filters_and_never_its_own() -> None:
    r = RouteReplica("me")
    r.add("me", "a/#")  # this node's routes are its Router's
    r.add("n2", "a/+")
    r.add("n3", "a/#")
    r.add("n3", "b/c")
    assert r.nodes_for("a/x") == ("n2", "n3")
    assert r.nodes_for("a/x/y") == ("n3",)
    assert r.nodes_for("b/c") == ("n3",)
    assert r.nodes_for("c") == ()
    assert len(r) == 3 and r.nodes() == ["n2", "n3"]


def test_replica_cache_follows_changes() -> None:
    r = RouteReplica("me")
    r.add("n2", "a/+")
    assert r.nodes_for("a/x") == ("n2",)  # cached now
    r.add("n3", "#")
    assert r.nodes_for("a/x") == ("n2", "n3")
    r.remove("n2", "a/+")
    assert r.nodes_for("a/x") == ("n3",)
    r.remove("n3", "#")
    assert r.nodes_for("a/x") == ()


def test_replica_changes_are_idempotent_so_replay_converges() -> None:
    r = RouteReplica("me")
    r.replace({"a/b": ["n2"], "x/#": ["n2", "n3"]})
    # Replaying the change stream over the snapshot: what it already holds changes nothing.
    r.add("n2", "a/b")
    r.remove("n2", "gone")
    r.remove("n3", "x/#")
    r.remove("n3", "x/#")
    assert r.filters_of("n2") == {"a/b", "x/#"}
    assert r.filters_of("n3") == set()
    assert r.nodes_for("x/1") == ("n2",)


def test_replica_drops_a_dead_nodes_routes() -> None:
    r = RouteReplica("me")
    for f in ("a", "b/#", "$SYS/#"):
        r.add("dead", f)
    r.add("n2", "b/#")
    assert r.nodes_for("b/1") == ("dead", "n2")
    assert r.drop_node("dead") == 3
    assert r.nodes_for("b/1") == ("n2",)
    assert r.nodes_for("a") == ()
    assert r.drop_node("dead") == 0
    assert r.nodes() == ["n2"]


def test_replica_keeps_the_dollar_rule() -> None:
    r = RouteReplica("me")
    r.add("n2", "#")
    r.add("n3", "$SYS/#")
    assert r.nodes_for("$SYS/x") == ("n3",)


def test_pending_routes_collapse_within_a_batch() -> None:
    p = PendingRoutes()
    assert not p
    p.add("a")
    p.remove("a")  # never reached Redis: nothing to send
    assert not p
    p.add("b")
    assert p.take() == (["b"], [])
    p.remove("b")
    p.add("b")  # still in Redis: nothing to send
    assert not p
    p.remove("b")
    p.add("c")
    assert p.take() == (["c"], ["b"])
    assert p.take() == ([], [])


def test_cluster_router_reports_first_and_last_local_subscriber() -> None:
    events: list[tuple[str, str]] = []
    shares: list[tuple[str, int]] = []
    router = ClusterRouter(
        "round_robin",
        lambda f: events.append(("+", f)),
        lambda f: events.append(("-", f)),
        lambda key, n: shares.append((key, n)),
    )

    def sub(client: str, topic_filter: str) -> Subscription:
        return Subscription(client, object(), topic_filter, 1)

    router.add(sub("c1", "a/#"))
    router.add(sub("c2", "a/#"))
    router.add(sub("c1", "a/#"))  # replaced: no change
    router.add(sub("c3", "$share/g/a/#"))  # a shared member is no plain route...
    assert events == [("+", "a/#")]
    assert shares == [("$share/g/a/#", 1)]  # ...but a member count of its group
    router.remove("c1", "a/#")
    router.remove("c2", "a/#")
    assert events == [("+", "a/#"), ("-", "a/#")]  # the group does not keep the route
    router.remove("c9", "a/#")  # nothing removed: nothing reported
    router.remove("c3", "$share/g/a/#")
    assert events == [("+", "a/#"), ("-", "a/#")]
    assert shares == [("$share/g/a/#", 1), ("$share/g/a/#", 0)]
    router.add(sub("c4", "$queue/q"))
    router.add(sub("c5", "$queue/q"))
    router.add(sub("c5", "$queue/q"))  # replaced: no change
    router.remove("c4", "$queue/q")
    assert shares[2:] == [("$queue/q", 1), ("$queue/q", 2), ("$queue/q", 1)]
    assert events == [("+", "a/#"), ("-", "a/#")]
