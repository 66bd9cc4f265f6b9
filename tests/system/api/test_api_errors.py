"""Authentication of API requests and every class of bad request: 4xx, never a crash."""

from __future__ import annotations

import json
import socket

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from api_http import Api, basic


@pytest.fixture
def api(broker) -> Api:
    return Api(broker.api_port)


@pytest.mark.parametrize(
    "header",
    [
        None,
        basic("test-app", "wrong"),
        basic("nobody", "test-secret"),
        basic("test-app", ""),
        "Basic !!!not-base64",
        "Bearer abc",
        "Basic " + "dGVzdC1hcHA=",  # no colon
    ],
)
def test_bad_credentials(api: Api, header: str | None) -> None:
    headers = {"Authorization": header} if header else {}
    r = api.get("/clients", auth=None, headers=headers)
    assert r.status == 401 and r.code == 103, r
    assert r.headers["WWW-Authenticate"].startswith("Basic")
    assert r.json["message"]


def test_unknown_path_needs_credentials_first(api: Api) -> None:
    assert api.get("/no/such/thing", auth=None).status == 401


def test_unknown_path_and_method(api: Api) -> None:
    r = api.get("/no/such/thing")
    assert r.status == 404 and r.code != 0 and "no such path" in r.json["message"]
    # API.md: statuses stay 200/400/401/404/500, so a wrong method is 404 / 102
    r = api.request("PATCH", "/clients")
    assert (r.status, r.code) == (404, 102), r
    assert "GET" in r.headers["Allow"]
    r = api.delete("/metrics")
    assert (r.status, r.code) == (404, 102)
    assert "/metrics" not in r.json["message"]  # nothing of the request is echoed
    r = api.get("/clients", prefix="/api/v5")
    assert r.status == 404 and r.json["code"] != 0


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        (b"", 109),
        (b"{", 109),
        (b"{'single': 'quotes'}", 109),
        (b"\xff\xfe", 109),
        (b'{"username": NaN, "password": "x"}', 109),
        (b'{"username": "\\ud800", "password": "x"}', 109),
        (b"[" * 100000 + b"]" * 100000, 109),
        (b"42", 108),
        (b"null", 108),
        (b'"text"', 108),
    ],
)
def test_bad_json(api: Api, raw: bytes, code: int) -> None:
    r = api.post("/auth_username", raw=raw, headers={"Content-Type": "application/json"})
    assert (r.status, r.code) == (400, code), r


def test_oversized_body_refused(api: Api) -> None:
    body = json.dumps({"topic": "big", "payload": "x" * (5 * 1024 * 1024)}).encode()
    r = api.post("/mqtt/publish", raw=body, headers={"Content-Type": "application/json"})
    assert (r.status, r.code) == (400, 108), r
    assert api.get("/metrics").status == 200  # still serving


def test_form_encoded_body_is_still_read_as_json(api: Api, uid: str) -> None:
    # curl -d sends application/x-www-form-urlencoded unless told otherwise
    raw = json.dumps({"topic": f"{uid}/curl", "payload": "x"}).encode()
    r = api.post(
        "/mqtt/publish", raw=raw, headers={"Content-Type": "application/x-www-form-urlencoded"}
    )
    assert r.json == {"code": 0}


def test_index_lists_routes(api: Api) -> None:
    for prefix in ("/api/v4", "/api/v4/"):
        r = api.get("", prefix=prefix)
        assert r.status == 200 and r.code == 0
        names = {(d["method"], d["path"]) for d in r.data}
        assert ("GET", "/clients") in names and ("POST", "/mqtt/publish") in names
        assert all(set(d) == {"name", "method", "path", "descr"} for d in r.data)


def test_metrics_names(api: Api) -> None:
    r = api.get("/metrics")
    assert r.status == 200 and r.data[0]["node"] == "ferrymq@127.0.0.1"
    m = r.data[0]["metrics"]
    names = [
        "bytes.received",
        "bytes.sent",
        "client.connect",
        "client.connack",
        "client.connected",
        "client.disconnected",
        "client.authenticate",
        "client.auth.anonymous",
        "client.check_acl",
        "client.subscribe",
        "client.unsubscribe",
        "delivery.dropped",
        "delivery.dropped.too_large",
        "delivery.dropped.queue_full",
        "delivery.dropped.qos0_msg",
        "delivery.dropped.expired",
        "delivery.dropped.no_local",
        "messages.received",
        "messages.sent",
        "messages.qos0.received",
        "messages.qos1.received",
        "messages.qos2.received",
        "messages.qos0.sent",
        "messages.qos1.sent",
        "messages.qos2.sent",
        "messages.publish",
        "messages.delivered",
        "messages.acked",
        "messages.dropped",
        "messages.dropped.expired",
        "messages.dropped.no_subscribers",
        "messages.forward",
        "messages.retained",
        "messages.delayed",
        "packets.received",
        "packets.sent",
        "session.created",
        "session.resumed",
        "session.takeovered",
        "session.discarded",
        "session.terminated",
        "rules.matched",
        "actions.success",
        "actions.failure",
        # the names EMQX 4.4 added, and ferrymq's delivery.dropped.acl
        "client.auth.success",
        "client.auth.success.anonymous",
        "client.auth.failure",
        "client.acl.allow",
        "client.acl.deny",
        "client.acl.cache_hit",
        "messages.dropped.await_pubrel_timeout",
        "delivery.dropped.acl",
    ]
    for name in names:
        assert isinstance(m[name], int), name
    for ptype in ("connect", "connack", "publish", "puback", "subscribe", "suback", "pingreq"):
        assert f"packets.{ptype}.received" in m and f"packets.{ptype}.sent" in m
    assert m["rules.matched"] == 0
    assert m["client.acl.allow"] + m["client.acl.deny"] == (
        m["client.check_acl"] + m["client.acl.cache_hit"]
    )
    assert api.post("/metrics").data[0]["metrics"].keys() == m.keys()


def test_listeners(api: Api, broker) -> None:
    data = api.ok("GET", "/listeners")
    assert data[0]["node"] == "ferrymq@127.0.0.1"
    tcp = [item for item in data[0]["listeners"] if item["protocol"] == "mqtt:tcp"]
    assert tcp and tcp[0]["listen_on"].endswith(f":{broker.port}")
    assert tcp[0]["current_conns"] >= 0


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=12,
)
_keys = st.sampled_from(
    [
        "clientid",
        "username",
        "password",
        "topic",
        "topics",
        "qos",
        "retain",
        "payload",
        "encoding",
        "action",
        "access",
        "properties",
        "x",
    ]
)
_bodies = (
    _json_values
    | st.dictionaries(_keys, _json_values, max_size=6)
    | st.lists(st.dictionaries(_keys, _json_values, max_size=5), max_size=3)
)
_POSTS = [
    "/mqtt/publish",
    "/mqtt/publish_batch",
    "/mqtt/subscribe",
    "/mqtt/subscribe_batch",
    "/mqtt/unsubscribe",
    "/mqtt/unsubscribe_batch",
    "/acl",
    "/auth_clientid",
]


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(path=st.sampled_from(_POSTS), body=_bodies)
def test_fuzzed_bodies_never_crash(broker, path: str, body) -> None:
    api = Api(broker.api_port)
    r = api.post(path, body)
    assert r.status in (200, 400, 404), r
    assert isinstance(r.json, dict) and isinstance(r.json.get("code"), int)
    if r.status != 200:
        assert r.json["code"] != 0 and r.json["message"]
    # tidy what a lucky body created
    if path in ("/acl", "/auth_clientid") and r.status == 200:
        items = body if isinstance(body, list) else [body]
        for item in items:
            if not isinstance(item, dict):
                continue
            if path == "/auth_clientid" and isinstance(item.get("clientid"), str):
                api.delete("/auth_clientid/" + _quote(item["clientid"]))
            if path == "/acl" and isinstance(item.get("topic"), str):
                for kind in ("clientid", "username"):
                    if isinstance(item.get(kind), str):
                        api.delete(
                            f"/acl/{kind}/{_quote(item[kind])}/topic/{_quote(item['topic'])}"
                        )
                        break
                else:
                    api.delete(f"/acl/$all/topic/{_quote(item['topic'])}")


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    path=st.sampled_from(["/clients", "/subscriptions", "/auth_username", "/acl/clientid"]),
    query=st.dictionaries(
        st.sampled_from(
            [
                "_page",
                "_limit",
                "clientid",
                "qos",
                "conn_state",
                "proto_ver",
                "clean_start",
                "_gte_created_at",
                "_match_topic",
                "share",
                "topic",
            ]
        ),
        st.text(max_size=12),
        max_size=3,
    ),
)
def test_fuzzed_queries_never_crash(broker, path: str, query: dict[str, str]) -> None:
    from urllib.parse import urlencode

    r = Api(broker.api_port).get(f"{path}?{urlencode(query)}")
    assert r.status in (200, 400), r
    assert isinstance(r.json.get("code"), int)


def _quote(text: str) -> str:
    from urllib.parse import quote

    return quote(text, safe="")


def _raw_exchange(port: int, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send raw bytes, read the whole answer (the server closes after an error)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        chunks = []
        while True:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            chunks.append(chunk)
    raw = b"".join(chunks)
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:])}
    return status, headers, body


_SECRET_MARK = "ZQXJ" * 4


@pytest.mark.parametrize(
    ("name", "request_bytes", "status"),
    [
        (
            "long request line",
            b"GET /api/v4/clients?q=" + _SECRET_MARK.encode() * 600 + b" HTTP/1.1\r\n"
            b"Host: x\r\n\r\n",
            400,
        ),
        (
            "long header",
            b"GET /api/v4/clients HTTP/1.1\r\nHost: x\r\nX-Long: "
            + _SECRET_MARK.encode() * 600
            + b"\r\n\r\n",
            400,
        ),
        (
            "100 KB Authorization",
            b"GET /api/v4/clients HTTP/1.1\r\nHost: x\r\nAuthorization: Basic "
            + _SECRET_MARK.encode() * 6400
            + b"\r\n\r\n",
            400,
        ),
        ("unknown method", b"FOO /api/v4/clients HTTP/1.1\r\nHost: x\r\n\r\n", 404),
        (
            "NUL in a header",
            b"GET /api/v4/clients HTTP/1.1\r\nHost: x\r\nX-A: "
            + _SECRET_MARK.encode()
            + b"\x00b\r\n\r\n",
            400,
        ),
        (
            "NUL in the URL",
            b"GET /api/v4/cli\x00" + _SECRET_MARK.encode() + b" HTTP/1.1\r\nHost: x\r\n\r\n",
            400,
        ),
    ],
)
def test_requests_the_parser_rejects_get_the_envelope(
    broker, name: str, request_bytes: bytes, status: int
) -> None:
    got, headers, body = _raw_exchange(broker.api_port, request_bytes)
    assert got == status, (name, got, body[:200])
    assert headers["content-type"].startswith("application/json"), (name, headers)
    doc = json.loads(body)
    assert doc["code"] in (102, 108) and doc["message"], doc
    assert _SECRET_MARK not in body.decode("utf-8", "replace")
    r = Api(broker.api_port).get("/metrics")
    assert r.status == 200  # still serving


def test_trailing_slash_is_accepted(api: Api) -> None:
    assert api.get("/clients/").status == 200
    assert api.get("/metrics/").code == 0
    assert api.get("/acl/$all/").code == 0
