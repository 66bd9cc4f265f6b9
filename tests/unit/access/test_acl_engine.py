"""ACL semantics of API.md "Access control" (EMQX 4.4's), in memory, plus the leak check."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ferrymq.access.acl import (
    Acl,
    AclRule,
    make_rules,
    parse_access,
    parse_action,
    parse_kind,
)
from ferrymq.mqtt.topics import filters_intersect, topic_matches


def cid(subject: str, topic: str, action: str = "pubsub", access: str = "allow") -> list[AclRule]:
    return make_rules("clientid", subject, topic, action, access)


def user(subject: str, topic: str, action: str = "pubsub", access: str = "allow") -> list[AclRule]:
    return make_rules("username", subject, topic, action, access)


def every(topic: str, action: str = "pubsub", access: str = "allow") -> list[AclRule]:
    return make_rules("all", None, topic, action, access)


def acl_of(*groups: list[AclRule], nomatch: str = "allow") -> Acl:
    """Rules given oldest first: the last one given is the newest."""
    acl = Acl(nomatch)
    acl.load(rule for group in groups for rule in group)
    return acl


# -- parsing and the stored form ----------------------------------------------


@pytest.mark.parametrize(
    ("text", "action"), [("pub", "pub"), ("sub", "sub"), ("pubsub", "pubsub"), ("subpub", "pubsub")]
)
def test_parse_action(text: str, action: str) -> None:
    assert parse_action(text) == action


@pytest.mark.parametrize("bad", ["", "publish", "PUB", "all", "pub,sub", None, 1])
def test_parse_action_rejects(bad: object) -> None:
    with pytest.raises(ValueError):
        parse_action(bad)  # type: ignore[arg-type]


def test_parse_access_and_kind() -> None:
    assert parse_access("allow") == "allow" and parse_access("deny") == "deny"
    for bad in ("", "Allow", "permit", None):
        with pytest.raises(ValueError):
            parse_access(bad)  # type: ignore[arg-type]
    assert [parse_kind(k) for k in ("clientid", "username", "all", "$all")] == [
        "clientid",
        "username",
        "all",
        "all",
    ]
    with pytest.raises(ValueError):
        parse_kind("user")


def test_pubsub_is_stored_as_two_rules_with_one_created_at() -> None:
    pub, sub = make_rules("$all", "ignored", "a/#", "subpub", "deny", created_at=1234)
    assert (pub.kind, pub.subject, pub.action, sub.action) == ("all", "$all", "pub", "sub")
    assert pub.created_at == sub.created_at == 1234
    assert pub.key == ("all", "$all", "a/#", "pub")
    assert sub.as_dict() == {
        "all": "$all",
        "topic": "a/#",
        "action": "sub",
        "access": "deny",
        "created_at": 1234,
    }
    (only,) = make_rules("clientid", "c", "t", "pub", "allow")
    assert only.created_at > 1_600_000_000_000  # epoch milliseconds


@pytest.mark.parametrize(
    "args",
    [
        ("clientid", "", "a", "pub", "allow"),
        ("clientid", None, "a", "pub", "allow"),
        ("group", "g", "a", "pub", "allow"),
        ("username", "u", "", "pub", "allow"),
        ("username", "u", "a/#/b", "pub", "allow"),
        ("username", "u", "a+", "pub", "allow"),
        ("username", "u", "a", "read", "allow"),
        ("username", "u", "a", "pubsub", "allow"),  # stored rules are pub or sub
        ("username", "u", "a", "pub", "maybe"),
    ],
)
def test_rule_validation(args: tuple[str, ...]) -> None:
    with pytest.raises(ValueError):
        AclRule(*args)


def test_from_row() -> None:
    row = {
        "kind": "username",
        "subject": "u",
        "topic": "t/#",
        "action": "sub",
        "access": "deny",
        "created_at": 5,
    }
    rule = AclRule.from_row(row)
    assert rule.as_dict() == {
        "username": "u",
        **{k: row[k] for k in row if k not in ("kind", "subject")},
    }


# -- EMQX's order: clientid, username, all; newest first; first match wins ------


def test_deny_all_then_allow_own_topics() -> None:
    """The common EMQX rule set: deny '#', then (newer) allow 'devices/%c/#'."""
    acl = acl_of(cid("dev1", "#", access="deny"), cid("dev1", "devices/%c/#"))
    assert acl.check_publish("dev1", None, "devices/dev1/temp")
    assert acl.check_subscribe("dev1", None, "devices/dev1/#")
    assert not acl.check_publish("dev1", None, "devices/dev2/temp")
    assert not acl.check_publish("dev1", None, "other")
    # the other order: the newer deny comes first and wins
    acl = acl_of(cid("dev1", "devices/%c/#"), cid("dev1", "#", access="deny"))
    assert not acl.check_publish("dev1", None, "devices/dev1/temp")


def test_newest_matching_rule_decides_within_a_group() -> None:
    acl = acl_of(every("a/+", access="deny"), every("+/b"))
    assert acl.check_publish("c", None, "a/b")
    assert not acl.check_publish("c", None, "a/c")
    acl = acl_of(every("+/b"), every("a/+", access="deny"))
    assert not acl.check_publish("c", None, "a/b")


def test_groups_in_order_clientid_username_all() -> None:
    acl = acl_of(cid("c1", "t"), user("u1", "t", access="deny"), every("t", access="deny"))
    assert acl.check_publish("c1", "u1", "t")
    assert not acl.check_publish("c2", "u1", "t")
    acl = acl_of(user("u1", "t"), every("t", access="deny"))
    assert acl.check_publish("c", "u1", "t")
    assert not acl.check_publish("c", "u2", "t")
    assert not acl.check_publish("c", None, "t")
    # an older clientid rule still comes before a newer all-clients rule
    acl = acl_of(cid("c1", "#", access="deny"), every("#"))
    assert not acl.check_publish("c1", None, "x")


def test_group_without_a_matching_rule_falls_through() -> None:
    acl = acl_of(cid("c1", "t"), every("#", access="deny"))
    assert acl.check_publish("c1", None, "t")
    assert not acl.check_publish("c1", None, "other")
    acl = acl_of(cid("c1", "t", action="sub"), every("t", access="deny"))
    assert not acl.check_publish("c1", None, "t")
    assert acl.check_subscribe("c1", None, "t")


def test_replacing_a_rule_makes_it_newest() -> None:
    acl = acl_of(every("a/#", access="deny"), every("a/b"))
    assert acl.check_publish("c", None, "a/b")
    assert acl.put(every("a/#", "pub", "deny")[0]) is True  # replaced, and now newest
    assert not acl.check_publish("c", None, "a/b")
    assert acl.put(every("a/x", "pub", "deny")[0]) is False


def test_pub_and_sub_rules_of_one_topic_are_separate() -> None:
    acl = acl_of(every("t", "pubsub", "deny"))
    acl.put(every("t", "sub", "allow")[0])
    assert acl.check_subscribe("c", None, "t")
    assert not acl.check_publish("c", None, "t")
    assert [(r.action, r.access) for r in acl.rules("all")] == [("sub", "allow"), ("pub", "deny")]


# -- matching -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("rule_topic", "topic", "matches"),
    [
        ("a/b", "a/b", True),
        ("a/+", "a/b", True),
        ("a/#", "a", True),
        ("a/#", "a/b/c", True),
        ("#", "$SYS/x", False),
        ("+/x", "$SYS/x", False),
        ("$SYS/#", "$SYS/x", True),
        ("a/+", "a/b/c", False),
    ],
)
def test_publish_matches_topic_name(rule_topic: str, topic: str, matches: bool) -> None:
    acl = acl_of(every(rule_topic, "pub", "deny"))
    assert acl.check_publish("c", None, topic) is not matches


@pytest.mark.parametrize(
    ("rule_topic", "wanted", "matches"),
    [
        ("#", "#", True),
        ("#", "a/+", True),
        ("a/b", "#", False),  # the requested filter is read as a topic name
        ("a/b", "a/+", False),
        ("a/+", "a/+", True),
        ("a/+", "a/#", True),  # a rule '+' matches any word, '#' included
        ("+", "#", True),
        ("a/#", "a/#", True),
        ("a/b/#", "a/#", False),
        ("#", "$SYS/#", False),
    ],
)
def test_subscribe_reads_the_filter_as_a_name(rule_topic: str, wanted: str, matches: bool) -> None:
    acl = acl_of(every(rule_topic, "sub", "deny"))
    assert acl.check_subscribe("c", None, wanted) is not matches


def test_one_deny_rule_does_not_refuse_every_wildcard_subscription() -> None:
    acl = acl_of(every("test/nosubscribe", "sub", "deny"))
    assert acl.check_subscribe("c", None, "#")
    assert acl.check_subscribe("c", None, "+/#")
    assert not acl.check_subscribe("c", None, "test/nosubscribe")


def test_shared_subscription_checks_the_plain_filter() -> None:
    acl = acl_of(every("a/#", "sub", "deny"))
    assert not acl.check_subscribe("c", None, "$share/g/a/b")
    assert not acl.check_subscribe("c", None, "$queue/a/b")
    assert acl.check_subscribe("c", None, "$share/g/b")
    assert not acl.check_subscribe("c", None, "$share/g")  # malformed


def test_placeholders_are_whole_levels() -> None:
    acl = acl_of(every("#", access="deny"), every("d/%c/#"), every("u/%u"))
    assert acl.check_publish("me", None, "d/me/x")
    assert not acl.check_publish("me", None, "d/you/x")
    assert acl.check_publish("me", "bob", "u/bob")
    assert not acl.check_publish("me", None, "u/bob")  # no username: %u matches nothing
    acl = acl_of(every("#", access="deny"), every("d/x%c"))
    assert not acl.check_publish("me", None, "d/xme")  # EMQX: only whole levels


def test_wildcards_in_a_placeholder_value_never_act_as_wildcards() -> None:
    acl = acl_of(every("d/%c", access="deny"))
    assert acl.check_publish("+", None, "d/x")
    assert acl.check_publish("#", None, "d/x")
    assert not acl.check_publish("ok", None, "d/ok")


def test_nomatch() -> None:
    acl = acl_of(every("a", access="allow"), nomatch="deny")
    assert acl.check_publish("c", None, "a")
    assert not acl.check_publish("c", None, "b")
    acl.nomatch = "allow"
    assert acl.check_publish("c", None, "b")
    with pytest.raises(ValueError):
        acl.nomatch = "maybe"


def test_remove_deletes_every_action_of_the_topic() -> None:
    acl = acl_of(cid("c1", "t", access="deny"), cid("c1", "u", access="deny"))
    assert acl.remove("clientid", "c1", "t") is True
    assert acl.remove("clientid", "c1", "t") is False
    assert [r.topic for r in acl.rules("clientid", "c1")] == ["u", "u"]
    assert acl.check_publish("c1", None, "t")
    assert acl.remove("all", "ignored", "nothing") is False


# -- the cache and the metrics --------------------------------------------------


def test_cache_and_metrics_agree_as_emqx_does() -> None:
    acl = acl_of(every("a", "pub", "deny"))
    m = acl.metrics
    assert not acl.check_publish("c", None, "a")
    assert not acl.check_publish("c", None, "a")
    assert acl.check_publish("c", None, "b")
    assert (m["client.check_acl"], m["client.acl.cache_hit"]) == (2, 1)
    assert (m["client.acl.allow"], m["client.acl.deny"]) == (1, 2)
    acl.put(every("b", "pub", "deny")[0])  # a change drops the cache
    assert not acl.check_publish("c", None, "b")
    assert m["client.check_acl"] == 3


def test_cache_keyed_by_username_and_bounded() -> None:
    acl = Acl(cache_topics=4, cache_clients=2)
    acl.load(user("u1", "t", access="deny"))
    assert not acl.check_publish("c", "u1", "t")
    assert acl.check_publish("c", "u2", "t")
    for i in range(20):
        acl.check_publish(f"c{i}", None, f"t/{i % 7}")
    assert len(acl._cache) <= 2
    assert all(len(c.pub) <= 4 for c in acl._cache.values())


def test_generation_changes_with_every_rule_change() -> None:
    acl = Acl()
    seen = {acl.generation}
    acl.put(every("a", "pub")[0])
    seen.add(acl.generation)
    acl.remove("all", "$all", "a")
    seen.add(acl.generation)
    acl.load([])
    seen.add(acl.generation)
    acl.nomatch = "deny"
    seen.add(acl.generation)
    assert len(seen) == 5


# -- the leak check ------------------------------------------------------------


def test_delivery_check_needed_only_where_a_deny_rule_reaches() -> None:
    acl = acl_of(every("test/nosubscribe", "sub", "deny"), every("x/#", "pub", "deny"))
    assert acl.needs_delivery_check("c", None, "#")
    assert acl.needs_delivery_check("c", None, "test/+")
    assert not acl.needs_delivery_check("c", None, "other/#")
    assert not acl.needs_delivery_check("c", None, "x/#")  # pub rules do not narrow deliveries
    assert not acl.needs_delivery_check("c", None, "$SYS/#")
    assert acl.check_delivery("c", None, "test/other")
    assert not acl.check_delivery("c", None, "test/nosubscribe")


def test_delivery_check_for_placeholders_and_subjects() -> None:
    acl = acl_of(cid("c1", "secret/%c", "sub", "deny"), user("bob", "b/#", "sub", "deny"))
    assert acl.needs_delivery_check("c1", None, "secret/+")
    assert not acl.needs_delivery_check("c2", None, "a/#")
    assert acl.needs_delivery_check("c2", "bob", "#")
    assert not acl.needs_delivery_check("c2", "alice", "#")
    assert not acl.check_delivery("c1", None, "secret/c1")
    assert acl.check_delivery("c1", None, "secret/c2")


def test_delivery_check_with_nomatch_deny() -> None:
    acl = acl_of(every("a/#", "sub"), nomatch="deny")
    assert not acl.needs_delivery_check("c", None, "a/+")  # the allow rule covers it
    assert acl.needs_delivery_check("c", None, "b/#")
    assert Acl("deny").needs_delivery_check("c", None, "x")
    assert not Acl().needs_delivery_check("c", None, "#")


# -- the engine against a plain reading of EMQX's algorithm ---------------------

_LEVELS = st.sampled_from(["a", "b", "+", "#", "%c", "%u", "$x"])


@st.composite
def _filters(draw: st.DrawFn) -> str:
    levels = draw(st.lists(_LEVELS, min_size=1, max_size=3))
    if "#" in levels:
        levels = levels[: levels.index("#") + 1]
    if "$x" in levels[1:]:
        levels = [x for x in levels if x != "$x"] or ["a"]
    return "/".join(levels)


@st.composite
def _names(draw: st.DrawFn) -> str:
    levels = draw(st.lists(st.sampled_from(["a", "b", "me", "bob", "$x", "+", "#"]), min_size=1))
    return "/".join(levels[:3])


def _emqx_match(name: str, rule_filter: str) -> bool:
    """emqx_topic:match/2 word by word, with '+' and '#' in the name as plain words."""
    if name.startswith("$") and rule_filter[0] in "+#":
        return False
    n, f = name.split("/"), rule_filter.split("/")
    while f:
        if f[0] == "#":
            return True
        if not n or (f[0] != "+" and f[0] != n[0]):
            return False
        n, f = n[1:], f[1:]
    return not n


def _reference(
    rules: list[AclRule], client_id: str, username: str | None, name: str, action: str
) -> bool:
    """EMQX 4.4's emqx_acl_mnesia: groups in order, newest first, first match."""

    def feed(topic: str) -> str | None:
        out = []
        for level in topic.split("/"):
            if level == "%c":
                level = client_id
            elif level == "%u":
                if username is None:
                    return None
                level = username
            out.append(level)
        return "/".join(out)

    order = {id(r): i for i, r in enumerate(rules)}
    groups = [
        [r for r in rules if r.kind == "clientid" and r.subject == client_id],
        [r for r in rules if r.kind == "username" and r.subject == username],
        [r for r in rules if r.kind == "all"],
    ]
    for group in groups:
        for rule in sorted(group, key=lambda r: order[id(r)], reverse=True):
            topic = feed(rule.topic)
            if rule.action == action and topic is not None and _emqx_match(name, topic):
                return rule.access == "allow"
    return True


@st.composite
def _rule_lists(draw: st.DrawFn) -> list[AclRule]:
    out: dict[tuple[str, str, str, str], AclRule] = {}
    for _ in range(draw(st.integers(0, 8))):
        kind = draw(st.sampled_from(["clientid", "username", "all"]))
        subject = {"clientid": "me", "username": "bob", "all": None}[kind]
        for rule in make_rules(
            kind,
            subject,
            draw(_filters()),
            draw(st.sampled_from(["pub", "sub", "pubsub"])),
            draw(st.sampled_from(["allow", "deny"])),
        ):
            out.pop(rule.key, None)  # a replaced rule becomes the newest
            out[rule.key] = rule
    return list(out.values())


@settings(max_examples=400, deadline=None)
@given(_rule_lists(), _names(), st.sampled_from([None, "bob"]))
def test_engine_agrees_with_reference(
    rules: list[AclRule], name: str, username: str | None
) -> None:
    acl = Acl()
    acl.load(rules)
    if "+" not in name and "#" not in name:
        assert acl.check_publish("me", username, name) == _reference(
            rules, "me", username, name, "pub"
        )
    assert acl.check_subscribe("me", username, name) == _reference(
        rules, "me", username, name, "sub"
    )


@settings(max_examples=300, deadline=None)
@given(_rule_lists(), _filters(), _names(), st.sampled_from([None, "bob"]))
def test_no_topic_the_client_may_not_subscribe_to_escapes_the_check(
    rules: list[AclRule], wanted: str, topic: str, username: str | None
) -> None:
    """If a delivery would be refused, the subscription is marked for checks."""
    wanted = wanted.replace("%c", "me").replace("%u", "bob")
    if "+" in topic or "#" in topic or not topic_matches(wanted, topic):
        return
    acl = Acl()
    acl.load(rules)
    if not acl.check_delivery("me", username, topic):
        assert acl.needs_delivery_check("me", username, wanted)
        assert filters_intersect(wanted, topic)
