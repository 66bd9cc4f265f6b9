"""A blocking wrapper around paho-mqtt for tests: connect, subscribe, publish, wait for messages."""

from __future__ import annotations

import contextlib
import queue
import socket
import threading
import time
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

V311 = mqtt.MQTTv311
V31 = mqtt.MQTTv31
V5 = mqtt.MQTTv5


class TestClient:
    """A paho client running its network loop in a thread, with results in queues."""

    __test__ = False

    def __init__(self, client_id: str, protocol: int = V311, **kwargs: Any) -> None:
        self.client_id = client_id
        self.protocol = protocol
        self.c = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=protocol,
            **kwargs,
        )
        self.messages: queue.Queue[mqtt.MQTTMessage] = queue.Queue()
        self.connack: queue.Queue[tuple[Any, Any, Any]] = queue.Queue()
        self.subacks: queue.Queue[list[Any]] = queue.Queue()
        self.unsubacks: queue.Queue[Any] = queue.Queue()
        self.disconnects: queue.Queue[Any] = queue.Queue()
        self.disconnected = threading.Event()
        self.c.on_connect = self._on_connect
        self.c.on_message = self._on_message
        self.c.on_subscribe = self._on_subscribe
        self.c.on_unsubscribe = self._on_unsubscribe
        self.c.on_disconnect = self._on_disconnect

    def _on_connect(self, c: Any, u: Any, flags: Any, rc: Any, props: Any = None) -> None:
        self.connack.put((flags, rc, props))

    def _on_message(self, c: Any, u: Any, msg: mqtt.MQTTMessage) -> None:
        self.messages.put(msg)

    def _on_subscribe(self, c: Any, u: Any, mid: int, rcs: Any, props: Any = None) -> None:
        self.subacks.put(list(rcs))

    def _on_unsubscribe(self, c: Any, u: Any, mid: int, rcs: Any, props: Any = None) -> None:
        self.unsubacks.put(rcs)

    def _on_disconnect(self, c: Any, u: Any, flags: Any, rc: Any, props: Any = None) -> None:
        self.disconnects.put(rc)
        self.disconnected.set()

    def connect(
        self,
        port: int,
        clean: bool = True,
        keepalive: int = 60,
        properties: Properties | None = None,
        expect_rc: int | None = 0,
        timeout: float = 5.0,
    ) -> tuple[Any, Any, Any]:
        kwargs: dict[str, Any] = {"keepalive": keepalive}
        if self.protocol == V5:
            kwargs["clean_start"] = clean
            if properties is not None:
                kwargs["properties"] = properties
        else:
            self.c._clean_session = clean
        self.c.connect("127.0.0.1", port, **kwargs)
        self.c.loop_start()
        result = self.connack.get(timeout=timeout)
        if expect_rc is not None:
            rc = result[1]
            value = rc.value if hasattr(rc, "value") else rc
            assert value == expect_rc, f"CONNACK {rc!r}, expected {expect_rc}"
        return result

    def subscribe(self, topic: str | list[tuple[str, Any]], qos: int = 0, **kw: Any) -> list[Any]:
        if isinstance(topic, str):
            if self.protocol == V5 and "options" in kw:
                self.c.subscribe(topic, options=kw.pop("options"), **kw)
            else:
                self.c.subscribe(topic, qos, **kw)
        else:
            self.c.subscribe(topic, **kw)
        return self.subacks.get(timeout=5)

    def unsubscribe(self, topic: str | list[str], **kw: Any) -> Any:
        self.c.unsubscribe(topic, **kw)
        return self.unsubacks.get(timeout=5)

    def publish(
        self,
        topic: str,
        payload: bytes | str = b"",
        qos: int = 0,
        retain: bool = False,
        properties: Properties | None = None,
        wait: bool = True,
    ) -> mqtt.MQTTMessageInfo:
        info = self.c.publish(topic, payload, qos, retain, properties=properties)
        if wait and qos > 0:
            info.wait_for_publish(5)
        return info

    def get(self, timeout: float = 5.0) -> mqtt.MQTTMessage:
        return self.messages.get(timeout=timeout)

    def get_many(self, n: int, timeout: float = 5.0) -> list[mqtt.MQTTMessage]:
        deadline = time.monotonic() + timeout
        out = []
        while len(out) < n:
            out.append(self.messages.get(timeout=max(0.01, deadline - time.monotonic())))
        return out

    def expect_nothing(self, wait: float = 0.5) -> None:
        try:
            msg = self.messages.get(timeout=wait)
        except queue.Empty:
            return
        raise AssertionError(f"unexpected message on {msg.topic}: {msg.payload!r}")

    def disconnect(self, properties: Properties | None = None, reasoncode: Any = None) -> None:
        self.c.disconnect(reasoncode=reasoncode, properties=properties)
        self.disconnected.wait(5)
        self.c.loop_stop()

    def drop(self) -> None:
        """Vanish without DISCONNECT (as a crashed device does)."""
        # Ask the network thread to end without joining it: it may sit in a
        # one-second select, and waiting for that slows every test that drops.
        self.c._thread_terminate = True
        sock = self.c.socket()
        if sock is not None:
            # The broker may be gone already (SIGKILL): then there is nothing to end.
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()


def connack_code(port: int, client_id: str, username: str, password: str) -> int:
    """The CONNACK reason code for these credentials (paho maps v3 codes 4 and 5 to 0x86, 0x87)."""
    t = TestClient(client_id)
    t.c.username_pw_set(username, password)
    value = int(t.connect(port, expect_rc=None)[1].value)
    if value == 0:
        t.disconnect()
    else:
        # Stop paho reconnecting; its thread then ends by itself (joining it can take 1 s).
        t.c.disconnect()
    return value


def props(packet_type: int = PacketTypes.CONNECT, **values: Any) -> Properties:
    p = Properties(packet_type)
    for name, value in values.items():
        setattr(p, name, value)
    return p


def raw_connect(port: int, data: bytes, read: bool = True, timeout: float = 3.0) -> bytes:
    """Send raw bytes on a new socket; return everything the broker sends until it closes."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        s.sendall(data)
        if not read:
            return b""
        chunks = []
        while True:
            try:
                chunk = s.recv(65536)
            except (TimeoutError, ConnectionResetError):
                break
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        s.close()
