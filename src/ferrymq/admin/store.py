"""The SQLite store behind a running broker's store: where the admin data lives.

The core holds its store as a ``Store``, which has no admin operations; the API, the
dashboard and their first start (apps, dashboard users and sessions) need those of
``SqliteStore``. A cluster node's store (``cluster.store.ClusterStore``) sends the
session writes to Redis and keeps everything else in the node's ``SqliteStore``, its
``local``: that is the one returned. Read without importing ``cluster``, which a
standalone node never loads.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ferrymq.storage.sqlite import SqliteStore

if TYPE_CHECKING:
    from ferrymq.core.broker import Broker


def admin_store(broker: Broker) -> SqliteStore:
    """``broker``'s SQLite store; RuntimeError when it has none (no store, or another kind)."""
    store = broker.store
    if isinstance(store, SqliteStore):
        return store
    local = getattr(store, "local", None)  # a cluster node's store wraps it
    if isinstance(local, SqliteStore):
        return local
    raise RuntimeError("the management API needs a broker with a SQLite store")
