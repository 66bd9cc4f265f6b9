"""Reading request bodies, query strings and paging values, with API.md's error codes.

Every helper raises :class:`ApiError` with a message naming the offending
field, so a handler is a straight line of reads followed by the work.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from multidict import MultiDict, MultiMapping

from ferrymq.api.errors import BAD_JSON, BAD_PARAMETER, MISSING_PARAMETER, bad_request
from ferrymq.api.paging import page_body, window

DEFAULT_LIMIT = 10000
MAX_MQTT_STRING = 65535  # bytes in an MQTT UTF-8 string

_MISSING = object()


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


_decode = json.JSONDecoder(parse_constant=_reject_constant).decode


class Body(Protocol):
    """What ``read_json`` reads: an aiohttp request (this module does not import aiohttp,
    so the operations of ``api/ops`` that use its helpers do not either)."""

    async def read(self) -> bytes: ...


async def read_json(request: Body) -> Any:
    """The parsed JSON body; 400/109 when it is empty or not JSON.

    The size limit (``api_max_body``) is enforced by aiohttp while reading.
    """
    raw = await request.read()
    try:
        text = raw.decode("utf-8")
        value = _decode(text)
        if "\\u" in text:
            # An escaped lone surrogate decodes to a str that cannot be encoded
            # again; refuse it here rather than fail later in storage.
            json.dumps(value, ensure_ascii=False).encode("utf-8")
    except (ValueError, UnicodeError, RecursionError):
        raise bad_request(BAD_JSON, "the request body is not valid JSON") from None
    return value


def type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def as_object(value: Any, what: str = "the request body") -> dict[str, Any]:
    if not isinstance(value, dict):
        raise bad_request(BAD_PARAMETER, f"{what} must be a JSON object, not {type_name(value)}")
    return value


def as_batch(value: Any) -> list[Any]:
    if not isinstance(value, list):
        raise bad_request(
            BAD_PARAMETER, f"the request body must be a JSON array, not {type_name(value)}"
        )
    return value


def get_str(
    obj: dict[str, Any],
    key: str,
    *,
    required: bool = True,
    default: str | None = None,
    empty_code: int | None = None,
    mqtt: bool = False,
) -> str | None:
    """A string field. Missing: 400/107 when required; ``""``: ``empty_code`` if given.

    ``mqtt``: the value must be one an MQTT client can present (see ``mqtt_string``).
    """
    value = obj.get(key, _MISSING)
    if value is _MISSING or value is None:
        if required:
            raise bad_request(MISSING_PARAMETER, f"missing required field {key!r}")
        return default
    if not isinstance(value, str):
        raise bad_request(BAD_PARAMETER, f"{key!r} must be a string, not {type_name(value)}")
    if not value and empty_code is not None:
        raise bad_request(empty_code, f"{key!r} must not be empty")
    if mqtt:
        mqtt_string(key, value)
    return value


def mqtt_string(key: str, value: Any) -> str:
    """MQTT's string rules: a string of at most 65,535 bytes of UTF-8, without U+0000."""
    if not isinstance(value, str):
        raise bad_request(BAD_PARAMETER, f"{key!r} must be a string, not {type_name(value)}")
    if "\x00" in value or len(value.encode("utf-8")) > MAX_MQTT_STRING:
        raise bad_request(
            BAD_PARAMETER,
            f"{key!r} must be at most {MAX_MQTT_STRING} bytes of UTF-8, without U+0000",
        )
    return value


def get_int(obj: dict[str, Any], key: str, default: int, lo: int, hi: int) -> int:
    """An integer field in [lo, hi]; JSON booleans and fractions are refused."""
    value = obj.get(key, _MISSING)
    if value is _MISSING or value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise bad_request(BAD_PARAMETER, f"{key!r} must be an integer, not {type_name(value)}")
    if isinstance(value, float):
        if not value.is_integer():
            raise bad_request(BAD_PARAMETER, f"{key!r} must be an integer, not {value}")
        value = int(value)
    if not lo <= value <= hi:
        raise bad_request(BAD_PARAMETER, f"{key!r} must be between {lo} and {hi}, not {value}")
    return value


def get_bool(obj: dict[str, Any], key: str, default: bool) -> bool:
    value = obj.get(key, _MISSING)
    if value is _MISSING or value is None:
        return default
    if not isinstance(value, bool):
        raise bad_request(BAD_PARAMETER, f"{key!r} must be true or false, not {type_name(value)}")
    return value


def get_choice(obj: dict[str, Any], key: str, choices: Sequence[str], default: str) -> str:
    value = get_str(obj, key, required=False, default=default)
    assert value is not None
    if value not in choices:
        raise bad_request(BAD_PARAMETER, f"{key!r} must be one of {', '.join(choices)}")
    return value


# --- query strings -----------------------------------------------------------


class Queried(Protocol):
    """What the query helpers read: a request, or :class:`QueryOf`."""

    @property
    def query(self) -> MultiMapping[str]: ...


class QueryOf:
    """A query string alone: another node's request, as handed to this node's filters."""

    def __init__(self, pairs: Sequence[Sequence[str]]) -> None:
        self.query: MultiMapping[str] = MultiDict((k, v) for k, v in pairs)


def query_pairs(request: Queried) -> list[tuple[str, str]]:
    """The query string as (key, value) pairs, every repeated key kept (for ``QueryOf``)."""
    return list(request.query.items())


def _ascii_int(text: str) -> int | None:
    """An integer written in ASCII digits (an optional leading ``-``), else None.

    Python's ``int()`` also takes spaces, ``+``, ``_`` and non-ASCII digits.
    """
    digits = text[1:] if text.startswith("-") else text
    if not digits or not digits.isascii() or not digits.isdigit():
        return None
    return int(text)


def query_int(request: Queried, key: str) -> int | None:
    text = request.query.get(key)
    if text is None:
        return None
    value = _ascii_int(text)
    if value is None:
        raise bad_request(BAD_PARAMETER, f"query parameter {key} must be an integer")
    return value


def query_bool(request: Queried, key: str) -> bool | None:
    text = request.query.get(key)
    if text is None:
        return None
    low = text.lower()
    if low == "true":
        return True
    if low == "false":
        return False
    raise bad_request(BAD_PARAMETER, f"query parameter {key} must be true or false")


def query_time(request: Queried, key: str) -> float | None:
    """An epoch-seconds filter value (integer or decimal)."""
    text = request.query.get(key)
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise bad_request(BAD_PARAMETER, f"query parameter {key} must be epoch seconds")
    return value


def query_choice(request: Queried, key: str, choices: Sequence[str]) -> str | None:
    text = request.query.get(key)
    if text is not None and text not in choices:
        raise bad_request(
            BAD_PARAMETER, f"query parameter {key} must be one of {', '.join(choices)}"
        )
    return text


# --- paging ------------------------------------------------------------------


def _positive(request: Queried, key: str, default: int) -> int:
    text = request.query.get(key)
    if text is None:
        return default
    value = _ascii_int(text) or 0
    if value < 1:
        raise bad_request(BAD_PARAMETER, f"{key} must be a positive integer, not {text!r}")
    return value


def page_params(request: Queried) -> tuple[int, int]:
    """(page, limit) from ``_page`` (default 1) and ``_limit`` (default 10000)."""
    return _positive(request, "_page", 1), _positive(request, "_limit", DEFAULT_LIMIT)


def paged(
    request: Queried,
    items: Sequence[Any],
    fmt: Callable[[Any], Any] | None = None,
) -> dict[str, Any]:
    """The success body of a list endpoint: one page of ``items`` and ``meta``.

    ``fmt`` turns an item into its JSON form; it is only applied to the items
    of the page, so filtering many raw objects and formatting a few is cheap.
    """
    page, limit = page_params(request)
    answer = window(items, (page - 1) * limit, limit, fmt or (lambda item: item))
    return page_body(page, limit, answer["count"], answer["items"])
