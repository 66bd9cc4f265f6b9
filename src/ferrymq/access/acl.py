"""The ACL engine: rules of API.md "Access control" and a per-client decision cache.

Rules kept here:
- a rule belongs to a clientid, a username, or all clients; its topic is a topic
  filter that may contain the placeholders ``%c`` (client id) and ``%u``
  (username); a rule using ``%u`` never matches a client without a username;
- levels are checked in the order clientid, username, all; the first level with
  a matching rule decides, and inside a level a matching deny beats an allow;
- PUBLISH: a rule matches when its filter matches the topic name;
- SUBSCRIBE (the plain filter inside ``$share/g/...`` / ``$queue/...``): an allow
  rule matches when its filter covers the requested filter, a deny rule when the
  two filters intersect, so no subscription can receive a denied topic;
- a rule's action must include the operation; no matching rule: ``nomatch``.

A placeholder is replaced by the value as text. A value containing ``+`` or
``#`` cannot be part of any topic name, so a rule expanding to such a value
matches nothing (and never turns into a wildcard).

Checks run on every PUBLISH, so decisions are cached per client and topic and
the whole cache is dropped on any rule change (``generation`` counts changes).
Rules are indexed by subject; a check only looks at the client's own rules and
the all-clients rules. Within a level, rule filters sit in tries walked once
per check; only placeholder rules, which differ per client, are expanded and
tested one by one. Not thread-safe: use it from the event loop.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from ferrymq.protocol.topics import (
    filter_covers,
    filters_intersect,
    is_wildcard,
    parse_shared,
    topic_matches,
    validate_topic_filter,
)

PUB = 1
SUB = 2
PUBSUB = PUB | SUB

KINDS = ("clientid", "username", "all")
ALL_SUBJECT = "$all"

_ACTIONS = {"pub": "pub", "sub": "sub", "pubsub": "pubsub", "subpub": "pubsub"}
_ACTION_OPS = {"pub": PUB, "sub": SUB, "pubsub": PUBSUB}
_ACCESS = ("allow", "deny")
_KINDS = {"clientid": "clientid", "username": "username", "all": "all", ALL_SUBJECT: "all"}
_PLACEHOLDER = re.compile(r"(%[cu])")


def parse_action(s: str) -> str:
    """Normalise an action: ``pub``, ``sub``, ``pubsub`` (or its synonym ``subpub``)."""
    action = _ACTIONS.get(s) if isinstance(s, str) else None
    if action is None:
        raise ValueError(f"action must be pub, sub or pubsub, not {s!r}")
    return action


def parse_access(s: str) -> str:
    """Check an access value: ``allow`` or ``deny``."""
    if not isinstance(s, str) or s not in _ACCESS:
        raise ValueError(f"access must be allow or deny, not {s!r}")
    return s


def parse_kind(s: str) -> str:
    """Normalise a rule kind: ``clientid``, ``username`` or ``all`` (also ``$all``)."""
    kind = _KINDS.get(s) if isinstance(s, str) else None
    if kind is None:
        raise ValueError(f"rule kind must be clientid, username or all, not {s!r}")
    return kind


class AclRule:
    """One rule. Treat as immutable: matching data is derived at construction.

    ``kind`` is ``clientid``, ``username`` or ``all``; for ``all`` the subject is
    always ``$all``. Raises ValueError for a bad kind, subject, action, access or
    topic filter.
    """

    __slots__ = ("_ops", "_template", "access", "action", "kind", "subject", "topic")

    def __init__(
        self, kind: str, subject: str | None, topic: str, action: str, access: str
    ) -> None:
        self.kind = parse_kind(kind)
        if self.kind == "all":
            subject = ALL_SUBJECT
        elif not isinstance(subject, str) or not subject:
            raise ValueError(f"a {self.kind} rule needs a non-empty {self.kind}")
        self.subject: str = subject
        if not isinstance(topic, str):
            raise ValueError("topic must be a string")
        validate_topic_filter(topic)
        self.topic = topic
        self.action = parse_action(action)
        self.access = parse_access(access)
        self._ops = _ACTION_OPS[self.action]
        parts = _PLACEHOLDER.split(topic)
        self._template: tuple[str, ...] | None = tuple(parts) if len(parts) > 1 else None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AclRule:
        """Build from an API object: ``clientid`` or ``username`` or neither (all)."""
        if "clientid" in data:
            kind, subject = "clientid", data["clientid"]
        elif "username" in data:
            kind, subject = "username", data["username"]
        else:
            kind, subject = "all", ALL_SUBJECT
        return cls(kind, subject, data.get("topic"), data.get("action"), data.get("access"))

    def as_dict(self) -> dict[str, str]:
        """The API form: ``{clientid|username|all: subject, topic, action, access}``."""
        return {
            self.kind: self.subject,
            "topic": self.topic,
            "action": self.action,
            "access": self.access,
        }

    @property
    def key(self) -> tuple[str, str, str]:
        """(kind, subject, topic): a rule with the same key replaces this one."""
        return (self.kind, self.subject, self.topic)

    def _fields(self) -> tuple[str, str, str, str, str]:
        return (self.kind, self.subject, self.topic, self.action, self.access)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, AclRule):
            return NotImplemented
        return self._fields() == other._fields()

    def __hash__(self) -> int:
        return hash(self._fields())

    def __repr__(self) -> str:
        return (
            f"AclRule({self.kind!r}, {self.subject!r}, {self.topic!r}, "
            f"{self.action!r}, {self.access!r})"
        )


def _expand(template: tuple[str, ...], client_id: str, username: str | None) -> str | None:
    """Substitute placeholders; None when the rule cannot match this client."""
    out = []
    for part in template:
        if part == "%c":
            value = client_id
        elif part == "%u":
            if username is None:
                return None
            value = username
        else:
            out.append(part)
            continue
        if "+" in value or "#" in value:
            return None
        out.append(value)
    return "".join(out)


# Rule filters without placeholders live in tries: each node maps a level to
# the next node and the key None marks the end of a filter, so a check walks
# the topic (or the requested filter) once instead of testing every rule. Rules
# with placeholders depend on the client and are expanded one at a time.
_Trie = dict[str | None, "_Trie"]


def _trie_add(root: _Trie, topic_filter: str) -> None:
    node = root
    for level in topic_filter.split("/"):
        node = node.setdefault(level, {})
    node[None] = {}


def _trie_matches(root: _Trie, levels: list[str]) -> bool:
    """True when a filter in the trie matches the topic name split into ``levels``."""
    n = len(levels)
    # A leading wildcard never matches a $ topic: skip the root "+" and "#".
    dollar = levels[0].startswith("$")
    stack = [(root, 0)]
    while stack:
        node, i = stack.pop()
        wild_ok = not (dollar and i == 0)
        if wild_ok and "#" in node:
            return True
        if i == n:
            if None in node:
                return True
            continue
        child = node.get(levels[i])
        if child is not None:
            stack.append((child, i + 1))
        if wild_ok:
            child = node.get("+")
            if child is not None:
                stack.append((child, i + 1))
    return False


def _trie_covers(root: _Trie, levels: list[str]) -> bool:
    """True when a filter in the trie covers the requested filter (``filter_covers``)."""
    n = len(levels)
    dollar = levels[0].startswith("$")
    stack = [(root, 0)]
    while stack:
        node, i = stack.pop()
        wild_ok = not (dollar and i == 0)
        if wild_ok and "#" in node:
            return True
        if i == n:
            if None in node:
                return True
            continue
        level = levels[i]
        if level == "#":
            continue  # only a rule "#" covers a requested "#"
        if wild_ok:
            child = node.get("+")
            if child is not None:
                stack.append((child, i + 1))
        if level != "+":
            child = node.get(level)
            if child is not None:
                stack.append((child, i + 1))
    return False


def _trie_intersects(root: _Trie, levels: list[str]) -> bool:
    """True when a filter in the trie can match a topic the requested filter matches."""
    n = len(levels)
    dollar = levels[0].startswith("$")
    stack = [(root, 0)]
    while stack:
        node, i = stack.pop()
        at_root = i == 0
        if "#" in node and not (at_root and dollar):
            return True
        if i == n:
            if None in node:
                return True
            continue
        level = levels[i]
        # A requested wildcard meets every rule going on from here, except that
        # at the root it never meets a rule starting with "$".
        if level == "#":
            # Reaching a node means some rule ends here or goes on.
            if not at_root or any(k is not None and not k.startswith("$") for k in node):
                return True
            continue
        if level == "+":
            for key, child in node.items():
                if key is not None and not (at_root and key.startswith("$")):
                    stack.append((child, i + 1))
            continue
        child = node.get(level)
        if child is not None:
            stack.append((child, i + 1))
        if not (at_root and dollar):
            child = node.get("+")
            if child is not None:
                stack.append((child, i + 1))
    return False


def _any_template(
    templates: tuple[tuple[str, ...], ...],
    client_id: str,
    username: str | None,
    test: Callable[[str, str], bool],
    arg: str,
) -> bool:
    """True when some placeholder rule, expanded for this client, passes ``test``."""
    for template in templates:
        filt = _expand(template, client_id, username)
        if filt is not None and test(filt, arg):
            return True
    return False


class _Level:
    """The rules of one subject (or of all clients), compiled lazily for matching.

    Per operation and access: a trie of the plain filters (publish keeps its
    literal topics in a set, a faster exact lookup) and the placeholder rules.
    """

    __slots__ = (
        "dirty",
        "pub_allow",
        "pub_allow_lit",
        "pub_allow_tpl",
        "pub_deny",
        "pub_deny_lit",
        "pub_deny_tpl",
        "rules",
        "sub_allow",
        "sub_allow_tpl",
        "sub_deny",
        "sub_deny_tpl",
    )

    def __init__(self) -> None:
        self.rules: dict[str, AclRule] = {}
        self.dirty = True

    def compile(self) -> None:
        tries: dict[tuple[int, str], _Trie] = {}
        literals: dict[str, set[str]] = {"allow": set(), "deny": set()}
        templates: dict[tuple[int, str], list[tuple[str, ...]]] = {}
        for op in (PUB, SUB):
            for access in _ACCESS:
                tries[op, access] = {}
                templates[op, access] = []
        for rule in self.rules.values():
            for op in (PUB, SUB):
                if not rule._ops & op:
                    continue
                if rule._template is not None:
                    templates[op, rule.access].append(rule._template)
                elif op == PUB and not is_wildcard(rule.topic):
                    literals[rule.access].add(rule.topic)
                else:
                    _trie_add(tries[op, rule.access], rule.topic)
        self.pub_allow = tries[PUB, "allow"] or None
        self.pub_deny = tries[PUB, "deny"] or None
        self.sub_allow = tries[SUB, "allow"] or None
        self.sub_deny = tries[SUB, "deny"] or None
        self.pub_allow_lit = frozenset(literals["allow"])
        self.pub_deny_lit = frozenset(literals["deny"])
        self.pub_allow_tpl = tuple(templates[PUB, "allow"])
        self.pub_deny_tpl = tuple(templates[PUB, "deny"])
        self.sub_allow_tpl = tuple(templates[SUB, "allow"])
        self.sub_deny_tpl = tuple(templates[SUB, "deny"])
        self.dirty = False

    def publish(self, client_id: str, username: str | None, topic: str) -> bool | None:
        """False/True when a deny/allow rule of this level matches, else None."""
        if self.dirty:
            self.compile()
        if topic in self.pub_deny_lit:
            return False
        levels = topic.split("/")
        if self.pub_deny is not None and _trie_matches(self.pub_deny, levels):
            return False
        if self.pub_deny_tpl and _any_template(
            self.pub_deny_tpl, client_id, username, topic_matches, topic
        ):
            return False
        if topic in self.pub_allow_lit:
            return True
        if self.pub_allow is not None and _trie_matches(self.pub_allow, levels):
            return True
        if self.pub_allow_tpl and _any_template(
            self.pub_allow_tpl, client_id, username, topic_matches, topic
        ):
            return True
        return None

    def subscribe(self, client_id: str, username: str | None, wanted: str) -> bool | None:
        """Like ``publish`` for a plain (non-shared) requested filter."""
        if self.dirty:
            self.compile()
        levels = wanted.split("/")
        if self.sub_deny is not None and _trie_intersects(self.sub_deny, levels):
            return False
        if self.sub_deny_tpl and _any_template(
            self.sub_deny_tpl, client_id, username, filters_intersect, wanted
        ):
            return False
        if self.sub_allow is not None and _trie_covers(self.sub_allow, levels):
            return True
        if self.sub_allow_tpl and _any_template(
            self.sub_allow_tpl, client_id, username, filter_covers, wanted
        ):
            return True
        return None


class _ClientCache:
    __slots__ = ("pub", "sub", "username")

    def __init__(self, username: str | None) -> None:
        self.username = username
        self.pub: dict[str, bool] = {}
        self.sub: dict[str, bool] = {}


class Acl:
    """ACL rules plus the decision cache used on every PUBLISH and SUBSCRIBE.

    ``cache_topics`` bounds each client's cache (per operation) and
    ``cache_clients`` the number of cached clients; a full cache is cleared.
    Call ``forget_client`` when a client disconnects.
    """

    def __init__(
        self, nomatch: str = "allow", *, cache_topics: int = 1024, cache_clients: int = 100_000
    ) -> None:
        self._nomatch = parse_access(nomatch) == "allow"
        self._cache_topics = cache_topics
        self._cache_clients = cache_clients
        self._clientid: dict[str, _Level] = {}
        self._username: dict[str, _Level] = {}
        self._all = _Level()
        self._cache: dict[str, _ClientCache] = {}
        self._empty = True
        self.generation = 0

    @property
    def nomatch(self) -> str:
        """The decision when no rule matches: ``allow`` or ``deny``."""
        return "allow" if self._nomatch else "deny"

    @nomatch.setter
    def nomatch(self, value: str) -> None:
        self._nomatch = parse_access(value) == "allow"
        self._changed()

    # -- rule management -------------------------------------------------

    def load(self, rules: Iterable[AclRule]) -> None:
        """Replace every rule (later duplicates of a key win)."""
        self._clientid = {}
        self._username = {}
        self._all = _Level()
        for rule in rules:
            self._level_for(rule.kind, rule.subject).rules[rule.topic] = rule
        self._changed()

    def put(self, rule: AclRule) -> None:
        """Add ``rule``, replacing the rule with the same (kind, subject, topic)."""
        level = self._level_for(rule.kind, rule.subject)
        level.rules[rule.topic] = rule
        level.dirty = True
        self._changed()

    def remove(self, kind: str, subject: str, topic: str) -> bool:
        """Delete one rule; False when it does not exist. For ``all`` the subject is ignored."""
        kind = parse_kind(kind)
        if kind == "all":
            removed = self._all.rules.pop(topic, None) is not None
            self._all.dirty = True
        else:
            table = self._clientid if kind == "clientid" else self._username
            level = table.get(subject)
            removed = level is not None and level.rules.pop(topic, None) is not None
            if removed and level is not None:
                level.dirty = True
                if not level.rules:
                    del table[subject]
        if removed:
            self._changed()
        return removed

    def rules(self, kind: str | None = None, subject: str | None = None) -> list[AclRule]:
        """Rules of every kind, of one kind, or of one subject of a kind."""
        if kind is None:
            kinds: tuple[str, ...] = KINDS
        else:
            kinds = (parse_kind(kind),)
        out: list[AclRule] = []
        for k in kinds:
            if k == "all":
                out.extend(self._all.rules.values())
                continue
            table = self._clientid if k == "clientid" else self._username
            if subject is None:
                for level in table.values():
                    out.extend(level.rules.values())
            elif subject in table:
                out.extend(table[subject].rules.values())
        return out

    def _level_for(self, kind: str, subject: str) -> _Level:
        """The level holding rules of (kind, subject), created on demand."""
        if kind == "all":
            return self._all
        table = self._clientid if kind == "clientid" else self._username
        level = table.get(subject)
        if level is None:
            level = table[subject] = _Level()
        return level

    def _changed(self) -> None:
        self.generation += 1
        self._cache = {}
        self._empty = not (self._clientid or self._username or self._all.rules)

    # -- checks ----------------------------------------------------------

    def check_publish(self, client_id: str, username: str | None, topic: str) -> bool:
        """May this client publish to ``topic``?"""
        if self._empty:
            return self._nomatch
        cache = self._cache.get(client_id)
        if cache is None or cache.username != username:
            cache = self._new_cache(client_id, username)
        else:
            hit = cache.pub.get(topic)
            if hit is not None:
                return hit
        decision = self._decide(client_id, username, topic, PUB)
        pub = cache.pub
        if len(pub) >= self._cache_topics:
            pub.clear()
        pub[topic] = decision
        return decision

    def check_subscribe(self, client_id: str, username: str | None, topic_filter: str) -> bool:
        """May this client subscribe to ``topic_filter`` (shared filters allowed)?"""
        if self._empty:
            return self._nomatch
        cache = self._cache.get(client_id)
        if cache is None or cache.username != username:
            cache = self._new_cache(client_id, username)
        else:
            hit = cache.sub.get(topic_filter)
            if hit is not None:
                return hit
        try:
            _group, plain = parse_shared(topic_filter)
        except ValueError:
            return False
        decision = self._decide(client_id, username, plain, SUB)
        sub = cache.sub
        if len(sub) >= self._cache_topics:
            sub.clear()
        sub[topic_filter] = decision
        return decision

    def forget_client(self, client_id: str) -> None:
        """Drop the cached decisions of a client (on disconnect)."""
        self._cache.pop(client_id, None)

    def cached(self, client_id: str) -> list[tuple[str, str, bool]]:
        """The cached decisions of a client as (publish | subscribe, topic, allowed)."""
        cache = self._cache.get(client_id)
        if cache is None:
            return []
        return [("publish", t, d) for t, d in cache.pub.items()] + [
            ("subscribe", t, d) for t, d in cache.sub.items()
        ]

    def _new_cache(self, client_id: str, username: str | None) -> _ClientCache:
        if len(self._cache) >= self._cache_clients:
            self._cache.clear()
        cache = self._cache[client_id] = _ClientCache(username)
        return cache

    def _decide(self, client_id: str, username: str | None, topic: str, op: int) -> bool:
        levels = [self._clientid.get(client_id)]
        if username is not None:
            levels.append(self._username.get(username))
        levels.append(self._all)
        for level in levels:
            if level is None:
                continue
            if op == PUB:
                decision = level.publish(client_id, username, topic)
            else:
                decision = level.subscribe(client_id, username, topic)
            if decision is not None:
                return decision
        return self._nomatch
