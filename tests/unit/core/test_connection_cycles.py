"""Connections end without reference cycles: what ``server._tune_gc`` relies on when it
freezes the survivors of young collections (only a rare full pass would find a cycle)."""

from __future__ import annotations

import gc
from pathlib import Path

from ferrymq.mqtt.packets import Disconnect, Publish, Subscribe, SubscriptionOptions
from memory import Peer, serving, settle


async def test_connect_subscribe_publish_and_leave_churn_leaves_no_ferrymq_cycles(
    tmp_path: Path,
) -> None:
    async with serving(tmp_path) as broker:
        gc.collect()
        gc.disable()
        gc.set_debug(gc.DEBUG_SAVEALL)
        try:
            for i in range(200):
                peer = Peer(broker, f"churn-{i}", clean=i % 3 != 0)
                await peer.connack()
                peer.send(Subscribe(1, [SubscriptionOptions(f"churn/{i}/#", 1)]))
                peer.send(Publish(f"churn/{i}/x", b"payload", qos=1, packet_id=2))
                await peer.expect(3)  # SUBACK, PUBACK, the message itself
                if i % 2:
                    peer.send(Disconnect())
                else:
                    peer.lose()
                await settle()
            gc.collect()
            left = [o for o in gc.garbage if type(o).__module__.startswith("ferrymq")]
        finally:
            gc.set_debug(0)
            gc.garbage.clear()
            gc.enable()
    assert left == [], sorted({type(o).__qualname__ for o in left})
