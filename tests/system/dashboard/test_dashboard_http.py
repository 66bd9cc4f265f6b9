"""The dashboard listener over plain HTTP: first-start admin, logins, sessions, users, /apps.

The pages themselves are tested in a browser (test_dashboard_browser.py).
"""

from __future__ import annotations

import re
import time

from api_http import Api, Response, wait_for
from brokers import BrokerProcess, free_port, wait_port
from clients import connack_code as _connack
from ferrymq.cli import main


class Dashboard:
    """HTTP against one dashboard listener, holding its session cookie like a browser."""

    def __init__(self, port: int) -> None:
        self.http = Api(port, auth=None)
        self.cookie = ""

    def login(self, username: str, password: str) -> Response:
        r = self.http.post("/session", {"username": username, "password": password}, prefix="")
        if r.status == 200:
            cookie = r.headers["Set-Cookie"]
            assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
            self.cookie = cookie.split(";", 1)[0]
        return r

    def get(self, path: str, *, token: str | None = None, prefix: str = "/api/v4") -> Response:
        headers = {"Authorization": f"Bearer {token}"} if token else {"Cookie": self.cookie}
        return self.http.get(path, headers=headers, prefix=prefix)


def start(make_broker, *args: str, env: dict[str, str] | None = None, data_dir=None):
    port = free_port()
    b = make_broker("--dashboard-port", str(port), *args, env=env, data_dir=data_dir)
    wait_port(port)
    return b, Dashboard(port)


def printed_password(b: BrokerProcess) -> str | None:
    found = re.findall(r"^  Password: (\S+)$", b.log(), re.MULTILINE)
    assert len(found) <= 1
    return found[0] if found else None


def test_first_start_creates_admin_with_a_password_printed_once(make_broker, tmp_path) -> None:
    b, dash = start(make_broker, data_dir=tmp_path / "d")
    password = printed_password(b)
    assert password and len(password) >= 12
    assert "dashboard user admin (its password" in b.log()
    assert dash.login("admin", "admin").status == 401
    assert dash.login("admin", "public").status == 401  # never a fixed default
    assert dash.login("admin", password).status == 200
    b.stop()
    b2, dash2 = start(make_broker, data_dir=tmp_path / "d")
    assert printed_password(b2) is None  # the same data directory: no new password
    assert dash2.login("admin", password).status == 200


def test_the_configured_password_is_taken_and_never_printed(make_broker) -> None:
    b, dash = start(make_broker, env={"FERRYMQ_DASHBOARD_PASSWORD": "from-env-1"})
    assert printed_password(b) is None and "from-env-1" not in b.log()
    assert dash.login("admin", "from-env-1").code == 0


def test_sessions_cookie_bearer_logout(make_broker) -> None:
    b, dash = start(make_broker, env={"FERRYMQ_DASHBOARD_PASSWORD": "pw"})
    r = dash.get("/clients")
    assert (r.status, r.code) == (401, 103)
    assert "WWW-Authenticate" not in r.headers  # no browser password prompt
    r = dash.login("admin", "nope")
    assert (r.status, r.code) == (401, 103)
    assert dash.login("", "pw").code == 104
    r = dash.login("admin", "pw")
    token = r.data["token"]
    assert dash.get("/clients").code == 0
    assert dash.get("/clients", token=token).code == 0
    assert dash.get("/session", prefix="").data["username"] == "admin"
    # app credentials are for the API listener; the dashboard only takes its sessions
    assert Api(dash.http.port).get("/clients").status == 401
    assert Api(b.api_port).get("/clients").code == 0
    page = dash.get("/", prefix="")
    assert page.status == 200 and b"<title>ferrymq dashboard</title>" in page.raw
    assert "script-src 'self'" in page.headers["Content-Security-Policy"]
    assert dash.get("/static/vendor/mqtt.min.js", prefix="").status == 200
    assert dash.http.delete("/session", headers={"Cookie": dash.cookie}, prefix="").code == 0
    assert dash.get("/clients").status == 401
    assert dash.get("/clients", token=token).status == 401


def test_a_session_ends_after_the_idle_timeout(make_broker) -> None:
    env = {"FERRYMQ_DASHBOARD_PASSWORD": "pw"}
    _b, dash = start(make_broker, "--dashboard-session-timeout", "1", env=env)
    dash.login("admin", "pw")
    for _ in range(3):  # each request extends the session
        time.sleep(0.5)
        assert dash.get("/clients").code == 0
    time.sleep(1.5)
    assert dash.get("/clients").status == 401


def test_dashboard_users_command(make_broker, capsys) -> None:
    b, dash = start(make_broker, env={"FERRYMQ_DASHBOARD_PASSWORD": "pw"})
    data = ["--data-dir", str(b.data_dir)]
    assert main(["dashboard", "users", "add", "ops", "-p", "one", "--desc", "on call", *data]) == 0
    assert main(["dashboard", "users", "add", "ops", "-p", "two", *data]) == 1
    assert "already exists" in capsys.readouterr().err
    assert main(["dashboard", "users", "list", *data]) == 0
    listed = capsys.readouterr().out
    assert "ops" in listed and "on call" in listed and "admin" in listed
    assert "pbkdf2" not in listed and "one" not in listed.replace("on call", "")
    assert dash.login("ops", "one").code == 0
    assert dash.get("/clients").code == 0
    assert main(["dashboard", "users", "passwd", "ops", "-p", "two", *data]) == 0
    # a new password ends the sessions made with the old one (re-checked every 5 s)
    wait_for(lambda: dash.get("/clients").status == 401, timeout=10, interval=0.5)
    assert dash.login("ops", "one").status == 401
    assert dash.login("ops", "two").code == 0
    assert main(["dashboard", "users", "delete", "ops", *data]) == 0
    assert main(["dashboard", "users", "delete", "ops", *data]) == 1
    wait_for(lambda: dash.get("/clients").status == 401, timeout=10, interval=0.5)
    assert dash.login("ops", "two").status == 401
    capsys.readouterr()
    assert main(["dashboard", "users", "delete", "admin", *data]) == 2  # the last user stays
    assert "only dashboard user" in capsys.readouterr().err
    assert main(["dashboard", "users", "add", "bad:name", "-p", "x", *data]) == 2


def test_dashboard_port_0_turns_it_off(make_broker) -> None:
    b = make_broker()  # the test harness passes --dashboard-port 0
    deadline = time.monotonic() + 10  # the dashboard starts after the API the fixture waits for
    while "dashboard disabled" not in b.log() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "dashboard disabled (dashboard_port = 0)" in b.log()
    assert "Password:" not in b.log()


def test_apps_endpoints(broker, uid: str) -> None:
    api = Api(broker.api_port)
    created = api.ok("POST", "/apps", {"name": f"ci-{uid}", "desc": "pipeline"})
    app_id, secret = created["app_id"], created["secret"]
    listed = api.ok("GET", "/apps")
    assert {a["app_id"] for a in listed} >= {app_id, "test-app"}
    one = api.ok("GET", f"/apps/{app_id}")
    assert (one["name"], one["desc"], one["status"]) == (f"ci-{uid}", "pipeline", True)
    assert "secret" not in one
    own = Api(broker.api_port, auth=(app_id, secret))
    assert own.get("/clients").code == 0
    api.ok("PUT", f"/apps/{app_id}", {"status": False})
    assert own.get("/clients").status == 401  # refused from the next request on
    assert api.put(f"/apps/{app_id}", {"name": "x"}).code == 108
    api.ok("PUT", f"/apps/{app_id}", {"status": True})
    assert own.get("/clients").code == 0
    r = api.post("/apps", {"name": "again", "app_id": app_id})
    assert (r.status, r.code) == (400, 113)
    assert api.post("/apps", {"desc": "no name"}).code == 107
    api.ok("DELETE", f"/apps/{app_id}")
    assert own.get("/clients").status == 401
    r = api.delete(f"/apps/{app_id}")
    assert (r.status, r.code) == (404, 105)


def test_without_the_api_listener_the_dashboard_still_sees_command_line_changes(
    make_broker, uid: str
) -> None:
    b, dash = start(make_broker, "--api-port", "0", env={"FERRYMQ_DASHBOARD_PASSWORD": "pw"})
    dash.login("admin", "pw")
    health = dash.get("/status", prefix="")
    assert health.status == 200 and b"is running" in health.raw
    # a credentials record makes its password required: only a reload from the stamp file
    # (the API server's job when there is one) gets it into the running broker
    assert main(["users", "add", f"u-{uid}", "-p", "x", "--data-dir", str(b.data_dir)]) == 0
    wait_for(lambda: _connack(b.port, f"c-{uid}", f"u-{uid}", "wrong") == 0x86, timeout=5)
    assert _connack(b.port, f"c2-{uid}", f"u-{uid}", "x") == 0


def test_status_on_the_dashboard_listener_follows_the_broker(make_broker) -> None:
    _b, dash = start(make_broker)
    health = dash.get("/status", prefix="")
    assert health.status == 200 and b"is running" in health.raw
