"""A small blocking HTTP client for the management API tests (standard library only)."""

from __future__ import annotations

import base64
import http.client
import json
import ssl
import time
from collections.abc import Callable
from typing import Any

from brokers import API_APP_ID, API_APP_SECRET


class Response:
    def __init__(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        self.status = status
        self.raw = body
        self.headers = headers
        try:
            self.json: Any = json.loads(body) if body else None
        except ValueError:
            self.json = None

    @property
    def code(self) -> Any:
        return self.json.get("code") if isinstance(self.json, dict) else None

    @property
    def data(self) -> Any:
        return self.json.get("data") if isinstance(self.json, dict) else None

    @property
    def meta(self) -> Any:
        return self.json.get("meta") if isinstance(self.json, dict) else None

    def __repr__(self) -> str:
        return f"Response({self.status}, {self.raw[:300]!r})"


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


class Api:
    """``api.get("/clients")`` and friends against ``127.0.0.1:port/api/v4``."""

    def __init__(
        self,
        port: int,
        auth: tuple[str, str] | None = (API_APP_ID, API_APP_SECRET),
        https: bool = False,
    ) -> None:
        self.port = port
        self.auth = auth
        self.https = https

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        raw: bytes | None = None,
        headers: dict[str, str] | None = None,
        auth: tuple[str, str] | bool | None = True,
        prefix: str = "/api/v4",
    ) -> Response:
        if self.https:
            context = ssl._create_unverified_context()
            conn: http.client.HTTPConnection = http.client.HTTPSConnection(
                "127.0.0.1", self.port, timeout=10, context=context
            )
        else:
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        hdrs = dict(headers or {})
        creds = self.auth if auth is True else auth
        if creds:
            hdrs.setdefault("Authorization", basic(*creds))  # type: ignore[misc]
        data = raw
        if data is None and body is not None:
            data = json.dumps(body).encode()
            hdrs.setdefault("Content-Type", "application/json")
        try:
            conn.request(method, prefix + path, body=data, headers=hdrs)
            resp = conn.getresponse()
            return Response(resp.status, resp.read(), dict(resp.getheaders()))
        finally:
            conn.close()

    def get(self, path: str, **kw: Any) -> Response:
        return self.request("GET", path, **kw)

    def post(self, path: str, body: Any = None, **kw: Any) -> Response:
        return self.request("POST", path, body, **kw)

    def put(self, path: str, body: Any = None, **kw: Any) -> Response:
        return self.request("PUT", path, body, **kw)

    def delete(self, path: str, **kw: Any) -> Response:
        return self.request("DELETE", path, **kw)

    def ok(self, method: str, path: str, body: Any = None) -> Any:
        """Request and assert success; return ``data``."""
        r = self.request(method, path, body)
        assert r.status == 200 and r.code == 0, r
        return r.data

    def metrics(self) -> dict[str, int]:
        return self.ok("GET", "/metrics")[0]["metrics"]


def wait_for(check: Callable[[], Any], timeout: float = 5.0, interval: float = 0.02) -> Any:
    """Poll ``check`` until it returns something truthy; return that."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(interval)
