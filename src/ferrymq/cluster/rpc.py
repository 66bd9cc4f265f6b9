"""Requests between nodes over Redis, for the management API of the whole cluster.

Keys (under ``ferrymq:``)::

    rpc:{node}    pub/sub channel: requests to the node, and replies to its own requests

A request is one JSON message ``{id, from, op, args, until}`` published on
the target's channel; the target runs ``handler(op, args)`` and publishes
``{re, ok}`` (or ``{re, fail}`` when the handler raised) on the asker's
channel. What the handler does and returns is the API's business; this part
only carries it.

Rules kept here:
- a request is answered in time or fails: ``call`` raises ``RpcUnanswered``
  (a ``TimeoutError``) when the target does not reply before the timeout,
  when no one listens on its channel for the whole timeout, or when this
  node has no Redis; never a partial or late answer;
- ``until`` is the asker's deadline (wall clock): a node that receives a
  request after it (a node frozen and woken, a backlog) drops it unanswered,
  so a kick the asker already reported as failed is not carried out later;
- replies nobody waits for any more are ignored; a request whose handler
  raised answers ``fail`` (``RpcFailed`` on the asker), and the error is
  logged on the node that ran it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from redis.exceptions import RedisError

if TYPE_CHECKING:
    from redis import asyncio as aioredis

log = logging.getLogger("ferrymq.cluster")

#: How often a request is published again while no one listens on the target's channel
#: (a node between its heartbeat and its subscription, at start or after an outage).
REPUBLISH_EVERY = 0.1

Handler = Callable[[str, Any], Awaitable[Any]]


def rpc_channel(node: str) -> str:
    return f"ferrymq:rpc:{node}"


class RpcUnanswered(TimeoutError):
    """The node did not answer in time (frozen, gone, unreachable, or Redis is)."""


class RpcFailed(RuntimeError):
    """The node answered that the request failed (its log says why)."""


class Rpc:
    """This node's requests to the others and its answers to theirs (a ``ClusterPart``)."""

    def __init__(self, node_name: str) -> None:
        self.name = node_name
        #: What answers the other nodes' requests (set by the API); None: they fail.
        self.handler: Handler | None = None
        self._redis: aioredis.Redis | None = None  # while connected
        self._pubsub: Any = None
        self._pending: dict[str, asyncio.Future[Any]] = {}
        self._running: set[asyncio.Task[None]] = set()

    # --- asking ---------------------------------------------------------------------

    async def call(self, node: str, op: str, args: Any, timeout: float) -> Any:
        """``op(args)`` on ``node``: its answer, or ``RpcUnanswered`` / ``RpcFailed``."""
        deadline = time.monotonic() + timeout
        request_id = uuid.uuid4().hex
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        request = json.dumps(
            {
                "id": request_id,
                "from": self.name,
                "op": op,
                "args": args,
                "until": time.time() + timeout,
            },
            separators=(",", ":"),
        )
        try:
            while True:
                redis = self._redis
                if redis is None:
                    raise RpcUnanswered(f"node {node} cannot be asked: Redis is unreachable")
                try:
                    listeners = await asyncio.wait_for(
                        redis.publish(rpc_channel(node), request), deadline - time.monotonic()
                    )
                except (RedisError, OSError) as exc:
                    raise RpcUnanswered(f"node {node} cannot be asked: {exc}") from None
                if listeners:
                    break
                if time.monotonic() + REPUBLISH_EVERY >= deadline:
                    raise RpcUnanswered(f"node {node} does not listen for requests")
                await asyncio.sleep(REPUBLISH_EVERY)
            return await asyncio.wait_for(future, deadline - time.monotonic())
        except RpcUnanswered:
            raise
        except TimeoutError:
            raise RpcUnanswered(f"node {node} did not answer within {timeout:g} s") from None
        finally:
            self._pending.pop(request_id, None)
            if future.done() and not future.cancelled():
                future.exception()  # seen, even when the failure came another way

    def _answered(self, message: dict[str, Any]) -> None:
        future = self._pending.get(str(message.get("re")))
        if future is None or future.done():
            return  # too late: the asker gave up
        if "fail" in message:
            future.set_exception(RpcFailed(str(message["fail"])))
        else:
            future.set_result(message.get("ok"))

    # --- answering ------------------------------------------------------------------

    def _received(self, data: bytes) -> None:
        try:
            message = json.loads(data)
            if not isinstance(message, dict):
                raise ValueError("not an object")
            until = float(message.get("until", 0))
        except (ValueError, TypeError) as exc:
            log.warning("cluster: skipped an RPC message this node cannot read (%s)", exc)
            return
        if "re" in message:
            self._answered(message)
        elif until > time.time():
            task = asyncio.create_task(self._answer(message))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    async def _answer(self, request: dict[str, Any]) -> None:
        reply: dict[str, Any] = {"re": request.get("id")}
        try:
            if self.handler is None:
                raise RuntimeError("this node does not answer requests yet")
            reply["ok"] = await self.handler(str(request.get("op")), request.get("args"))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception(
                "cluster: request %r from %s failed", request.get("op"), request.get("from")
            )
            reply["fail"] = f"{type(exc).__name__} on {self.name}"
        redis = self._redis
        if redis is None or float(request.get("until", 0)) <= time.time():
            return  # the asker has given up
        with contextlib.suppress(RedisError, OSError):
            await redis.publish(
                rpc_channel(str(request.get("from"))), json.dumps(reply, separators=(",", ":"))
            )

    # --- the ClusterPart --------------------------------------------------------------

    async def resync(self, redis: aioredis.Redis) -> None:
        self._pubsub = redis.pubsub()
        await self._pubsub.subscribe(rpc_channel(self.name))
        self._redis = redis

    async def run(self, redis: aioredis.Redis) -> None:
        pubsub = self._pubsub
        try:
            while True:
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                if message is not None and message["type"] == "message":
                    self._received(message["data"])
        finally:
            with contextlib.suppress(RedisError, OSError):
                await pubsub.aclose()

    def went_down(self) -> None:
        self._redis = None
        for future in self._pending.values():
            if not future.done():
                future.set_exception(RpcUnanswered("Redis became unreachable"))

    async def stop(self, redis: aioredis.Redis | None) -> None:
        self.went_down()
        for task in list(self._running):
            task.cancel()
