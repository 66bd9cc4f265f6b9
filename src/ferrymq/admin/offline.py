"""Offline edits: admin data changed in the data directory, not through a running broker.

Rules kept here:
- the editor opens the same SQLite database as the broker (WAL lets both write);
- after a change that succeeded, the stamp file that a running broker watches
  is replaced (``sync.py``), so the broker applies the change within a second;
- whether a missing database may be created is the caller's decision, made
  before anything is opened (``database_path`` says where it would be).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from ferrymq import config
from ferrymq.storage.sqlite import SqliteStore
from ferrymq.storage.stamp import touch_stamp

Edit = Callable[[config.Settings, SqliteStore], int]


def database_path(settings: config.Settings) -> str:
    """The database file of ``settings``' data directory, absolute."""
    return os.path.realpath(settings.db_path)


@contextmanager
def open_store(settings: config.Settings) -> Iterator[SqliteStore]:
    store = SqliteStore(settings.db_path, settings.flush_interval)
    store.open()
    try:
        yield store
    finally:
        store.close()


def edit(settings: config.Settings, action: Edit, changes: bool) -> int:
    """Run ``action`` on the data directory's store and return its status.

    ``changes``: the action may have changed access data or apps; when it
    returned 0, running brokers on the data directory are told to reload.
    """
    with open_store(settings) as store:
        status = action(settings, store)
    if changes and status == 0:
        touch_stamp(settings.data_dir)
    return status
