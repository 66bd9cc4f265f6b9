"""Crash safety: SIGKILL the broker under QoS 1/2 traffic, restart it on the same data
directory, and count what the clients were promised.

With ``durability = "acked"`` (the default) an acknowledged message is never lost,
a QoS 2 message is never delivered twice, and pending wills are published. With
``"batched"`` the tests measure the loss window instead: only messages acknowledged
within about one flush interval before the kill may be missing.

The random-kill tests run ``FERRYMQ_CRASH_ROUNDS`` kills each (default 2, about
a minute for the whole file); set it higher for a longer local run.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import threading
import time
from collections import Counter
from typing import Any

import pytest

from ferrymq.mqtt.packets import (
    Puback,
    Pubcomp,
    Publish,
    Pubrec,
    Pubrel,
    Will,
)
from rawclient import ConnectionClosed, RawClient

ROUNDS = int(os.environ.get("FERRYMQ_CRASH_ROUNDS", "2"))
BROKER_ARGS = ("--sys-interval", "0", "--max-mqueue-len", "100000")
# How long before the kill a message a "batched" broker lost may have been acknowledged:
# one flush interval (50 ms) plus the commit in progress, which under this load takes a
# few hundred milliseconds (measured 0.17-0.35 s on 2 busy cores), plus room.
BATCHED_WINDOW = 1.0

_DEAD = (ConnectionClosed, OSError, TimeoutError)


class Receiver:
    """A subscriber that acknowledges like a correct MQTT client: a QoS 2 message is handed
    to the application once, on first receipt, and its packet id is remembered until PUBREL
    (so a resent PUBLISH with DUP is recognised), across reconnects."""

    def __init__(self, client_id: str) -> None:
        self.client_id = client_id
        self.counts: Counter[bytes] = Counter()
        self.rel_pending: set[int] = set()
        self.c: RawClient | None = None

    def connect(self, port: int, filters: list[str] | None = None) -> bool:
        self.c = RawClient(port, 4)
        present = self.c.connect(self.client_id, clean=False).session_present
        for f in filters or []:
            self.c.subscribe(f, 2)
        return bool(present)

    def pump(self, timeout: float = 0.3) -> bool:
        """Handle one packet; False when none came within ``timeout``."""
        assert self.c is not None
        try:
            p = self.c.recv(timeout)
        except TimeoutError:
            return False
        if isinstance(p, Publish):
            if p.qos == 2:
                if p.packet_id not in self.rel_pending:
                    self.rel_pending.add(p.packet_id)
                    self.counts[p.payload] += 1
                self.c.send(Pubrec(p.packet_id))
            else:
                self.counts[p.payload] += 1
                if p.qos == 1:
                    self.c.send(Puback(p.packet_id))
        elif isinstance(p, Pubrel):
            self.rel_pending.discard(p.packet_id)
            self.c.send(Pubcomp(p.packet_id))
        return True

    def run_until_dead(self) -> None:
        try:
            while True:
                self.pump(5.0)
        except _DEAD:
            pass

    def drain(self, expected: set[bytes], timeout: float = 20.0, quiet: float = 3.0) -> None:
        """Receive until every payload of ``expected`` came, or nothing came for ``quiet``
        seconds (or ``timeout``); then until quiet for a moment, to catch duplicates."""
        deadline = time.monotonic() + timeout
        last = time.monotonic()
        while not expected <= self.counts.keys():
            now = time.monotonic()
            if now > deadline or now - last > quiet:
                break
            if self.pump(0.5):
                last = now
        while self.pump(0.3):
            pass

    def close(self) -> None:
        if self.c is not None:
            self.c.close()


class Publisher:
    """A QoS 1/2 publisher with a persistent session and a window of unacknowledged
    messages; after a reconnect it resends as MQTT requires (PUBLISH with DUP when no
    PUBACK/PUBREC came, PUBREL when PUBREC came)."""

    def __init__(self, client_id: str, qos: int, topic: str, retained_prefix: str) -> None:
        self.client_id = client_id
        self.qos = qos
        self.topic = topic
        self.retained_prefix = retained_prefix
        self.unacked: dict[int, tuple[str, bytes, bool]] = {}
        self.releasing: dict[int, bytes] = {}
        self.acked_at: dict[bytes, float] = {}  # payload -> when its PUBACK / PUBREC came
        self.retained: set[bytes] = set()  # payloads published with retain
        self.pubcomp_codes: list[int] = []
        self.c: RawClient | None = None
        self.sent = 0

    def connect(self, port: int) -> None:
        self.c = RawClient(port, 4)
        self.c.connect(self.client_id, clean=False)
        for pid, (topic, payload, retain) in self.unacked.items():
            self.c.publish(topic, payload, self.qos, retain, pid=pid, dup=True)
        for pid in self.releasing:
            self.c.send(Pubrel(pid))

    def _handle(self, p: Any) -> None:
        now = time.monotonic()
        if isinstance(p, Puback | Pubrec):
            entry = self.unacked.pop(p.packet_id, None)
            if entry is None:
                return
            self.acked_at.setdefault(entry[1], now)
            if isinstance(p, Pubrec):
                self.releasing[p.packet_id] = entry[1]
                assert self.c is not None
                self.c.send(Pubrel(p.packet_id))
        elif isinstance(p, Pubcomp) and self.releasing.pop(p.packet_id, None) is not None:
            self.pubcomp_codes.append(p.reason_code)

    def run(self, window: int = 32, stop: threading.Event | None = None) -> None:
        """Publish until the broker goes away (or ``stop``)."""
        c = self.c
        assert c is not None
        try:
            while stop is None or not stop.is_set():
                while len(self.unacked) + len(self.releasing) < window:
                    pid = c.pid()
                    while pid in self.unacked or pid in self.releasing:
                        pid = c.pid()
                    self.sent += 1
                    payload = f"{self.client_id}:{self.sent}".encode()
                    retain = self.sent % 4 == 0
                    topic = f"{self.retained_prefix}/{self.sent}" if retain else self.topic
                    if retain:
                        self.retained.add(payload)
                    self.unacked[pid] = (topic, payload, retain)
                    c.publish(topic, payload, self.qos, retain, pid=pid)
                self._handle(c.recv(5.0))
        except _DEAD:
            pass

    def settle(self, timeout: float = 10.0) -> None:
        """After a reconnect: wait until every resent flow completed."""
        c = self.c
        assert c is not None
        deadline = time.monotonic() + timeout
        while (self.unacked or self.releasing) and time.monotonic() < deadline:
            with contextlib.suppress(TimeoutError):
                self._handle(c.recv(0.5))

    def close(self) -> None:
        if self.c is not None:
            self.c.close()


def _crash_round(make_broker, uid: str, qos: int, durability: str) -> dict[str, Any]:
    """One broker, traffic, a SIGKILL at a random moment, a restart; what was lost."""
    b = make_broker(*BROKER_ARGS, "--durability", durability)
    topic = f"crash/{uid}/q"
    retained_prefix = f"crash/{uid}/r"
    will_topic = f"crash/{uid}/will"
    offline = Receiver(f"off-{uid}")
    offline.connect(b.port, [topic, f"{will_topic}/#"])
    offline.close()  # its session queues everything while the broker runs
    online = Receiver(f"on-{uid}")
    online.connect(b.port, [topic])
    # Wills: one client already gone with its will pending (delay 2 s), one still
    # connected at the kill (no delay: due as soon as the broker is back).
    pending = RawClient(b.port, 5)
    will_props = {"will_delay_interval": 2}
    pending.connect(
        f"wp-{uid}",
        clean=False,
        will=Will(f"{will_topic}/pending", b"pending", 1, False, will_props),
        properties={"session_expiry_interval": 60},
    )
    pending.close()
    connected = RawClient(b.port, 5)
    connected.connect(
        f"wc-{uid}",
        clean=False,
        will=Will(f"{will_topic}/connected", b"connected", 1),
        properties={"session_expiry_interval": 60},
    )
    pub = Publisher(f"pub-{uid}", qos, topic, retained_prefix)
    pub.connect(b.port)
    threads = [threading.Thread(target=pub.run), threading.Thread(target=online.run_until_dead)]
    for t in threads:
        t.start()
    time.sleep(random.uniform(0.3, 1.0))
    killed_at = time.monotonic()
    assert b.stop(signal.SIGKILL) == -signal.SIGKILL
    for t in threads:
        t.join(10)
    connected.close()
    acked = dict(pub.acked_at)
    b.start()

    pub.connect(b.port)
    pub.settle()
    online.connect(b.port)
    queued = {p for p in acked if p not in pub.retained}
    online.drain(queued)
    offline.connect(b.port)
    offline.drain(queued | {b"pending", b"connected"}, timeout=20.0)
    check = Receiver(f"chk-{uid}")
    check.connect(b.port, [f"{retained_prefix}/+"])
    check.drain({p for p in acked if p in pub.retained})
    for c in (pub, online, offline, check):
        c.close()

    def delivered(p: bytes) -> bool:
        if p in pub.retained:
            return p in check.counts
        return p in online.counts and p in offline.counts

    lost = {p: killed_at - t for p, t in acked.items() if not delivered(p)}
    duplicates = (
        [p for r in (online, offline) for p, n in r.counts.items() if n > 1] if qos == 2 else []
    )
    return {
        "acked": len(acked),
        "lost": lost,
        "duplicates": duplicates,
        "wills": {p for p in (b"pending", b"connected") if offline.counts[p]},
        "pubcomp": pub.pubcomp_codes,
    }


@pytest.mark.parametrize("qos", [1, 2])
def test_sigkill_under_load_loses_nothing_acknowledged(make_broker, uid, qos):
    for i in range(ROUNDS):
        r = _crash_round(make_broker, f"{uid}{i}", qos, "acked")
        assert r["acked"] > 0
        assert r["lost"] == {}, f"round {i}: {len(r['lost'])} of {r['acked']} acked lost"
        assert r["duplicates"] == []
        assert r["wills"] == {b"pending", b"connected"}
        assert set(r["pubcomp"]) <= {0}


@pytest.mark.parametrize("qos", [1, 2])
def test_batched_durability_loses_only_the_last_moments(make_broker, uid, qos):
    r = _crash_round(make_broker, uid, qos, "batched")
    assert r["acked"] > 0
    oldest = max(r["lost"].values(), default=0.0)
    assert oldest <= BATCHED_WINDOW, f"lost a message acknowledged {oldest:.3f} s before the kill"
    assert r["wills"] == {b"pending", b"connected"}


# --- the single flows of the durability defects -------------------------------------


def _pipeline_retained(port: int, uid: str, n: int) -> float:
    """Publish ``n`` retained QoS 1 messages with 32 in flight; return when the last
    PUBACK came."""
    c = RawClient(port, 4)
    c.connect(f"rp-{uid}")
    inflight: set[int] = set()
    sent = 0
    while sent < n or inflight:
        while sent < n and len(inflight) < 32:
            sent += 1
            inflight.add(c.publish(f"ret/{uid}/{sent}", b"r%d" % sent, 1, retain=True))
        inflight.discard(c.expect(Puback).packet_id)
    last = time.monotonic()
    c.close()
    return last


def _retained_count(port: int, uid: str, n: int) -> int:
    c = RawClient(port, 4)
    c.connect(f"rc-{uid}")
    c.subscribe(f"ret/{uid}/+", 0)
    got = 0
    try:
        while got < n:
            c.expect(Publish, timeout=1.0)
            got += 1
    except TimeoutError:
        pass
    c.close()
    return got


@pytest.mark.parametrize("durability", ["acked", "batched"])
def test_retained_acknowledged_then_sigkill(make_broker, uid, durability):
    """SIGKILL right after the last PUBACK: acked keeps all of them; batched (2 s flush
    interval here, to make its window obvious) loses what came after the last commit."""
    b = make_broker(*BROKER_ARGS, "--durability", durability, "--flush-interval", "2")
    _pipeline_retained(b.port, uid, 300)
    assert b.stop(signal.SIGKILL) == -signal.SIGKILL
    b.start()
    kept = _retained_count(b.port, uid, 300)
    if durability == "acked":
        assert kept == 300
    else:
        assert kept < 300


def test_acknowledgement_waits_for_the_commit_only_when_durable(make_broker, uid):
    """Group commit: a PUBACK that waits for the store gets its batch committed at once,
    not at the next flush interval (5 s here); one that touches no durable state waits
    for nothing."""
    b = make_broker(*BROKER_ARGS, "--flush-interval", "5")
    c = RawClient(b.port, 4)
    c.connect(f"ack-{uid}")
    start = time.monotonic()
    for i in range(50):
        c.publish(f"plain/{uid}", b"x", 1, pid=i + 1)
        assert c.expect(Puback).packet_id == i + 1
    plain = time.monotonic() - start
    start = time.monotonic()
    for i in range(50):
        c.publish(f"ret/{uid}/{i}", b"x", 1, retain=True, pid=i + 1)
        assert c.expect(Puback).packet_id == i + 1
    durable = time.monotonic() - start
    c.close()
    # Waiting for the interval would take minutes for 50 sequential acknowledgements.
    assert durable < 10, durable
    assert plain < 10, plain
    assert "commit listener failed" not in b.log()


def _qos2_setup(make_broker, uid: str, topic: str) -> tuple[Any, RawClient]:
    """A broker, an offline persistent QoS 2 subscriber ``s-<uid>`` on ``topic``, and a
    connected persistent publisher ``p-<uid>``."""
    b = make_broker(*BROKER_ARGS)
    s = RawClient(b.port, 4)
    s.connect(f"s-{uid}", clean=False)
    s.subscribe(topic, 2)
    s.close()
    p = RawClient(b.port, 4)
    p.connect(f"p-{uid}", clean=False)
    return b, p


def test_qos2_pubrec_then_sigkill_keeps_the_message(make_broker, uid):
    """Defect 2: PUBLISH, PUBREC, SIGKILL at once; after the restart the resent PUBREL gets
    PUBCOMP and the message is there."""
    topic = f"q2/{uid}"
    b, p = _qos2_setup(make_broker, uid, topic)
    p.publish(topic, b"exactly once", 2, pid=1)
    assert p.expect(Pubrec).packet_id == 1
    assert b.stop(signal.SIGKILL) == -signal.SIGKILL
    b.start()
    p = RawClient(b.port, 4)
    assert p.connect(f"p-{uid}", clean=False).session_present
    p.send(Pubrel(1))
    assert p.expect(Pubcomp).packet_id == 1
    s = Receiver(f"s-{uid}")
    assert s.connect(b.port)
    s.drain({b"exactly once"}, timeout=5)
    assert s.counts == Counter({b"exactly once": 1})


def test_qos2_reused_packet_id_after_sigkill_is_delivered(make_broker, uid):
    """Defect 3: a QoS 2 flow completes (PUBCOMP), SIGKILL at once; a new message with the
    same packet id after the restart is a new message, not a resend."""
    topic = f"q2r/{uid}"
    b, p = _qos2_setup(make_broker, uid, topic)
    p.publish(topic, b"first", 2, pid=7)
    p.expect(Pubrec)
    p.send(Pubrel(7))
    assert p.expect(Pubcomp).packet_id == 7
    assert b.stop(signal.SIGKILL) == -signal.SIGKILL
    b.start()
    p = RawClient(b.port, 4)
    assert p.connect(f"p-{uid}", clean=False).session_present
    p.publish(topic, b"second", 2, pid=7)
    assert p.expect(Pubrec).packet_id == 7
    p.send(Pubrel(7))
    assert p.expect(Pubcomp).packet_id == 7
    s = Receiver(f"s-{uid}")
    s.connect(b.port)
    s.drain({b"first", b"second"}, timeout=5)
    assert s.counts == Counter({b"first": 1, b"second": 1})


def test_qos2_pubrel_sent_state_survives_sigkill(make_broker, uid):
    """Defect 4: the subscriber sent PUBREC and got PUBREL, SIGKILL at once: on resume the
    broker resends PUBREL, never the PUBLISH (MQTT 4.3.3)."""
    b = make_broker(*BROKER_ARGS)
    topic = f"q2s/{uid}"
    s = RawClient(b.port, 4)
    s.connect(f"s-{uid}", clean=False)
    s.subscribe(topic, 2)
    p = RawClient(b.port, 4)
    p.connect(f"p-{uid}")
    p.publish(topic, b"m", 2, pid=1)
    msg = s.expect(Publish)
    s.send(Pubrec(msg.packet_id))
    assert s.expect(Pubrel).packet_id == msg.packet_id
    assert b.stop(signal.SIGKILL) == -signal.SIGKILL
    s.close()
    p.close()
    b.start()
    s = RawClient(b.port, 4)
    assert s.connect(f"s-{uid}", clean=False).session_present
    again = s.recv()
    assert isinstance(again, Pubrel) and again.packet_id == msg.packet_id, again
    s.send(Pubcomp(msg.packet_id))
    s.nothing(0.3)
    s.close()


def _dropped_with_will(
    make_broker, uid: str, payload: bytes, delay: int, expiry: int
) -> tuple[Any, Receiver]:
    """A broker, an offline persistent watcher of ``will/<uid>``, and an MQTT 5 client
    whose connection dropped with that will pending (``delay``, session ``expiry``)."""
    b = make_broker(*BROKER_ARGS)
    watcher = Receiver(f"w-{uid}")
    watcher.connect(b.port, [f"will/{uid}"])
    watcher.close()
    c = RawClient(b.port, 5)
    c.connect(
        f"c-{uid}",
        will=Will(f"will/{uid}", payload, 1, False, {"will_delay_interval": delay}),
        properties={"session_expiry_interval": expiry},
    )
    c.close()
    return b, watcher


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_delayed_will_survives_restart(make_broker, uid, sig):
    """Defect 5: session expiry 6 s, will delay 2 s, the connection drops, the broker is
    stopped (or killed) at once and started again: the will is published at its time."""
    b, watcher = _dropped_with_will(make_broker, uid, b"gone", delay=2, expiry=6)
    dropped_at = time.monotonic()
    time.sleep(0.2)  # the broker noticed the drop (and, for SIGKILL, stored it)
    b.stop(sig)
    b.start()
    watcher.connect(b.port)
    watcher.drain({b"gone"}, timeout=8)
    assert watcher.counts == Counter({b"gone": 1})
    assert time.monotonic() - dropped_at >= 1.9  # not before its delay
    watcher.close()


def test_shutdown_publishes_wills_of_connected_clients(make_broker, uid):
    """SIGTERM closes connections without a DISCONNECT from the clients: a will without
    delay is published at shutdown, one with a delay after the restart, at its time."""
    b = make_broker(*BROKER_ARGS)
    watcher = Receiver(f"w-{uid}")
    watcher.connect(b.port, [f"will/{uid}/+"])
    watcher.close()
    clients = []
    for name, delay in (("now", 0), ("later", 1)):
        c = RawClient(b.port, 5)
        c.connect(
            f"{name}-{uid}",
            will=Will(
                f"will/{uid}/{name}", name.encode(), 1, False, {"will_delay_interval": delay}
            ),
            properties={"session_expiry_interval": 60},
        )
        clients.append(c)
    quiet = RawClient(b.port, 4)  # an MQTT 3 client with a will, too
    quiet.connect(f"v3-{uid}", will=Will(f"will/{uid}/v3", b"v3", 1))
    assert b.stop(signal.SIGTERM) == 0
    stopped_at = time.monotonic()
    b.start()
    watcher.connect(b.port)
    watcher.drain({b"now", b"later", b"v3"}, timeout=8)
    assert watcher.counts == Counter({b"now": 1, b"later": 1, b"v3": 1})
    assert time.monotonic() - stopped_at >= 0.9
    watcher.close()
    for c in (*clients, quiet):
        c.close()


def test_will_of_a_session_that_ended_while_down_is_published(make_broker, uid):
    """The session (expiry 1 s) ends while the broker is stopped: its pending will is due
    at the latest then, so it is published as soon as the broker is back."""
    b, watcher = _dropped_with_will(make_broker, uid, b"ended", delay=30, expiry=1)
    time.sleep(0.2)
    assert b.stop(signal.SIGTERM) == 0
    time.sleep(1.2)
    b.start()
    watcher.connect(b.port)
    watcher.drain({b"ended"}, timeout=5)
    assert watcher.counts == Counter({b"ended": 1})
    watcher.close()
