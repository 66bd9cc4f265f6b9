"""What one ``ferrymq bench`` run does: mode, broker, clients, messages. Picklable for workers."""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass

# Payload layout shared with the C generator (mqttbench): send time (CLOCK_MONOTONIC ns),
# publisher index, sequence number, magic; little endian. The rest is zero padding.
STAMP = struct.Struct("<QIII")
MAGIC = 0x4342424D
MIN_SIZE = STAMP.size


@dataclass
class BenchOptions:
    mode: str  # "pub", "sub" or "conn"
    host: str = "127.0.0.1"
    port: int = 1883
    count: int = 1  # clients
    start_index: int = 0  # index of the first client (several runs side by side)
    conn_interval_ms: float = 10.0  # between connection starts, over all workers
    version: int = 4
    keepalive: int = 300
    clean: bool = True
    username: str | None = None
    password: str | None = None
    prefix: str = ""
    topic: str = "bench/%i"
    qos: int = 0
    retain: bool = False
    size: int = 256
    msg_interval_ms: float = 1000.0  # per publisher; 0: as fast as the broker takes them
    limit: int = 0  # messages per client (pub: to send, sub: to receive); 0: no limit
    inflight: int = 32  # QoS 1/2 messages a publisher keeps unacknowledged at most
    duration: float = 0.0  # seconds; 0: until the limit or Ctrl-C
    workers: int = 0  # processes; 0: one per CPU, at most one per client
    tls: bool = False
    cafile: str | None = None
    insecure: bool = False
    ws: bool = False  # MQTT over WebSocket (wss with tls)
    ws_path: str = "/mqtt"
    connect_timeout: float = 30.0

    def __post_init__(self) -> None:
        if not self.prefix:
            self.prefix = f"fb{os.getpid()}"

    def worker_count(self) -> int:
        n = self.workers or os.cpu_count() or 1
        return max(1, min(n, self.count))

    @property
    def transport(self) -> str:
        """The transport name: tcp, tls, ws or wss."""
        if self.ws:
            return "wss" if self.tls else "ws"
        return "tls" if self.tls else "tcp"

    def client_id(self, index: int) -> str:
        return f"{self.prefix}-{self.mode}-{index}"

    def topic_for(self, index: int) -> str:
        """``%i`` is the client index, ``%c`` the client id, ``%u`` the username."""
        return (
            self.topic.replace("%i", str(index))
            .replace("%c", self.client_id(index))
            .replace("%u", self.username or "")
        )
