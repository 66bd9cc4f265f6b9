"""ACL semantics of API.md "Access control", one sentence at a time, plus the cache."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ferrymq.access.acl import (
    PUB,
    PUBSUB,
    SUB,
    Acl,
    AclRule,
    parse_access,
    parse_action,
    parse_kind,
)
from ferrymq.protocol.topics import filter_covers, filters_intersect, topic_matches


def cid(subject: str, topic: str, action: str = "pubsub", access: str = "allow") -> AclRule:
    return AclRule("clientid", subject, topic, action, access)


def user(subject: str, topic: str, action: str = "pubsub", access: str = "allow") -> AclRule:
    return AclRule("username", subject, topic, action, access)


def every(topic: str, action: str = "pubsub", access: str = "allow") -> AclRule:
    return AclRule("all", None, topic, action, access)


def acl_of(*rules: AclRule, nomatch: str = "allow") -> Acl:
    acl = Acl(nomatch)
    acl.load(rules)
    return acl


# -- parsing ---------------------------------------------------------------


def test_flags() -> None:
    assert (PUB, SUB, PUBSUB) == (1, 2, 3)


@pytest.mark.parametrize(
    ("text", "action"), [("pub", "pub"), ("sub", "sub"), ("pubsub", "pubsub"), ("subpub", "pubsub")]
)
def test_parse_action(text: str, action: str) -> None:
    assert parse_action(text) == action


@pytest.mark.parametrize("bad", ["", "publish", "PUB", "all", "pub,sub", None, 1])
def test_parse_action_rejects(bad: object) -> None:
    with pytest.raises(ValueError):
        parse_action(bad)  # type: ignore[arg-type]


def test_parse_access() -> None:
    assert parse_access("allow") == "allow"
    assert parse_access("deny") == "deny"
    for bad in ("", "Allow", "permit", None):
        with pytest.raises(ValueError):
            parse_access(bad)  # type: ignore[arg-type]


def test_parse_kind() -> None:
    assert parse_kind("$all") == "all"
    assert [parse_kind(k) for k in ("clientid", "username", "all")] == [
        "clientid",
        "username",
        "all",
    ]
    with pytest.raises(ValueError):
        parse_kind("user")


def test_rule_normalises_subpub_and_all_subject() -> None:
    rule = AclRule("$all", "ignored", "a/#", "subpub", "deny")
    assert (rule.kind, rule.subject, rule.topic, rule.action, rule.access) == (
        "all",
        "$all",
        "a/#",
        "pubsub",
        "deny",
    )
    assert rule.key == ("all", "$all", "a/#")
    assert rule == every("a/#", "pubsub", "deny")
    assert hash(rule) == hash(every("a/#", "pubsub", "deny"))


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
        ("username", "u", "a", "pub", "maybe"),
    ],
)
def test_rule_validation(args: tuple[str, ...]) -> None:
    with pytest.raises(ValueError):
        AclRule(*args)


def test_rule_dict_forms() -> None:
    assert AclRule.from_dict(
        {"clientid": "c1", "topic": "t", "action": "subpub", "access": "deny"}
    ) == cid("c1", "t", "pubsub", "deny")
    assert AclRule.from_dict({"username": "u1", "topic": "t", "action": "pub", "access": "allow"})
    rule = AclRule.from_dict({"topic": "t/#", "action": "sub", "access": "allow"})
    assert rule == every("t/#", "sub")
    assert rule.as_dict() == {"all": "$all", "topic": "t/#", "action": "sub", "access": "allow"}
    assert cid("c1", "t").as_dict()["clientid"] == "c1"
    with pytest.raises(ValueError):
        AclRule.from_dict({"clientid": "c1", "action": "pub", "access": "allow"})


# -- levels: clientid, then username, then all --------------------------------


def test_clientid_level_beats_username_and_all() -> None:
    acl = acl_of(
        cid("c1", "t", access="allow"),
        user("u1", "t", access="deny"),
        every("t", access="deny"),
    )
    assert acl.check_publish("c1", "u1", "t")
    assert acl.check_subscribe("c1", "u1", "t")
    assert not acl.check_publish("c2", "u1", "t")


def test_clientid_deny_beats_lower_level_allow() -> None:
    acl = acl_of(cid("c1", "t", access="deny"), user("u1", "t"), every("t"))
    assert not acl.check_publish("c1", "u1", "t")
    assert acl.check_publish("c2", "u1", "t")


def test_username_level_beats_all() -> None:
    acl = acl_of(user("u1", "t", access="allow"), every("t", access="deny"))
    assert acl.check_publish("c1", "u1", "t")
    assert not acl.check_publish("c1", "u2", "t")
    assert not acl.check_publish("c1", None, "t")
    acl = acl_of(user("u1", "t", access="deny"), every("t", access="allow"))
    assert not acl.check_publish("c1", "u1", "t")
    assert acl.check_publish("c1", "u2", "t")


def test_level_without_a_matching_rule_falls_through() -> None:
    # c1 has rules, but none for "other": the all level decides.
    acl = acl_of(cid("c1", "t"), every("#", access="deny"))
    assert acl.check_publish("c1", None, "t")
    assert not acl.check_publish("c1", None, "other")


def test_rule_with_other_action_does_not_match_so_level_falls_through() -> None:
    acl = acl_of(cid("c1", "t", action="sub", access="allow"), every("t", access="deny"))
    assert not acl.check_publish("c1", None, "t")
    assert acl.check_subscribe("c1", None, "t")


def test_rules_of_other_subjects_are_ignored() -> None:
    acl = acl_of(cid("c1", "t", access="deny"), user("u1", "t", access="deny"))
    assert acl.check_publish("c2", "u2", "t")
    assert acl.check_publish("u1", "c1", "t")


# -- within a level deny beats allow -------------------------------------------


@pytest.mark.parametrize("make", [cid, user, lambda _s, *a, **k: every(*a, **k)])
def test_deny_beats_allow_within_a_level(make) -> None:  # type: ignore[no-untyped-def]
    subject = "c1" if make is cid else "u1"
    acl = acl_of(make(subject, "a/#", access="allow"), make(subject, "a/b", access="deny"))
    assert not acl.check_publish("c1", "u1", "a/b")
    assert acl.check_publish("c1", "u1", "a/c")
    acl = acl_of(make(subject, "a/b", access="allow"), make(subject, "a/#", access="deny"))
    assert not acl.check_publish("c1", "u1", "a/b")


def test_deny_beats_allow_regardless_of_insertion_order() -> None:
    for rules in (
        [every("+/b", access="allow"), every("a/+", access="deny")],
        [every("a/+", access="deny"), every("+/b", access="allow")],
    ):
        acl = acl_of(*rules)
        assert not acl.check_publish("c", None, "a/b")


# -- publish matching ----------------------------------------------------------


@pytest.mark.parametrize(
    ("rule_topic", "topic", "matches"),
    [
        ("a/b", "a/b", True),
        ("a/b", "a/c", False),
        ("a/+", "a/b", True),
        ("a/+", "a/b/c", False),
        ("a/#", "a", True),
        ("a/#", "a/b/c", True),
        ("#", "x/y", True),
        ("+/+", "a/b", True),
        # The $-rule: a leading wildcard does not match a $ topic.
        ("#", "$SYS/broker", False),
        ("+/broker", "$SYS/broker", False),
        ("$SYS/#", "$SYS/broker", True),
        ("$SYS/+", "$SYS/broker", True),
    ],
)
def test_publish_matches_topic_name(rule_topic: str, topic: str, matches: bool) -> None:
    acl = acl_of(every(rule_topic, "pub", "deny"))
    assert acl.check_publish("c", None, topic) is not matches


# -- subscribe matching: allow covers, deny intersects ---------------------------


@pytest.mark.parametrize(
    ("wanted", "allowed"),
    [("a/b", True), ("a/+", True), ("a/#", False), ("a", False), ("a/b/c", False), ("#", False)],
)
def test_subscribe_allow_rule_must_cover(wanted: str, allowed: bool) -> None:
    acl = acl_of(every("a/+", "sub", "allow"), nomatch="deny")
    assert acl.check_subscribe("c", None, wanted) is allowed


@pytest.mark.parametrize(
    ("wanted", "allowed"),
    [
        ("a/b", False),
        ("a/+", False),
        ("a/#", False),
        ("#", False),
        ("+/b", False),
        ("a/c", True),
        ("a/b/c", True),
        ("b/#", True),
        ("$SYS/#", True),
    ],
)
def test_subscribe_deny_rule_matches_when_filters_intersect(wanted: str, allowed: bool) -> None:
    acl = acl_of(every("a/b", "sub", "deny"))
    assert acl.check_subscribe("c", None, wanted) is allowed


def test_subscribe_deny_wildcard_rule_intersects() -> None:
    acl = acl_of(every("+/secret/#", "sub", "deny"))
    assert not acl.check_subscribe("c", None, "#")
    assert not acl.check_subscribe("c", None, "x/+")
    assert not acl.check_subscribe("c", None, "x/secret")
    assert acl.check_subscribe("c", None, "x/public/#")
    assert acl.check_subscribe("c", None, "$SYS/secret/#")


def test_subscribe_no_subscription_receives_a_denied_topic() -> None:
    # allow a/# but deny a/secret in the same level: a/# itself is denied.
    acl = acl_of(every("a/#", "sub"), every("a/secret", "sub", "deny"), nomatch="deny")
    assert not acl.check_subscribe("c", None, "a/#")
    assert not acl.check_subscribe("c", None, "a/+")
    assert acl.check_subscribe("c", None, "a/public")
    assert acl.check_subscribe("c", None, "a/public/#")


def test_subscribe_dollar_topics() -> None:
    acl = acl_of(every("#", "sub"), nomatch="deny")
    assert acl.check_subscribe("c", None, "a/b")
    assert not acl.check_subscribe("c", None, "$SYS/#")
    assert not acl.check_subscribe("c", None, "$SYS/x")
    acl = acl_of(every("$SYS/#", "sub"), nomatch="deny")
    assert acl.check_subscribe("c", None, "$SYS/brokers/+")
    assert not acl.check_subscribe("c", None, "#")


@pytest.mark.parametrize(
    "wanted", ["$share/g/a/b", "$share/group-2/a/+", "$queue/a/b", "$queue/a/+"]
)
def test_shared_subscription_checks_the_plain_filter(wanted: str) -> None:
    acl = acl_of(every("a/+", "sub"), nomatch="deny")
    assert acl.check_subscribe("c", None, wanted)
    acl = acl_of(every("a/b", "sub", "deny"))
    assert not acl.check_subscribe("c", None, wanted)


def test_shared_subscription_outside_the_rule() -> None:
    acl = acl_of(every("a/+", "sub"), nomatch="deny")
    assert not acl.check_subscribe("c", None, "$share/g/a/#")
    assert not acl.check_subscribe("c", None, "$share/a/+/x")


def test_malformed_shared_filter_is_denied() -> None:
    acl = acl_of(every("#", "sub"))
    assert not acl.check_subscribe("c", None, "$share/g")


# -- actions -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("action", "pub", "sub"),
    [("pub", True, False), ("sub", False, True), ("pubsub", True, True), ("subpub", True, True)],
)
def test_action_must_include_the_operation(action: str, pub: bool, sub: bool) -> None:
    acl = acl_of(every("t", action, "deny"))
    assert acl.check_publish("c", None, "t") is not pub
    assert acl.check_subscribe("c", None, "t") is not sub


# -- placeholders ----------------------------------------------------------------


def test_clientid_placeholder() -> None:
    acl = acl_of(every("clients/%c/#", "pubsub"), nomatch="deny")
    assert acl.check_publish("c1", None, "clients/c1/x")
    assert acl.check_publish("c1", None, "clients/c1")
    assert not acl.check_publish("c1", None, "clients/c2/x")
    assert acl.check_subscribe("c1", None, "clients/c1/+")
    assert not acl.check_subscribe("c1", None, "clients/+/x")


def test_username_placeholder() -> None:
    acl = acl_of(every("users/%u/inbox", "sub"), nomatch="deny")
    assert acl.check_subscribe("c1", "bob", "users/bob/inbox")
    assert not acl.check_subscribe("c1", "bob", "users/alice/inbox")


def test_username_placeholder_never_matches_without_username() -> None:
    acl = acl_of(every("users/%u/#", access="allow"), nomatch="deny")
    assert not acl.check_publish("c1", None, "users/%u/x")
    assert not acl.check_publish("c1", None, "users//x")
    acl = acl_of(every("users/%u/#", access="deny"))
    assert acl.check_publish("c1", None, "users/%u/x")
    assert acl.check_subscribe("c1", None, "#")


def test_placeholders_inside_a_level_and_both() -> None:
    acl = acl_of(every("dev-%c/%u-%c", "pub"), nomatch="deny")
    assert acl.check_publish("7", "ann", "dev-7/ann-7")
    assert not acl.check_publish("7", "ann", "dev-7/ann-8")


def test_placeholder_values_are_not_substituted_again() -> None:
    acl = acl_of(every("x/%c/%u", "pub"), nomatch="deny")
    assert acl.check_publish("%u", "bob", "x/%u/bob")
    assert not acl.check_publish("%u", "bob", "x/bob/bob")


def test_wildcards_in_a_placeholder_value_never_act_as_wildcards() -> None:
    acl = acl_of(every("clients/%c/#", "pubsub"), nomatch="deny")
    assert not acl.check_publish("+", None, "clients/other/x")
    assert not acl.check_subscribe("+", None, "clients/other/x")
    assert not acl.check_publish("#", None, "clients/other/x")
    acl = acl_of(every("users/%u", "sub"), nomatch="deny")
    assert not acl.check_subscribe("c", "#", "users/#")


def test_placeholder_rule_on_subject_levels() -> None:
    acl = acl_of(user("bob", "home/%u/#"), user("bob", "#", access="deny"))
    assert not acl.check_publish("c", "bob", "home/bob/x")  # deny beats allow
    acl = acl_of(cid("c1", "home/%c/#"), every("#", access="deny"))
    assert acl.check_publish("c1", None, "home/c1/x")
    assert not acl.check_publish("c1", None, "home/c2/x")


# -- nomatch -----------------------------------------------------------------


def test_nomatch_allow_and_deny() -> None:
    assert Acl().nomatch == "allow"
    for nomatch, expected in (("allow", True), ("deny", False)):
        empty = Acl(nomatch)
        assert empty.check_publish("c", None, "t") is expected
        assert empty.check_subscribe("c", None, "t/#") is expected
        some = acl_of(every("other", access="deny"), nomatch=nomatch)
        assert some.check_publish("c", "u", "t") is expected
        assert some.check_subscribe("c", "u", "t/#") is expected


def test_nomatch_validation_and_change() -> None:
    with pytest.raises(ValueError):
        Acl("maybe")
    acl = acl_of(every("other"))
    assert acl.check_publish("c", None, "t")
    acl.nomatch = "deny"
    assert acl.nomatch == "deny"
    assert not acl.check_publish("c", None, "t")


def test_empty_acl_does_not_touch_the_cache() -> None:
    acl = Acl("deny")
    assert not acl.check_publish("c", None, "t")
    assert not acl.check_subscribe("c", None, "t")
    assert acl._cache == {}


# -- rule management and cache invalidation -----------------------------------


def test_put_replaces_same_key() -> None:
    acl = Acl()
    acl.put(cid("c1", "t", access="allow"))
    acl.put(cid("c1", "t", "sub", access="deny"))
    assert acl.rules() == [cid("c1", "t", "sub", "deny")]
    acl.put(user("c1", "t"))
    acl.put(every("t"))
    assert len(acl.rules()) == 3


def test_rules_listing() -> None:
    acl = acl_of(cid("c1", "a"), cid("c1", "b"), cid("c2", "a"), user("u", "a"), every("a"))
    assert [r.topic for r in acl.rules("clientid", "c1")] == ["a", "b"]
    assert len(acl.rules("clientid")) == 3
    assert acl.rules("username") == [user("u", "a")]
    assert acl.rules("username", "nobody") == []
    assert acl.rules("all") == [every("a")] == acl.rules("$all")
    assert [r.kind for r in acl.rules()] == ["clientid"] * 3 + ["username", "all"]


def test_remove() -> None:
    acl = acl_of(cid("c1", "a"), every("a/#"))
    assert not acl.remove("clientid", "c1", "b")
    assert not acl.remove("clientid", "c9", "a")
    assert not acl.remove("username", "c1", "a")
    assert acl.remove("clientid", "c1", "a")
    assert not acl.remove("clientid", "c1", "a")
    assert acl.remove("$all", "$all", "a/#")
    assert acl.rules() == []


def test_generation_bumps_on_every_change() -> None:
    acl = Acl()
    seen = [acl.generation]
    acl.load([every("a")])
    seen.append(acl.generation)
    acl.put(every("b"))
    seen.append(acl.generation)
    acl.remove("all", "$all", "b")
    seen.append(acl.generation)
    assert seen == sorted(set(seen))
    before = acl.generation
    assert not acl.remove("all", "$all", "zzz")
    assert acl.generation == before


def test_cache_invalidated_by_put() -> None:
    acl = acl_of(every("x"))
    assert acl.check_publish("c", "u", "t")
    assert acl.check_subscribe("c", "u", "t")
    acl.put(every("t", access="deny"))
    assert not acl.check_publish("c", "u", "t")
    assert not acl.check_subscribe("c", "u", "t")
    acl.put(every("t", access="allow"))  # replaces the deny
    assert acl.check_publish("c", "u", "t")


def test_cache_invalidated_by_remove_and_load() -> None:
    acl = acl_of(cid("c", "t", access="deny"))
    assert not acl.check_publish("c", None, "t")
    acl.remove("clientid", "c", "t")
    assert acl.check_publish("c", None, "t")
    acl.load([user("u", "t", access="deny")])
    assert not acl.check_publish("c", "u", "t")
    acl.load([])
    assert acl.check_publish("c", "u", "t")


def test_cache_hit_serves_repeated_checks() -> None:
    acl = acl_of(every("t", access="deny"))
    assert not acl.check_publish("c", None, "t")
    # Poison the cached entry: a second check must come from the cache.
    acl._cache["c"].pub["t"] = True
    assert acl.check_publish("c", None, "t")


def test_cache_keyed_by_username() -> None:
    acl = acl_of(user("bob", "t", access="deny"))
    assert not acl.check_publish("c", "bob", "t")
    # Same client id reconnecting with another username without forget_client.
    assert acl.check_publish("c", "eve", "t")
    assert acl.check_publish("c", None, "t")
    assert not acl.check_publish("c", "bob", "t")


def test_cache_keyed_by_operation() -> None:
    acl = acl_of(every("t", "pub", "deny"))
    assert not acl.check_publish("c", None, "t")
    assert acl.check_subscribe("c", None, "t")
    assert not acl.check_publish("c", None, "t")


def test_forget_client() -> None:
    acl = acl_of(every("t"))
    acl.check_publish("c1", None, "t")
    acl.check_publish("c2", None, "t")
    acl.forget_client("c1")
    acl.forget_client("never-seen")
    assert set(acl._cache) == {"c2"}


def test_cache_is_bounded() -> None:
    acl = Acl(cache_topics=8, cache_clients=4)
    acl.load([every("t/1", access="deny")])
    for i in range(50):
        assert acl.check_publish("c", None, f"t/{i}") is (i != 1)
        assert len(acl._cache["c"].pub) <= 8
    for i in range(50):
        acl.check_subscribe(f"c{i}", None, "t/#")
        assert len(acl._cache) <= 4


# -- model checks: the engine agrees with a direct reading of the rules ----------

PLAIN_LEVELS = st.sampled_from(["a", "b", "", "$s", "+"])


@st.composite
def plain_filters(draw: st.DrawFn) -> str:
    levels = draw(st.lists(PLAIN_LEVELS, min_size=1, max_size=4))
    if draw(st.booleans()):
        levels.append("#")
    joined = "/".join(levels)
    return joined or "a"  # a filter is never empty


@settings(max_examples=1500, deadline=None)
@given(
    rule_topics=st.lists(plain_filters(), min_size=1, max_size=5),
    topic_levels=st.lists(st.sampled_from(["a", "b", "", "$s"]), min_size=1, max_size=5),
    wanted=plain_filters(),
)
def test_one_level_matching_agrees_with_topic_functions(
    rule_topics: list[str], topic_levels: list[str], wanted: str
) -> None:
    topic = "/".join(topic_levels)
    denies = acl_of(*(every(t, access="deny") for t in rule_topics))
    allows = acl_of(*(every(t) for t in rule_topics), nomatch="deny")
    matched = any(topic_matches(t, topic) for t in rule_topics)
    assert denies.check_publish("c", None, topic) is not matched
    assert allows.check_publish("c", None, topic) is matched
    intersects = any(filters_intersect(t, wanted) for t in rule_topics)
    assert denies.check_subscribe("c", None, wanted) is not intersects
    covered = any(filter_covers(t, wanted) for t in rule_topics)
    assert allows.check_subscribe("c", None, wanted) is covered


def test_deny_reaches_parent_level_of_requested_hash() -> None:
    # "+/+/#" matches "a/a" itself, so a deny of "a/a" must refuse it.
    acl = acl_of(every("a/a", "sub", "deny"), every("+", "sub", "deny"))
    assert not acl.check_subscribe("c", None, "+/+/#")
    assert acl.check_subscribe("c", None, "+/+/+/#")


LEVELS = st.sampled_from(["a", "b", "$s", "+", "%c", "%u"])


@st.composite
def filters(draw: st.DrawFn) -> str:
    levels = draw(st.lists(LEVELS, min_size=1, max_size=3))
    if draw(st.booleans()):
        levels.append("#")
    return "/".join(levels)


@st.composite
def rules(draw: st.DrawFn) -> AclRule:
    kind = draw(st.sampled_from(["clientid", "username", "all"]))
    subject = draw(st.sampled_from(["a", "b"]))
    action = draw(st.sampled_from(["pub", "sub", "pubsub"]))
    access = draw(st.sampled_from(["allow", "deny"]))
    return AclRule(kind, subject, draw(filters()), action, access)


def reference(
    rule_list: list[AclRule], nomatch: str, cid_: str, user_: str | None, topic: str, op: int
) -> bool:
    final: dict[tuple[str, str, str], AclRule] = {r.key: r for r in rule_list}
    levels = [("clientid", cid_), ("username", user_), ("all", "$all")]
    for kind, subject in levels:
        found = set()
        for r in final.values():
            if r.kind != kind or r.subject != subject:
                continue
            if not {"pub": PUB, "sub": SUB, "pubsub": PUBSUB}[r.action] & op:
                continue
            if "%u" in r.topic and user_ is None:
                continue
            f = r.topic.replace("%c", cid_).replace("%u", user_ or "")
            if op == PUB:
                hit = topic_matches(f, topic)
            elif r.access == "allow":
                hit = filter_covers(f, topic)
            else:
                hit = filters_intersect(f, topic)
            if hit:
                found.add(r.access)
        if found:
            return "deny" not in found
    return nomatch == "allow"


@settings(max_examples=400, deadline=None)
@given(
    rule_list=st.lists(rules(), max_size=8),
    nomatch=st.sampled_from(["allow", "deny"]),
    client=st.sampled_from(["a", "b"]),
    username=st.sampled_from(["a", "b", None]),
    topic_levels=st.lists(st.sampled_from(["a", "b", "$s"]), min_size=1, max_size=4),
    wanted=filters(),
)
def test_engine_agrees_with_reference(
    rule_list: list[AclRule],
    nomatch: str,
    client: str,
    username: str | None,
    topic_levels: list[str],
    wanted: str,
) -> None:
    acl = acl_of(*rule_list, nomatch=nomatch)
    topic = "/".join(topic_levels)
    # %c/%u are not placeholders in a requested filter: use them as plain text.
    wanted = wanted.replace("%c", "c").replace("%u", "u")
    for _ in range(2):  # second round is served from the cache
        assert acl.check_publish(client, username, topic) == reference(
            rule_list, nomatch, client, username, topic, PUB
        )
        assert acl.check_subscribe(client, username, wanted) == reference(
            rule_list, nomatch, client, username, wanted, SUB
        )
