"""The model: a delivery's meta and a will survive their stored forms, and nothing in model/
or storage/ imports the core."""

from __future__ import annotations

import subprocess
import sys

import pytest

from ferrymq.model import INFLIGHT, QUEUED, RELEASING, Delivery, Message, fields_from_meta
from ferrymq.mqtt.packets import Will
from ferrymq.storage.codec import dump_will, load_will


@pytest.mark.parametrize(
    ("qos", "retain", "ids", "pid", "state"),
    [
        (0, False, None, 0, QUEUED),
        (1, True, (3,), 7, INFLIGHT),
        (2, False, (1, 9), 65535, RELEASING),
    ],
)
def test_delivery_meta_round_trip(
    qos: int, retain: bool, ids: tuple[int, ...] | None, pid: int, state: int
) -> None:
    msg = Message("a/b", b"x", 2)
    d = Delivery(msg, qos, retain, ids, pid, state, key=5)
    back = Delivery(msg, *fields_from_meta(d.meta(), msg.qos), 5)
    assert (back.qos, back.retain, back.sub_ids, back.pid, back.state, back.key) == (
        qos,
        retain,
        ids,
        pid,
        state,
        5,
    )


def test_meta_of_older_records_defaults_to_a_queued_delivery_at_the_message_qos() -> None:
    assert fields_from_meta({}, 1) == (1, False, None, 0, QUEUED)


def test_will_round_trip_and_unreadable_text() -> None:
    will = Will(
        "w/t", b"\x00bye", 1, True, {"will_delay_interval": 5, "user_property": [("k", "v")]}
    )
    back = load_will(dump_will(will))
    assert (back.topic, back.payload, back.qos, back.retain) == ("w/t", b"\x00bye", 1, True)
    assert back.properties == will.properties
    with pytest.raises(ValueError):
        load_will("not base64 at all!")


def test_model_and_storage_never_import_the_core() -> None:
    code = (
        "import sys, ferrymq.model, ferrymq.storage.sqlite;"
        "print(sorted(m for m in sys.modules if m.startswith('ferrymq.core')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
