"""An empty dict that refuses writes: a stand-in many objects share until they own one.

Compiled code (core/session.py) checks that a ``dict`` attribute holds a dict, which a
mapping proxy is not; this is one, and as read-only as a proxy. It stays interpreted:
a dict subclass cannot be a compiled class.
"""

from __future__ import annotations

from typing import Any, NoReturn


class EmptyDict(dict):  # type: ignore[type-arg]
    """Always empty: every write raises ``TypeError``."""

    __slots__ = ()

    def _refuse(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise TypeError("a shared empty stand-in: give the owner its own dict first")

    __setitem__ = __delitem__ = setdefault = update = pop = popitem = clear = _refuse  # type: ignore[assignment]
