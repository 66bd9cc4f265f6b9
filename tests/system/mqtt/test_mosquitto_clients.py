"""Debian's mosquitto_pub / mosquitto_sub against the broker, in every protocol version."""

from __future__ import annotations

import shutil
import signal
import subprocess
import time

import pytest

from clients import V5, V311, TestClient

pytestmark = pytest.mark.skipif(
    shutil.which("mosquitto_sub") is None, reason="mosquitto-clients is not installed"
)

VERSIONS = ["mqttv31", "mqttv311", "mqttv5"]
FORMAT = "%t|%p|%q|%r"


class Sub:
    """A running mosquitto_sub whose output lines are read one at a time."""

    def __init__(self, port: int, *args: str) -> None:
        cmd = ["mosquitto_sub", "-h", "127.0.0.1", "-p", str(port), "-W", "10", *args]
        self.proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1
        )

    def line(self) -> str:
        out = self.proc.stdout.readline()  # type: ignore[union-attr]
        assert out, f"mosquitto_sub ended: {self.proc.stderr.read()}"  # type: ignore[union-attr]
        return out.rstrip("\n")

    def wait(self) -> int:
        return self.proc.wait(10)

    def kill(self, sig: int = signal.SIGTERM) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(5)


def pub(port: int, *args: str) -> None:
    subprocess.run(
        ["mosquitto_pub", "-h", "127.0.0.1", "-p", str(port), *args],
        check=True,
        timeout=10,
        capture_output=True,
    )


def ready(port: int, sub: Sub, topic: str, version: str) -> None:
    """Make sure ``sub`` is subscribed: it must print a retained marker, then clear it."""
    pub(port, "-V", version, "-t", topic, "-m", "ready", "-r", "-q", "1")
    assert sub.line().split("|")[1] == "ready"
    pub(port, "-V", version, "-t", topic, "-n", "-r", "-q", "1")
    line = sub.line()  # the clearing (empty) retained publish is forwarded too
    assert line.split("|")[1] == ""


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("qos", [0, 1, 2])
def test_pub_sub_every_version_and_qos(broker, uid, version, qos):
    topic = f"mosq/{uid}/{version}"
    sub = Sub(
        broker.port, "-V", version, "-q", str(qos), "-t", f"mosq/{uid}/#", "-F", FORMAT, "-C", "3"
    )
    ready(broker.port, sub, topic, version)
    pub(broker.port, "-V", version, "-q", str(qos), "-t", topic, "-m", f"hello {qos}")
    assert sub.line() == f"{topic}|hello {qos}|{qos}|0"
    assert sub.wait() == 0


@pytest.mark.parametrize("version", VERSIONS)
def test_retained_and_cleared(broker, uid, version):
    topic = f"mosqr/{uid}/{version}"
    pub(broker.port, "-V", version, "-t", topic, "-m", "kept", "-r", "-q", "1")
    out = subprocess.run(
        ["mosquitto_sub", "-h", "127.0.0.1", "-p", str(broker.port), "-V", version,
         "-t", f"mosqr/{uid}/#", "--retained-only", "-F", FORMAT, "-C", "1"],
        capture_output=True, text=True, timeout=10,
    )  # fmt: skip
    assert out.stdout.splitlines() == [f"{topic}|kept|0|1"]
    pub(broker.port, "-V", version, "-t", topic, "-n", "-r")  # an empty retained message clears
    c = TestClient(f"mr-{uid}", V311)
    c.connect(broker.port)
    c.subscribe(f"mosqr/{uid}/#", 0)
    c.expect_nothing(0.2)
    c.disconnect()


def test_v5_properties_through_mosquitto(broker, uid):
    topic = f"mosq5/{uid}"
    sub = Sub(broker.port, "-V", "mqttv5", "-t", topic, "-F", "%t|%p|%C|%P|%R|%D|%E|%F", "-C", "3")
    ready(broker.port, sub, topic, "mqttv5")
    pub(
        broker.port, "-V", "mqttv5", "-t", topic, "-m", "props", "-q", "1",
        "-D", "publish", "user-property", "colour", "blue",
        "-D", "publish", "content-type", "text/plain",
        "-D", "publish", "response-topic", f"reply/{uid}",
        "-D", "publish", "correlation-data", "abc123",
        "-D", "publish", "message-expiry-interval", "60",
        "-D", "publish", "payload-format-indicator", "1",
    )  # fmt: skip
    topic_, payload, ctype, user, resp, corr, expiry, pfi = sub.line().split("|")
    assert (topic_, payload, ctype, user, resp, corr, pfi) == (
        topic,
        "props",
        "text/plain",
        "colour:blue",
        f"reply/{uid}",
        "abc123",
        "1",
    )
    assert 59 <= int(expiry) <= 60
    assert sub.wait() == 0


def test_persistent_session_with_mosquitto_sub(broker, uid):
    cid = f"mosqp-{uid}"
    topic = f"mosqp/{uid}"
    first = Sub(
        broker.port,
        "-V",
        "mqttv311",
        "-c",
        "-i",
        cid,
        "-q",
        "1",
        "-t",
        topic,
        "-F",
        FORMAT,
        "-C",
        "2",
    )
    ready(broker.port, first, topic, "mqttv311")
    first.kill()
    for i in range(3):
        pub(broker.port, "-t", topic, "-m", f"offline {i}", "-q", "1")
    again = Sub(
        broker.port,
        "-V",
        "mqttv311",
        "-c",
        "-i",
        cid,
        "-q",
        "1",
        "-t",
        topic,
        "-F",
        "%p",
        "-C",
        "3",
    )
    assert [again.line() for _ in range(3)] == [f"offline {i}" for i in range(3)]
    assert again.wait() == 0
    pub(broker.port, "-t", topic, "-n", "-r")  # nothing retained is left behind
    done = Sub(broker.port, "-V", "mqttv311", "-i", cid, "-t", topic, "-E")  # clean: ends it
    assert done.wait() == 0


@pytest.mark.parametrize("version", ["mqttv311", "mqttv5"])
def test_will_of_killed_mosquitto_sub(broker, uid, version):
    will_topic = f"mosqw/{uid}"
    watcher = TestClient(f"mw-{uid}", V5)
    watcher.connect(broker.port)
    watcher.subscribe(will_topic, 1)
    sub = Sub(
        broker.port, "-V", version, "-t", f"mosqw/{uid}/ready", "-F", FORMAT,
        "--will-topic", will_topic, "--will-payload", "mosquitto died", "--will-qos", "1",
    )  # fmt: skip
    ready(broker.port, sub, f"mosqw/{uid}/ready", version)
    sub.kill(signal.SIGKILL)
    msg = watcher.get()
    assert (msg.payload, msg.qos) == (b"mosquitto died", 1)
    watcher.disconnect()


def test_many_lines_with_mosquitto_pub(broker, uid):
    topic = f"mosql/{uid}"
    sub = Sub(broker.port, "-t", topic, "-q", "2", "-F", FORMAT, "-C", "102")
    ready(broker.port, sub, topic, "mqttv311")
    lines = "\n".join(f"line {i}" for i in range(100)) + "\n"
    start = time.monotonic()
    subprocess.run(
        ["mosquitto_pub", "-h", "127.0.0.1", "-p", str(broker.port), "-t", topic, "-q", "2", "-l"],
        input=lines, text=True, check=True, timeout=10,
    )  # fmt: skip
    assert [sub.line() for _ in range(100)] == [f"{topic}|line {i}|2|0" for i in range(100)]
    assert sub.wait() == 0
    assert time.monotonic() - start < 5
