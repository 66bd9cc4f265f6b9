"""The ACL engine: EMQX 4.4's built-in (mnesia) ACL semantics, plus leak-proof delivery.

Rules kept here, as API.md "Access control" states them:
- a rule belongs to a clientid, a username, or all clients and is keyed by
  (subject, topic, action), where the action is ``pub`` or ``sub``; a
  ``pubsub`` rule is stored as one rule of each, created at the same time;
- candidates are the clientid's rules, then the username's, then the
  all-clients rules, newest first within each group; the first rule whose
  action fits and whose filter matches decides, else ``nomatch``;
- PUBLISH: the rule filter matches the topic name; SUBSCRIBE: the rule filter
  matches the requested (plain) filter read as a topic name, as
  ``emqx_topic:match(Filter, RuleTopic)`` does, so a request ``#`` matches a
  rule ``#`` but not a rule ``a/b``;
- a placeholder level ``%c`` / ``%u`` is replaced by the client id / username
  (whole levels only, as EMQX does). Beyond EMQX, a value containing ``+`` or
  ``#`` makes the rule match nothing rather than turn into a wildcard, and so
  does ``%u`` for a client without a username.

Beyond EMQX, nothing leaks through wildcards: ``needs_delivery_check`` says
whether some topic that a granted subscription can receive would be refused
as a SUBSCRIBE of that topic itself; only then does the broker call
``check_delivery`` per message. ``generation`` changes with every rule change
so the broker can redo that decision lazily.

Decisions are cached per client and topic; the cache is dropped on any rule
change. Within a group, plain rule filters sit in topic tries (``mqtt/trie.py``,
which keeps the ``$`` rule) whose values carry the rule's order number, so one
walk finds the newest matching rule; placeholder rules, which differ per client,
are expanded one at a time and matched with ``mqtt/topics.py``. Not thread-safe:
use it from the event loop.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping
from typing import Any

from ferrymq.mqtt.topics import (
    filters_intersect,
    is_wildcard,
    parse_shared,
    topic_matches,
    validate_topic_filter,
)
from ferrymq.mqtt.trie import TopicTrie

KINDS = ("clientid", "username", "all")
ALL_SUBJECT = "$all"
PUB = "pub"
SUB = "sub"

_ACTIONS = {"pub": "pub", "sub": "sub", "pubsub": "pubsub", "subpub": "pubsub"}
_ACCESS = ("allow", "deny")
_KINDS = {"clientid": "clientid", "username": "username", "all": "all", ALL_SUBJECT: "all"}


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


def now_ms() -> int:
    return int(time.time() * 1000)


class AclRule:
    """One stored rule: action ``pub`` or ``sub``. Treat as immutable.

    ``created_at`` is epoch milliseconds. Raises ValueError for a bad kind,
    subject, action, access or topic filter. Use :func:`make_rules` for an
    action that may be ``pubsub``.
    """

    __slots__ = ("_template", "access", "action", "created_at", "kind", "subject", "topic")

    def __init__(
        self,
        kind: str,
        subject: str | None,
        topic: str,
        action: str,
        access: str,
        created_at: int = 0,
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
        if action not in (PUB, SUB):
            raise ValueError(f"a stored rule's action is pub or sub, not {action!r}")
        self.action = action
        self.access = parse_access(access)
        self.created_at = int(created_at)
        levels = topic.split("/")
        self._template: tuple[str, ...] | None = (
            tuple(levels) if "%c" in levels or "%u" in levels else None
        )

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> AclRule:
        """From a stored row: ``kind, subject, topic, action, access, created_at`` (ms)."""
        return cls(
            row["kind"],
            row["subject"],
            row["topic"],
            row["action"],
            row["access"],
            row.get("created_at", 0),
        )

    @classmethod
    def from_rows(cls, rows: Iterable[Mapping[str, Any]], log: logging.Logger) -> list[AclRule]:
        """The rules of stored rows, in order; a row that is not a valid rule is logged to
        ``log`` and left out (the other rules still apply)."""
        rules = []
        for row in rows:
            try:
                rules.append(cls.from_row(row))
            except ValueError as exc:
                log.warning("ignoring a stored ACL rule %r: %s", row, exc)
        return rules

    def as_dict(self) -> dict[str, Any]:
        """The API form: ``{clientid|username|all, topic, action, access, created_at}``."""
        return {
            self.kind: self.subject,
            "topic": self.topic,
            "action": self.action,
            "access": self.access,
            "created_at": self.created_at,
        }

    @property
    def key(self) -> tuple[str, str, str, str]:
        """(kind, subject, topic, action): a rule with the same key replaces this one."""
        return (self.kind, self.subject, self.topic, self.action)

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


def make_rules(
    kind: str,
    subject: str | None,
    topic: str,
    action: str,
    access: str,
    created_at: int | None = None,
) -> list[AclRule]:
    """The stored rules for one rule as given: two for ``pubsub`` (``sub`` last, so newest)."""
    action = parse_action(action)
    at = now_ms() if created_at is None else created_at
    actions = (PUB, SUB) if action == "pubsub" else (action,)
    return [AclRule(kind, subject, topic, a, access, at) for a in actions]


def _expand(template: tuple[str, ...], client_id: str, username: str | None) -> str | None:
    """Substitute placeholder levels; None when the rule cannot match this client."""
    out = []
    for level in template:
        if level == "%c":
            value = client_id
        elif level == "%u":
            if username is None:
                return None
            value = username
        else:
            out.append(level)
            continue
        if "+" in value or "#" in value:
            return None
        out.append(value)
    return "/".join(out)


# Plain rule filters live in topic tries whose values are (order, allow) of the
# rule ending there, so one walk over the name's levels finds the newest match.
_Hit = tuple[int, bool]


def _newest(hits: list[_Hit], best: _Hit | None) -> _Hit | None:
    """The hit with the highest order (the newest rule) among ``hits`` and ``best``."""
    for hit in hits:
        if best is None or hit[0] > best[0]:
            best = hit
    return best


class _Op:
    """The rules of one group for one action, compiled for matching."""

    __slots__ = ("deny_templates", "deny_trie", "literal", "templates", "trie")

    def __init__(self, rules: list[tuple[int, AclRule]]) -> None:
        self.trie: TopicTrie[_Hit] = TopicTrie()
        self.literal: dict[str, _Hit] = {}
        self.templates: list[tuple[int, bool, tuple[str, ...]]] = []
        self.deny_trie: TopicTrie[_Hit] | None = None
        self.deny_templates: list[tuple[str, ...]] = []
        for order, rule in rules:
            allow = rule.access == "allow"
            if rule._template is not None:
                self.templates.append((order, allow, rule._template))
                if not allow:
                    self.deny_templates.append(rule._template)
                continue
            if is_wildcard(rule.topic):
                self.trie.insert(rule.topic, (order, allow))
            else:
                self.literal[rule.topic] = (order, allow)
            if not allow:
                if self.deny_trie is None:
                    self.deny_trie = TopicTrie()
                self.deny_trie.insert(rule.topic, (order, allow))

    def best(self, client_id: str, username: str | None, name: str) -> _Hit | None:
        """The newest rule matching ``name``; a requested filter's ``+`` and ``#`` are
        plain words here, so they match a rule's ``+`` (any word) or the same word."""
        best = self.literal.get(name)
        if self.trie:
            best = _newest(self.trie.filters_matching(name.split("/")), best)
        for order, allow, template in self.templates:
            if best is not None and best[0] > order:
                continue
            expanded = _expand(template, client_id, username)
            if expanded is not None and topic_matches(expanded, name):
                best = (order, allow)
        return best

    def deny_intersects(self, client_id: str, username: str | None, plain: str) -> bool:
        if self.deny_trie is not None and self.deny_trie.intersects(plain):
            return True
        for template in self.deny_templates:
            expanded = _expand(template, client_id, username)
            if expanded is not None and filters_intersect(expanded, plain):
                return True
        return False


class _Group:
    """The rules of one subject (or of all clients); compiled lazily."""

    __slots__ = ("ops", "rules")

    def __init__(self) -> None:
        # (topic, action) -> (order, rule); a higher order is newer.
        self.rules: dict[tuple[str, str], tuple[int, AclRule]] = {}
        self.ops: dict[str, _Op] | None = None

    def op(self, action: str) -> _Op:
        ops = self.ops
        if ops is None:
            ops = self.ops = {
                a: _Op([(o, r) for o, r in self.rules.values() if r.action == a])
                for a in (PUB, SUB)
            }
        return ops[action]

    def newest_first(self) -> list[AclRule]:
        return [r for _o, r in sorted(self.rules.values(), key=lambda x: x[0], reverse=True)]


class _ClientCache:
    __slots__ = ("deliver", "pub", "sub", "username")

    def __init__(self, username: str | None) -> None:
        self.username = username
        self.pub: dict[str, bool] = {}
        self.sub: dict[str, bool] = {}
        self.deliver: dict[str, bool] = {}


class Acl:
    """ACL rules plus the decision cache used on every PUBLISH and SUBSCRIBE.

    ``metrics`` (a dict of counters, optional) receives EMQX's
    ``client.check_acl`` (decisions made), ``client.acl.cache_hit`` (decisions
    taken from the cache) and ``client.acl.allow`` / ``client.acl.deny`` (both
    kinds) for PUBLISH and SUBSCRIBE checks. ``cache_topics`` bounds each
    client's cache (per operation) and ``cache_clients`` the number of cached
    clients; a full cache is cleared. Call ``forget_client`` on disconnect.
    """

    def __init__(
        self,
        nomatch: str = "allow",
        *,
        metrics: dict[str, int] | None = None,
        cache_topics: int = 1024,
        cache_clients: int = 100_000,
    ) -> None:
        self._nomatch = parse_access(nomatch) == "allow"
        self.metrics = metrics if metrics is not None else dict.fromkeys(_METRICS, 0)
        self._cache_topics = cache_topics
        self._cache_clients = cache_clients
        self._clientid: dict[str, _Group] = {}
        self._username: dict[str, _Group] = {}
        self._all = _Group()
        self._cache: dict[str, _ClientCache] = {}
        self._order = 0
        self._empty = True
        #: No rule at all and ``allow`` when none matches: every publish is allowed, which
        #: the broker's message path tests without calling ``check_publish`` and counts
        #: with ``count_open`` once per read.
        self.allows_all = self._nomatch
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
        """Replace every rule; ``rules`` come oldest first (a later one with a key wins)."""
        self._clientid = {}
        self._username = {}
        self._all = _Group()
        for rule in rules:
            self._add(rule)
        self._changed()

    def put(self, rule: AclRule) -> bool:
        """Add ``rule`` as the newest; True when it replaced one with the same key."""
        replaced = self._add(rule)
        self._changed()
        return replaced

    def _add(self, rule: AclRule) -> bool:
        group = self._group_for(rule.kind, rule.subject)
        key = (rule.topic, rule.action)
        replaced = group.rules.pop(key, None) is not None
        self._order += 1
        group.rules[key] = (self._order, rule)
        group.ops = None
        return replaced

    def remove(self, kind: str, subject: str, topic: str) -> bool:
        """Delete the rules of a subject for ``topic`` (every action), as EMQX does.

        False when there is none. For ``all`` the subject is ignored.
        """
        kind = parse_kind(kind)
        if kind == "all":
            group: _Group | None = self._all
        else:
            group = self._table(kind).get(subject)
        if group is None:
            return False
        keys = [k for k in group.rules if k[0] == topic]
        for k in keys:
            del group.rules[k]
        if not keys:
            return False
        group.ops = None
        if kind != "all" and not group.rules:
            del self._table(kind)[subject]
        self._changed()
        return True

    def rules(self, kind: str | None = None, subject: str | None = None) -> list[AclRule]:
        """Rules of every kind, of one kind, or of one subject; newest first per subject."""
        kinds = KINDS if kind is None else (parse_kind(kind),)
        out: list[AclRule] = []
        for k in kinds:
            if k == "all":
                out.extend(self._all.newest_first())
                continue
            table = self._table(k)
            if subject is None:
                for group in table.values():
                    out.extend(group.newest_first())
            elif subject in table:
                out.extend(table[subject].newest_first())
        return out

    def _table(self, kind: str) -> dict[str, _Group]:
        return self._clientid if kind == "clientid" else self._username

    def _group_for(self, kind: str, subject: str) -> _Group:
        if kind == "all":
            return self._all
        table = self._table(kind)
        group = table.get(subject)
        if group is None:
            group = table[subject] = _Group()
        return group

    def _changed(self) -> None:
        self.generation += 1
        self._cache = {}
        self._empty = not (self._clientid or self._username or self._all.rules)
        self.allows_all = self._empty and self._nomatch

    # -- checks ----------------------------------------------------------

    def check_publish(self, client_id: str, username: str | None, topic: str) -> bool:
        """May this client publish to ``topic``? (Runs on every PUBLISH: cache first.)"""
        metrics = self.metrics
        if self._empty:
            metrics["client.check_acl"] += 1
            decision = self._nomatch
        else:
            cache = self._cache.get(client_id)
            if cache is not None and cache.username == username:
                hit = cache.pub.get(topic)
                if hit is not None:
                    metrics["client.acl.cache_hit"] += 1
                    metrics["client.acl.allow" if hit else "client.acl.deny"] += 1
                    return hit
            cache = self._cache_of(client_id, username)
            metrics["client.check_acl"] += 1
            decision = self._decide(client_id, username, topic, PUB)
            _remember(cache.pub, topic, decision, self._cache_topics)
        metrics["client.acl.allow" if decision else "client.acl.deny"] += 1
        return decision

    def count_open(self, count: int) -> None:
        """Count ``count`` publish checks answered by ``allows_all``, as ``check_publish``
        counts them."""
        metrics = self.metrics
        metrics["client.check_acl"] += count
        metrics["client.acl.allow"] += count

    def check_subscribe(self, client_id: str, username: str | None, topic_filter: str) -> bool:
        """May this client subscribe to ``topic_filter`` (shared filters allowed)?"""
        metrics = self.metrics
        if self._empty:
            metrics["client.check_acl"] += 1
            decision = self._nomatch
        else:
            cache = self._cache_of(client_id, username)
            hit = cache.sub.get(topic_filter)
            if hit is not None:
                metrics["client.acl.cache_hit"] += 1
                decision = hit
            else:
                metrics["client.check_acl"] += 1
                try:
                    _group, plain = parse_shared(topic_filter)
                except ValueError:
                    plain = None
                decision = plain is not None and self._decide(client_id, username, plain, SUB)
                _remember(cache.sub, topic_filter, decision, self._cache_topics)
        metrics["client.acl.allow" if decision else "client.acl.deny"] += 1
        return decision

    def needs_delivery_check(self, client_id: str, username: str | None, plain: str) -> bool:
        """Could the plain filter ``plain`` match a topic this client may not subscribe to?

        True when a deny rule for SUBSCRIBE that applies to the client can
        match such a topic, or when ``nomatch`` is deny and no allow rule
        covers the filter (a granted filter's allow rule matches every topic
        under it, so then only deny rules ahead of it can refuse one).
        """
        if self._empty:
            return not self._nomatch
        for group in self._groups(client_id, username):
            if group.rules and group.op(SUB).deny_intersects(client_id, username, plain):
                return True
        return not self._nomatch and not self._decide(client_id, username, plain, SUB)

    def check_delivery(self, client_id: str, username: str | None, topic: str) -> bool:
        """May a message on ``topic`` go to this client: would a SUBSCRIBE to it be granted?"""
        if self._empty:
            return self._nomatch
        cache = self._cache.get(client_id)
        if cache is not None and cache.username == username:
            hit = cache.deliver.get(topic)
            if hit is not None:
                return hit
        cache = self._cache_of(client_id, username)
        decision = self._decide(client_id, username, topic, SUB)
        _remember(cache.deliver, topic, decision, self._cache_topics)
        return decision

    def forget_client(self, client_id: str) -> None:
        """Drop the cached decisions of a client (on disconnect)."""
        self._cache.pop(client_id, None)

    def cached(self, client_id: str) -> list[tuple[str, str, bool]]:
        """The cached PUBLISH / SUBSCRIBE decisions of a client: (publish | subscribe, topic,
        allowed)."""
        cache = self._cache.get(client_id)
        if cache is None:
            return []
        return [("publish", t, d) for t, d in cache.pub.items()] + [
            ("subscribe", t, d) for t, d in cache.sub.items()
        ]

    def _cache_of(self, client_id: str, username: str | None) -> _ClientCache:
        cache = self._cache.get(client_id)
        if cache is None or cache.username != username:
            if len(self._cache) >= self._cache_clients:
                self._cache.clear()
            cache = self._cache[client_id] = _ClientCache(username)
        return cache

    def _groups(self, client_id: str, username: str | None) -> list[_Group]:
        groups = []
        group = self._clientid.get(client_id)
        if group is not None:
            groups.append(group)
        if username is not None:
            group = self._username.get(username)
            if group is not None:
                groups.append(group)
        groups.append(self._all)
        return groups

    def _decide(self, client_id: str, username: str | None, name: str, action: str) -> bool:
        for group in self._groups(client_id, username):
            if not group.rules:
                continue
            hit = group.op(action).best(client_id, username, name)
            if hit is not None:
                return hit[1]
        return self._nomatch


_METRICS = ("client.check_acl", "client.acl.cache_hit", "client.acl.allow", "client.acl.deny")


def _remember(cache: dict[str, bool], key: str, decision: bool, limit: int) -> None:
    if len(cache) >= limit:
        cache.clear()
    cache[key] = decision
