"""``ferrymq bench``: short real runs against the test broker (the histogram: unit/loadgen)."""

from __future__ import annotations

from typing import Any

from loadgen_cli import bench, finish, start_subscribers


def test_qos1_publishers_reach_every_subscriber_with_latency(broker: Any, uid: str) -> None:
    port = str(broker.port)
    subs = start_subscribers(
        "-p", port, "-c", "3", "-t", f"{uid}/#", "-q", "1", "-L", "120", "-w", "2", "-d", "20"
    )
    code, pub, _ = bench(
        "pub", "-p", port, "-c", "4", "-t", f"{uid}/%i", "-q", "1", "-L", "30", "-I", "1",
        "-s", "64", "-w", "2",
    )  # fmt: skip
    assert code == 0
    assert (pub["ready"], pub["sent"], pub["acked"], pub["failed"]) == (4, 120, 120, 0)
    code, sub = finish(subs)
    assert code == 0
    assert sub["received"] == 3 * 120  # every subscriber saw all 4 x 30 messages
    lat = sub["lat_ms"]
    assert lat["n"] == 360
    assert 0 < lat["p50"] <= lat["p99"] <= lat["max"] < 5000


def test_qos0_unlimited_and_qos2_counts(broker: Any, uid: str) -> None:
    port = str(broker.port)
    subs = start_subscribers("-p", port, "-c", "1", "-t", f"{uid}/+", "-q", "2", "-L", "1000")
    code, pub = bench(
        "pub", "-p", port, "-c", "2", "-t", f"{uid}/%i", "-q", "2", "-L", "500", "-I", "0",
        "-V", "5",
    )[:2]  # fmt: skip
    assert code == 0
    assert (pub["sent"], pub["acked"]) == (1000, 1000)  # PUBCOMP for every QoS 2 message
    assert finish(subs)[1]["received"] == 1000
    code, pub = bench("pub", "-p", port, "-c", "2", "-t", f"{uid}/q0", "-L", "2000", "-I", "0")[:2]
    assert (code, pub["sent"], pub["acked"]) == (0, 4000, 0)


def test_idle_connections_counted(broker: Any) -> None:
    code, s, _ = bench("conn", "-p", str(broker.port), "-c", "40", "-i", "1", "-d", "0.5")
    assert code == 0
    assert (s["connected"], s["ready"], s["failed"], s["lost"]) == (40, 40, 0, 0)
    assert s["connect_ms"]["n"] == 40


def test_refused_credentials_are_failures(make_broker: Any) -> None:
    b = make_broker("--no-allow-anonymous")
    code, s, _ = bench(
        "conn", "-p", str(b.port), "-c", "3", "-u", "nobody", "-P", "nope", "-d", "3"
    )
    assert code == 1
    assert (s["ready"], s["failed"]) == (0, 3)
    assert any("CONNACK refused" in e for e in s["errors"])


def test_nothing_listening_is_a_failure() -> None:
    code, s, _ = bench("conn", "-p", "1", "-c", "2", "-d", "3")
    assert code == 1
    assert s["failed"] == 2
