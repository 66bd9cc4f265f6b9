"""$SYS topics: published periodically, retained, and telling the truth about the broker."""

from __future__ import annotations

import contextlib
import queue
import time

from clients import V5, V311, TestClient
from ferrymq import __version__


def _sys_values(port: int, uid: str, filters: list[str], timeout: float = 3.0) -> dict[str, bytes]:
    """The retained $SYS values matching ``filters`` right after subscribing."""
    c = TestClient(f"sys-{uid}-{time.monotonic_ns()}", V311)
    c.connect(port)
    c.subscribe([(f, 0) for f in filters])
    out: dict[str, bytes] = {}
    try:
        while True:
            msg = c.get(timeout=0.3)
            out[msg.topic.split("/", 3)[3]] = msg.payload
    except queue.Empty:
        pass
    c.disconnect()
    return out


def test_sys_topics_describe_the_broker(broker, uid):
    clients = []
    for i in range(3):
        c = TestClient(f"sysc{i}-{uid}", V5)
        c.connect(broker.port)
        c.subscribe(f"sys/{uid}/{i}", 0)
        clients.append(c)
    clients[0].publish(f"sys/{uid}/1", b"hello", 1)
    assert clients[1].get().payload == b"hello"
    time.sleep(1.1)  # one $SYS interval of the shared broker
    values = _sys_values(broker.port, uid, ["$SYS/brokers/+/#"])
    assert values["version"] == __version__.encode()
    assert int(values["uptime"]) >= 1
    assert values["datetime"]
    assert int(values["stats/connections/count"]) >= 3
    assert int(values["stats/subscriptions/count"]) >= 3
    assert int(values["stats/sessions/count"]) >= 3
    counters = ("bytes/received", "bytes/sent", "messages/received", "messages/sent")
    for name in (*counters, "packets/received", "packets/sent", "client/connected"):
        assert int(values[f"metrics/{name}"]) > 0, name
    for c in clients:
        c.disconnect()


def test_sys_topics_are_periodic_and_counters_move(broker, uid):
    topic = "$SYS/brokers/+/metrics/messages/received"
    watcher = TestClient(f"sysw-{uid}", V311)
    watcher.connect(broker.port)
    watcher.subscribe([(topic, 0), ("$SYS/brokers/+/uptime", 0)])
    first = {m.topic.rsplit("/", 1)[1]: int(m.payload) for m in watcher.get_many(2)}
    pub = TestClient(f"sysp-{uid}", V311)
    pub.connect(broker.port)
    for _ in range(25):
        pub.publish(f"sysload/{uid}", b"x", 1)
    start = time.monotonic()
    later = {}
    while len(later) < 2 and time.monotonic() - start < 3:
        m = watcher.get(timeout=3)
        later[m.topic.rsplit("/", 1)[1]] = int(m.payload)
    assert time.monotonic() - start < 2.5  # republished within about one interval
    assert later["received"] >= first["received"] + 25
    assert later["uptime"] >= first["uptime"]
    pub.disconnect()
    watcher.disconnect()


def test_sys_topics_hidden_from_hash_and_can_be_disabled(broker, make_broker, uid):
    c = TestClient(f"sysh-{uid}", V311)
    c.connect(broker.port)
    c.subscribe("#", 0)
    deadline = time.monotonic() + 1.05
    while time.monotonic() < deadline:
        with contextlib.suppress(queue.Empty):
            assert not c.get(timeout=0.1).topic.startswith("$SYS")
    c.disconnect()
    quiet = make_broker("--sys-interval", "0")
    assert _sys_values(quiet.port, uid, ["$SYS/#"]) == {}


def test_counters_count_client_traffic_only(make_broker, uid):
    """$SYS publications themselves never show up as messages received or dropped."""
    b = make_broker("--sys-interval", "1")
    pub = TestClient(f"cnt-{uid}", V311)
    pub.connect(b.port)
    for _ in range(3):
        pub.publish(f"nobody/{uid}", b"x", 1)  # no subscriber: received and dropped
    watcher = TestClient(f"cntw-{uid}", V311)
    watcher.connect(b.port)
    watcher.subscribe("$SYS/brokers/+/metrics/messages/+", 0)
    latest: dict[str, int] = {}
    deadline = time.monotonic() + 2.5  # the next publication, one interval away
    while time.monotonic() < deadline and latest.get("received") != 3:
        m = watcher.get(timeout=2.5)
        latest[m.topic.rsplit("/", 1)[1]] = int(m.payload)
    for _ in range(5):  # the rest of that round
        m = watcher.get(timeout=1)
        latest[m.topic.rsplit("/", 1)[1]] = int(m.payload)
    assert latest["received"] == 3
    assert latest["dropped"] == 3
    assert latest["retained"] == 0
    pub.disconnect()
    watcher.disconnect()
