"""The heartbeat's keep-alive, from a thread of its own.

A node's ``alive`` key is created and checked by its event loop (``ClusterNode``'s
heartbeat, which also notices a lapse and announces the node's routes again). Under a
saturating load the loop may reach its next heartbeat late, and the key would expire
while the node is serving. This thread extends the key every half second from its own
blocking connection, so load alone never lets it lapse, but only:

- while the loop answers: each beat posts a mark to the loop, and a loop that has not
  run one for ``LOOP_STALL`` seconds (blocked, swapping) gets no more extensions, so a
  stalled node is still taken for down, and finds out itself as before;
- while the key holds this process's token: the script extends, it never creates, so a
  key that lapsed stays lapsed until the loop's own heartbeat sees it (and acts on it),
  and another process's claim on the name is never touched.

A stopped process (SIGSTOP) runs no thread either. Failures are silent here: the node's
own connection notices an outage and logs it once; the thread retries at its next beat.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from typing import Any

from redis.exceptions import RedisError

from ferrymq.cluster.redis_url import RedisTarget, sync_client

BEAT_INTERVAL = 0.5
#: A loop that ran no mark for this long (seconds) is stalled: its key is left to expire.
LOOP_STALL = 1.5

# Extend KEYS[1] by ARGV[2] ms if it still holds this process's token ARGV[1].
_EXTEND = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""


class KeepAlive:
    """Extends one node's alive key from a daemon thread while its loop answers."""

    def __init__(self, target: RedisTarget, key: str, token: bytes, ttl_ms: int) -> None:
        self._target = target
        self._key = key
        self._token = token
        self._ttl_ms = ttl_ms
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_at = time.monotonic()  # when the loop last ran a mark
        #: Whether to extend at all (the node is connected and its key claimed).
        self.active = False
        self.extended = 0  # extensions made, for tests and the curious

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._run, name="ferrymq-heartbeat", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self.active = False
        self._stop.set()

    def _mark(self) -> None:
        self._loop_at = time.monotonic()

    def _run(self) -> None:
        redis: Any = None
        script: Any = None
        loop = self._loop
        assert loop is not None
        while not self._stop.wait(BEAT_INTERVAL):
            with contextlib.suppress(RuntimeError):  # the loop closed: the node is exiting
                loop.call_soon_threadsafe(self._mark)
            if not self.active or time.monotonic() - self._loop_at > LOOP_STALL:
                continue
            try:
                if redis is None:
                    redis = sync_client(self._target, socket_timeout=1.0, socket_connect_timeout=1)
                    script = redis.register_script(_EXTEND)
                if script(keys=[self._key], args=[self._token, self._ttl_ms]):
                    self.extended += 1
            except (RedisError, OSError):
                with contextlib.suppress(RedisError, OSError):
                    redis.close()
                redis = None
        if redis is not None:
            with contextlib.suppress(RedisError, OSError):
                redis.close()
