"""The error envelope of API.md: HTTP status by category, ``code`` by cause.

Handlers raise :class:`ApiError`; the middleware in ``app.py`` turns it (and
aiohttp's own HTTP errors, and anything unexpected) into a JSON body that
always has ``code`` and ``message``.
"""

from __future__ import annotations

from typing import Any

# Codes of API.md.
OK = 0
RPC_ERROR = 101
UNKNOWN_ERROR = 102
BAD_CREDENTIALS = 103
EMPTY_CREDENTIALS = 104
NO_SUCH_USER = 105
ADMIN_UNDELETABLE = 106
MISSING_PARAMETER = 107
BAD_PARAMETER = 108
BAD_JSON = 109
PLUGIN_ENABLED = 110
PLUGIN_DISABLED = 111
CLIENT_OFFLINE = 112
USER_EXISTS = 113
OLD_PASSWORD_WRONG = 114
ILLEGAL_TOPIC = 115


class ApiError(Exception):
    """A request that cannot be served: ``status`` (HTTP), ``code`` (API.md) and a message.

    ``data`` is added to the body when given (a batch or a partly applied
    request says what happened to each item).
    """

    def __init__(self, status: int, code: int, message: str, data: Any = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.data = data

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.data is not None:
            body["data"] = self.data
        return body


def bad_request(code: int, message: str, data: Any = None) -> ApiError:
    return ApiError(400, code, message, data)


def not_found(code: int, message: str) -> ApiError:
    return ApiError(404, code, message)
