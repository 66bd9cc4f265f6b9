"""Bans: client ids, usernames and peer addresses refused at CONNECT until a deadline.

The list lives in memory (the store keeps it durable, the API changes it);
checking a CONNECT is at most three dict look-ups, none while the list is
empty. A ban past its ``until`` stops applying at once and is dropped by the
broker's housekeeping.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ferrymq.core.broker import Broker

KINDS = ("clientid", "username", "peerhost")
DEFAULT_SECONDS = 300  # EMQX 4.4: a ban without ``until`` lasts five minutes


def normalize_peerhost(text: str) -> str:
    """The canonical text of an IP address (IPv4-mapped IPv6 as IPv4); ValueError if none."""
    import ipaddress  # here: a broker whose bans name no address never needs it

    addr = ipaddress.ip_address(text.strip())
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return str(addr)


@dataclass(frozen=True, slots=True)
class Ban:
    kind: str  # "as" in the API: clientid, username or peerhost
    who: str
    by: str = "user"
    reason: str = ""
    at: int = 0  # epoch seconds
    until: int = 0

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["as"] = data.pop("kind")
        return data

    def active(self, now: float) -> bool:
        return self.until > now


class BanList:
    """The bans of the broker, by (kind, who)."""

    def __init__(self) -> None:
        self._bans: dict[tuple[str, str], Ban] = {}

    def __len__(self) -> int:
        return len(self._bans)

    def __iter__(self) -> Iterator[Ban]:
        return iter(list(self._bans.values()))

    def load(self, bans: list[Ban]) -> None:
        self._bans = {(b.kind, b.who): b for b in bans}

    def put(self, ban: Ban) -> None:
        self._bans[(ban.kind, ban.who)] = ban

    def get(self, kind: str, who: str) -> Ban | None:
        return self._bans.get((kind, who))

    def remove(self, kind: str, who: str) -> Ban | None:
        return self._bans.pop((kind, who), None)

    def check(self, client_id: str, username: str | None, peerhost: str) -> Ban | None:
        """The ban refusing this CONNECT, or None."""
        bans = self._bans
        if not bans:
            return None
        now = time.time()
        for kind, who in (("clientid", client_id), ("username", username), ("peerhost", peerhost)):
            if who is None:
                continue
            ban = bans.get((kind, who))
            if ban is not None and ban.active(now):
                return ban
        return None

    def expire(self, now: float) -> list[Ban]:
        """Drop the bans past their deadline; return them."""
        gone = [b for b in self._bans.values() if not b.active(now)]
        for b in gone:
            del self._bans[(b.kind, b.who)]
        return gone


def matches(ban: Ban, client_id: str, username: str | None, peerhost: str) -> bool:
    if ban.kind == "clientid":
        return ban.who == client_id
    if ban.kind == "username":
        return ban.who == username
    return ban.who == peerhost


def kick_banned(broker: Broker, ban: Ban) -> list[str]:
    """Disconnect the online clients a new ``ban`` matches; return their client ids."""
    if ban.kind == "clientid":
        candidates = [c for c in (broker.clients.get(ban.who),) if c is not None]
    else:
        candidates = list(broker.clients.values())
    kicked = []
    for client in candidates:
        if matches(ban, client.client_id, client.username, peer_host(client.peer[0])):
            broker.kick(client.client_id)
            kicked.append(client.client_id)
    return kicked


def peer_host(host: str) -> str:
    """The peer address of a connection in the form bans use."""
    try:
        return normalize_peerhost(host)
    except ValueError:
        return host
