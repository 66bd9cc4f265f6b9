"""The stamp file that tells running brokers their data directory's admin data changed.

``ferrymq users|acl|apps ...`` write to the SQLite database and then replace
``access.stamp`` next to it (``touch_stamp``); a running broker compares the
file's identity (``stamp_of``, one ``stat``) a few times a second. It lives
here, beside the database it speaks for, so that the admin layer (which
reloads the broker) and cluster mode (which spreads the edit to the other
nodes) both watch the same file.
"""

from __future__ import annotations

import os

from ferrymq.digests import token_hex

STAMP = "access.stamp"


def stamp_path(data_dir: str | os.PathLike[str]) -> str:
    return os.path.join(data_dir, STAMP)


def touch_stamp(data_dir: str | os.PathLike[str]) -> None:
    """Tell running brokers on ``data_dir`` that access data changed."""
    path = stamp_path(data_dir)
    tmp = f"{path}.{token_hex(4)}"
    with open(tmp, "w") as f:
        f.write(token_hex(8))
    os.replace(tmp, path)


def stamp_of(path: str | os.PathLike[str]) -> tuple[int, int, int] | None:
    """The stamp's identity (inode, mtime, size), None when there is none."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)
