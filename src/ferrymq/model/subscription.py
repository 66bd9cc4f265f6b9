"""One session's subscription to one topic filter, as the router stores it."""

from __future__ import annotations

from ferrymq.mqtt.topics import parse_shared


class Subscription:
    """One subscription of one session.

    ``topic_filter`` is the filter as the client sent it (``$share/g/a/b``,
    ``$queue/a/b`` or ``a/b``); ``filter`` is the plain filter the router
    matches (``a/b``) and ``share_group`` the shared group (``"g"``,
    ``"$queue"``) or None. ``acl_admin`` marks a subscription made by an
    administrator (the ACL does not apply to it). ``session`` belongs to the broker core; the router
    never looks at it.
    """

    __slots__ = (
        "acl_admin",
        "acl_gen",
        "client_id",
        "filter",
        "identifier",
        "ids",
        "no_local",
        "qos",
        "retain_as_published",
        "retain_handling",
        "session",
        "share_group",
        "topic_filter",
    )

    def __init__(
        self,
        client_id: str,
        session: object,
        topic_filter: str,
        qos: int = 0,
        *,
        no_local: bool = False,
        retain_as_published: bool = False,
        retain_handling: int = 0,
        identifier: int | None = None,
        acl_admin: bool = False,
    ) -> None:
        self.client_id = client_id
        self.session = session
        self.topic_filter = topic_filter
        self.share_group, self.filter = parse_shared(topic_filter)
        self.qos = qos
        self.no_local = no_local
        self.retain_as_published = retain_as_published
        self.retain_handling = retain_handling
        self.identifier = identifier
        # Per-message ACL check state, kept by Broker.acl_guard: -1 undecided.
        self.acl_gen = -1
        self.acl_admin = acl_admin
        self.ids = (identifier,) if identifier else None  # as a delivery carries them

    # What the broker delivers to the client's own messages under no local (see
    # router.Overlap): nothing.
    local = None

    def __repr__(self) -> str:
        return (
            f"Subscription(client_id={self.client_id!r}, topic_filter={self.topic_filter!r}, "
            f"qos={self.qos})"
        )
