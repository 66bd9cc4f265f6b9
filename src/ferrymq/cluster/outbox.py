"""Forwarded messages waiting for the next send, batched per destination node.

Rules kept here:
- a message is framed once (``codec.frame``) and the same bytes join the batch
  of every node it goes to;
- QoS 0 and QoS 1/2 are batched apart: they travel by different inboxes
  (pub/sub, at most once; a stream with acknowledgements, at least once);
- a message that some destinations must also give to shared groups is
  stored once; each of those destinations gets a frame naming its groups,
  the others the plain frame;
- ``take`` hands over one joined batch per (node, kind) and leaves the outbox
  empty, so one Redis command carries everything a node gets in a turn;
- takes are numbered (``sends``: the number of the take that will carry what
  is queued now), so a held PUBACK / PUBREC names the send it waits for
  (``cluster/acks.py``);
- past ``HIGH`` waiting pairs, while the broker is short of CPU, the publishers
  that add to it are paused (``Backlog``, a target of ``core/flow.py``) until
  the sender has handed the batch to Redis: otherwise an event loop busy
  reading publishers never lets the sender (or the heartbeat) run.

Compiled with mypyc (``native.HOT``), with the codec: a clustered node's compiled
``Broker.publish`` puts a message whose topic's nodes are known here itself
(``core.interfaces.Forwarding``), so a forwarded message is framed in C.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

from ferrymq.cluster.codec import frame, frame_shared, frame_stored
from ferrymq.model.message import Message
from ferrymq.storage.codec import dump_message

#: (message, node) pairs waiting past which the publishers adding to them may be paused.
HIGH: Final = 20_000


class Backlog:
    """The outbox as ``core.flow.Flow`` sees a backed-up subscriber: publishers that feed
    it wait (``Flow.block``) until the sender releases them (``Flow.release_publishers``)."""

    __slots__ = ("blocked", "slow")

    def __init__(self) -> None:
        self.blocked: list[object] | tuple[()] = ()
        self.slow = False  # set by Flow after a pause of a second: pause no one any more


class Outbox:
    """Frames per destination node, QoS 0 apart from QoS 1/2."""

    __slots__ = ("high", "messages", "qos0", "reliable", "sends")

    def __init__(self) -> None:
        self.high = HIGH  # read by core.Broker, which does not import this module
        self.qos0: dict[str, list[bytes]] = {}
        self.reliable: dict[str, list[bytes]] = {}
        self.messages = 0  # (message, node) pairs waiting
        self.sends = 1  # the number of the next take

    def due(self) -> int:
        """The send a QoS 1/2 message queued now travels in; 0 when none is queued."""
        return self.sends if self.reliable else 0

    def __bool__(self) -> bool:
        return self.messages > 0

    def put(self, msg: Message, nodes: tuple[str, ...]) -> None:
        data = frame(msg)
        box = self.qos0 if msg.qos == 0 else self.reliable
        for node in nodes:
            frames = box.get(node)
            if frames is None:
                box[node] = [data]
            else:
                frames.append(data)
        self.messages += len(nodes)

    def put_shared(
        self,
        msg: Message,
        nodes: Iterable[str],
        groups: dict[str, list[str]],
        hops: int = 0,
    ) -> int:
        """``msg`` for ``nodes`` (non-shared routes) and for the nodes of ``groups``
        (``{node: [group key]}``: the groups each must serve); how many nodes it goes to."""
        stored = dump_message(msg)
        plain: bytes | None = None
        box = self.qos0 if msg.qos == 0 else self.reliable
        sent = 0
        for node in {**dict.fromkeys(nodes), **dict.fromkeys(groups)}:
            keys = groups.get(node)
            if keys:
                data = frame_shared(stored, keys, hops)
            else:
                if plain is None:
                    plain = frame_stored(stored)
                data = plain
            box.setdefault(node, []).append(data)
            sent += 1
        self.messages += sent
        return sent

    def take(self) -> tuple[dict[str, bytes], dict[str, bytes], int]:
        """``({node: QoS 0 batch}, {node: QoS 1/2 batch}, messages)``; the outbox is then
        empty, and this was send number ``sends - 1``."""
        qos0 = {node: b"".join(frames) for node, frames in self.qos0.items()}
        reliable = {node: b"".join(frames) for node, frames in self.reliable.items()}
        count = self.messages
        self.qos0.clear()
        self.reliable.clear()
        self.messages = 0
        self.sends += 1
        return qos0, reliable, count
