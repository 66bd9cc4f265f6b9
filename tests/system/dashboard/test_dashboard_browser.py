"""The web dashboard in a real headless Chromium (Debian's chromium + chromium-driver).

One broker (TCP and WebSocket listeners, dashboard on) and one browser serve
the whole module; each test drives the pages as a person would and checks
the result with real MQTT clients. Screenshots of every page land in
tests/artifacts/screenshots/ (git-ignored).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from api_http import Api
from brokers import BrokerProcess, free_port, wait_port
from clients import TestClient, connack_code
from paths import ARTIFACTS

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
SHOTS = ARTIFACTS / "screenshots"
PASSWORD = "dash-pw-1"

pytestmark = pytest.mark.skipif(
    not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)),
    reason="needs Debian's chromium and chromium-driver (installed by .ci/run)",
)

webdriver = pytest.importorskip("selenium.webdriver")
from selenium.common.exceptions import NoAlertPresentException  # noqa: E402
from selenium.webdriver.chrome.options import Options  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.remote.webdriver import WebDriver  # noqa: E402
from selenium.webdriver.remote.webelement import WebElement  # noqa: E402
from selenium.webdriver.support.select import Select  # noqa: E402

# A process-memory watermark every broker passes, so that an alarm is active.
CONFIG = """
alarm_check_interval = 0.5
alarm_procmem_high_watermark = 0.001

[[listeners]]
kind = "tcp"
port = {tcp}

[[listeners]]
kind = "ws"
port = {ws}
"""


class Dash:
    """The broker and the browser of this module, with small page helpers."""

    def __init__(self, broker: BrokerProcess, driver: WebDriver, port: int, ws: int) -> None:
        self.broker = broker
        self.driver = driver
        self.url = f"http://127.0.0.1:{port}/"
        self.ws = ws
        self.api = Api(broker.api_port)

    def wait(self, predicate: Callable[[], Any], timeout: float = 15.0, what: str = "") -> Any:
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            try:
                value = predicate()
            except Exception as exc:  # element not there yet, stale, ...
                last = exc
                value = None
            if value:
                return value
            time.sleep(0.1)
        self.shot("timeout")
        raise AssertionError(f"timed out waiting for {what or predicate}: {last!r}")

    def find(self, css: str, timeout: float = 15.0) -> WebElement:
        return self.wait(lambda: self.driver.find_element(By.CSS_SELECTOR, css), timeout, css)

    def visible_text(self, css: str) -> str:
        return self.driver.find_element(By.CSS_SELECTOR, css).text

    def go(self, page: str) -> None:
        self.driver.get(self.url + "#/" + page)
        self.wait(
            lambda: (
                self.driver.find_element(By.ID, "page").get_attribute("data-page")
                == page.split("/")[0]
            ),
            what=f"page {page}",
        )

    def fill(self, name: str, value: str) -> None:
        el = self.find(f"[name='{name}']")
        el.clear()
        el.send_keys(value)

    def choose(self, name: str, value: str) -> None:
        Select(self.find(f"select[name='{name}']")).select_by_value(value)

    def click_text(self, text: str, scope: str = "#page") -> None:
        xpath = f".//button[normalize-space()='{text}']"
        root = self.find(scope)
        self.wait(lambda: root.find_element(By.XPATH, xpath), what=f"button {text}").click()

    def click_in_row(self, table: str, row_text: str, button: str) -> None:
        """Click ``button`` in the row of ``table`` (a CSS selector) that shows ``row_text``."""

        def row() -> WebElement:
            rows = self.driver.find_elements(By.CSS_SELECTOR, f"{table} tbody tr")
            return next(tr for tr in rows if row_text in tr.text)

        found = self.wait(row, what=f"the row of {row_text}")
        found.find_element(By.XPATH, f".//button[normalize-space()='{button}']").click()

    def accept_confirm(self) -> None:
        def alert() -> Any:
            try:
                return self.driver.switch_to.alert
            except NoAlertPresentException:
                return None

        self.wait(alert, what="a confirm dialog").accept()

    def toast(self) -> str:
        return self.wait(lambda: self.driver.find_element(By.ID, "toast").text, what="a toast")

    def shot(self, name: str) -> None:
        SHOTS.mkdir(parents=True, exist_ok=True)
        self.driver.save_screenshot(str(SHOTS / f"{name}.png"))


def _options(profile: Path) -> Options:
    opts = Options()
    opts.binary_location = CHROMIUM
    for arg in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--window-size=1400,1000",
        f"--user-data-dir={profile}",
    ):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return opts


@pytest.fixture(scope="module")
def dash(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dash]:
    root = tmp_path_factory.mktemp("dashboard")
    data = root / "data"
    broker = BrokerProcess(data, env={"FERRYMQ_DASHBOARD_PASSWORD": PASSWORD})
    port, ws = free_port(), free_port()
    config = root / "ferrymq.toml"
    config.write_text(CONFIG.format(tcp=broker.port, ws=ws))
    broker.args = ["--config", str(config), "--dashboard-port", str(port), "--sys-interval", "1"]
    broker.start()
    wait_port(port)
    os.environ["SE_OFFLINE"] = "true"  # Selenium Manager must never download anything
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=_options(root / "profile"))
    driver.set_page_load_timeout(30)
    try:
        d = Dash(broker, driver, port, ws)
        _login(d)
        yield d
    finally:
        driver.quit()
        shutil.rmtree(root / "profile", ignore_errors=True)
        alive = broker.alive()
        broker.stop()
        assert alive, "the broker died during the browser tests:\n" + broker.log()[-4000:]


def _login(d: Dash) -> None:
    d.driver.get(d.url)
    d.find("#login-username").send_keys("admin")
    d.find("#login-password").send_keys("wrong")
    d.find("#login-submit").click()
    d.wait(lambda: "Wrong" in d.visible_text("#login-error"), what="the refusal")
    d.shot("login")
    d.find("#login-password").send_keys(PASSWORD)
    d.find("#login-submit").click()
    d.wait(lambda: d.find("#shell").is_displayed(), what="the dashboard after login")
    assert "admin" in d.visible_text("#whoami")


def test_login_then_overview_shows_the_node_and_live_charts(dash: Dash, uid: str) -> None:
    clients = [TestClient(f"ov-{uid}-{i}") for i in range(3)]
    for c in clients:
        c.connect(dash.broker.port)
        c.subscribe(f"ov/{uid}/#")
    try:
        dash.go("overview")
        node = dash.find("#overview-nodes td")
        assert node.text.startswith("ferrymq@")
        # the page samples /stats every 2 s: wait for a few points with our clients in them
        for n in range(6):
            clients[0].publish(f"ov/{uid}/{n}", b"x" * 10, qos=1)
            time.sleep(0.5)
        tiles = dash.wait(
            lambda: (t := dash.visible_text("#overview-tiles")) and "connections" in t and t,
            what="the tiles",
        )
        connections = int(tiles.split("\n")[0].replace(",", ""))
        assert connections >= 3
        assert dash.driver.find_elements(By.CSS_SELECTOR, "#chart-connections canvas")
        assert dash.driver.find_elements(By.CSS_SELECTOR, "#chart-messages canvas")
        dash.wait(lambda: "Sampled every" in dash.visible_text("#page"), what="the sampling note")
        dash.wait(
            lambda: "high_process_memory_usage" in dash.visible_text("#overview-alarms"),
            what="the active alarm",
        )
        time.sleep(2.5)  # one more sample so the chart shows a line
        dash.shot("overview")
    finally:
        for c in clients:
            c.disconnect()


def test_a_paho_client_appears_and_is_kicked(dash: Dash, uid: str) -> None:
    client = TestClient(f"kick-{uid}")
    client.connect(dash.broker.port)
    client.subscribe(f"kick/{uid}/+", qos=1)
    dash.go("clients")
    dash.fill("clientid", f"kick-{uid}")
    dash.find("#clients-search").click()
    link = dash.wait(
        lambda: next(
            a
            for a in dash.driver.find_elements(By.CSS_SELECTOR, "#clients-table a.client-link")
            if a.text == f"kick-{uid}"
        ),
        what="the client row",
    )
    assert "connected" in dash.visible_text("#clients-table tbody")
    dash.shot("clients")
    link.click()
    dash.wait(lambda: f"kick/{uid}/+" in dash.visible_text("#client-subscriptions"))
    assert "MQTT 3.1.1" in dash.visible_text("#page")
    dash.shot("client-detail")
    dash.find("#client-kick").click()
    dash.accept_confirm()
    assert client.disconnected.wait(10), "the kicked client was not disconnected"
    dash.wait(lambda: dash.driver.current_url.endswith("#/clients"), what="back on the list")
    assert dash.api.get(f"/clients/kick-{uid}").data == []


def test_a_client_banned_from_its_page_is_refused_until_the_ban_is_lifted(
    dash: Dash, uid: str
) -> None:
    cid = f"ban-{uid}"
    client = TestClient(cid)
    client.connect(dash.broker.port)
    dash.go(f"clients/{cid}")
    dash.fill("reason", "flooding")
    dash.click_text("Ban")
    assert client.disconnected.wait(10), "the banned client stayed online"
    again = TestClient(cid)
    rc = again.connect(dash.broker.port, expect_rc=None)[1]
    again.c.disconnect()
    assert rc.value == 0x87  # paho's form of the v3 return code 5, not authorized
    dash.go("access/bans")
    dash.wait(lambda: cid in dash.visible_text("#bans-table"), what="the ban row")
    assert "flooding" in dash.visible_text("#bans-table")
    dash.click_in_row("#bans-table", cid, "Lift")
    dash.wait(lambda: cid not in dash.visible_text("#bans-table"), what="the ban lifted")
    client = TestClient(cid)
    client.connect(dash.broker.port)
    client.disconnect()


def test_a_user_created_in_the_dashboard_can_connect(dash: Dash, uid: str) -> None:
    dash.go("access/users")
    dash.fill("new-username", f"user-{uid}")
    dash.fill("new-username-password", "s3cret-pw")
    dash.click_text("Add", "#add-username")
    dash.wait(lambda: f"user-{uid}" in dash.visible_text("#auth-username-table"))
    dash.shot("access-users")
    assert connack_code(dash.broker.port, f"u-{uid}", f"user-{uid}", "s3cret-pw") == 0
    # paho's form of the v3 return code 4, bad username or password
    assert connack_code(dash.broker.port, f"u2-{uid}", f"user-{uid}", "wrong") == 0x86
    dash.click_in_row("#auth-username-table", f"user-{uid}", "Change password")
    prompt = dash.wait(lambda: dash.driver.switch_to.alert, what="the password prompt")
    prompt.send_keys("n3w-pw")
    prompt.accept()
    dash.wait(lambda: "password changed" in dash.toast(), what="the change")
    assert connack_code(dash.broker.port, f"u3-{uid}", f"user-{uid}", "n3w-pw") == 0
    assert connack_code(dash.broker.port, f"u4-{uid}", f"user-{uid}", "s3cret-pw") == 0x86
    dash.click_in_row("#auth-username-table", f"user-{uid}", "Delete")
    dash.accept_confirm()
    dash.wait(lambda: f"user-{uid}" not in dash.visible_text("#auth-username-table"))


def test_an_acl_rule_added_in_the_dashboard_is_enforced(dash: Dash, uid: str) -> None:
    cid = f"acl-{uid}"
    dash.go("access/acl")
    dash.choose("acl-kind", "clientid")
    dash.fill("acl-subject", cid)
    dash.fill("acl-topic", f"secret/{uid}/#")
    dash.choose("acl-action", "sub")
    dash.choose("acl-access", "deny")
    dash.click_text("Add rule", "#add-acl")
    dash.wait(lambda: f"secret/{uid}/#" in dash.visible_text("#acl-clientid-table"))
    row = dash.visible_text("#acl-clientid-table tbody")
    assert cid in row and "deny" in row
    dash.shot("access-acl")
    client = TestClient(cid)
    client.connect(dash.broker.port)
    try:
        assert client.subscribe(f"secret/{uid}/x")[0].value == 0x80
        assert client.subscribe(f"open/{uid}/x")[0].value == 0
    finally:
        client.disconnect()


def test_a_retained_message_is_found_viewed_and_deleted(dash: Dash, uid: str) -> None:
    topic = f"ret/{uid}/state"
    publisher = TestClient(f"rp-{uid}")
    publisher.connect(dash.broker.port)
    publisher.publish(topic, json.dumps({"temp": 21.5, "unit": "C"}), qos=1, retain=True)
    publisher.disconnect()
    dash.go("retained")
    dash.fill("topic", f"ret/{uid}/#")
    dash.click_text("Search")
    dash.wait(lambda: topic in dash.visible_text("#retained-table"), what="the retained row")
    dash.click_text("View", "#retained-table")
    pretty = dash.wait(lambda: dash.visible_text("#retained-viewer pre.payload"), what="payload")
    assert '"temp": 21.5' in pretty  # pretty-printed JSON
    dash.shot("retained")
    dash.click_text("Hex", "#retained-viewer")
    assert dash.visible_text("#retained-viewer pre.payload").startswith("7b 22 74 65 6d 70")
    dash.click_text("Delete", "#retained-viewer")
    dash.accept_confirm()
    dash.wait(lambda: topic not in dash.visible_text("#retained-table"), what="row gone")
    late = TestClient(f"rs-{uid}")
    late.connect(dash.broker.port)
    late.subscribe(f"ret/{uid}/#")
    late.expect_nothing(0.5)
    late.disconnect()


def test_the_websocket_tool_publishes_and_receives(dash: Dash, uid: str) -> None:
    sub = TestClient(f"wsub-{uid}")
    sub.connect(dash.broker.port)
    sub.subscribe(f"ws/{uid}/#", qos=1)
    try:
        dash.go("websocket")
        url = dash.find("[name='ws-url']").get_attribute("value")
        assert url == f"ws://127.0.0.1:{dash.ws}/mqtt"
        dash.fill("ws-clientid", f"browser-{uid}")
        dash.find("#ws-connect").click()
        dash.wait(lambda: dash.visible_text("#ws-status") == "connected", what="ws connect")
        assert dash.api.get(f"/clients/browser-{uid}").data[0]["connected"] is True
        dash.fill("ws-sub-topic", f"ws/{uid}/down")
        dash.click_text("Subscribe", "#ws-subscribe-form")
        dash.wait(lambda: "granted" in dash.visible_text("#ws-subscriptions"), what="suback")
        dash.fill("ws-pub-topic", f"ws/{uid}/up")
        dash.fill("ws-pub-payload", "hello from the browser")
        dash.choose("ws-pub-qos", "1")
        dash.click_text("Publish", "#ws-publish-form")
        msg = sub.get(timeout=10)
        assert (msg.topic, msg.payload) == (f"ws/{uid}/up", b"hello from the browser")
        sub.publish(f"ws/{uid}/down", b"hello back", qos=1)
        dash.wait(lambda: "hello back" in dash.visible_text("#ws-received"), what="delivery")
        dash.shot("websocket")
        dash.find("#ws-disconnect").click()
        dash.wait(lambda: not dash.api.get(f"/clients/browser-{uid}").data, what="ws gone")
    finally:
        sub.disconnect()


def test_subscribe_and_unsubscribe_on_behalf_of_a_client(dash: Dash, uid: str) -> None:
    client = TestClient(f"behalf-{uid}")
    client.connect(dash.broker.port)
    try:
        dash.go("subscriptions")
        dash.fill("sub-clientid", f"behalf-{uid}")
        dash.fill("sub-topic", f"behalf/{uid}/#")
        dash.choose("sub-qos", "1")
        dash.click_text("Subscribe", "#behalf-form")
        dash.wait(lambda: dash.api.get(f"/subscriptions/behalf-{uid}").data, what="the sub")
        message = {"topic": f"behalf/{uid}/x", "payload": "hi", "qos": 1}
        dash.api.ok("POST", "/mqtt/publish", message)
        assert client.get(timeout=10).payload == b"hi"
        dash.fill("clientid", f"behalf-{uid}")
        dash.click_text("Search")
        dash.wait(lambda: f"behalf/{uid}/#" in dash.visible_text("#subscriptions-table"))
        dash.shot("subscriptions-search")
        dash.click_text("Unsubscribe", "#subscriptions-table")
        dash.wait(lambda: not dash.api.get(f"/subscriptions/behalf-{uid}").data, what="unsub")
        dash.wait(lambda: "no subscriptions match" in dash.visible_text("#subscriptions-table"))
    finally:
        client.disconnect()


def test_an_api_app_created_in_the_dashboard_works_once_and_is_refused_when_disabled(
    dash: Dash, uid: str
) -> None:
    dash.go("access/apps")
    dash.fill("app-name", f"ci-{uid}")
    dash.click_text("Create app")
    shown = dash.wait(lambda: dash.visible_text("#page .unavailable code"), what="the secret")
    app_id, secret = shown.split()[1], shown.split()[3]
    api = Api(dash.broker.api_port, auth=(app_id, secret))
    assert api.get("/clients").code == 0
    dash.click_in_row("#apps-table", app_id, "Disable")
    dash.wait(lambda: api.get("/clients").status == 401, what="the app refused")


@pytest.mark.parametrize(
    ("page", "expect"),
    [
        ("subscriptions", "Subscriptions and topics"),
        ("listeners", "mqtt:ws"),
        ("metrics", "messages.received"),
        ("access/clientids", "Client ID credentials"),
        ("access/apps", "test-app"),
        ("access/bans", "no bans"),
    ],
)
def test_every_other_page_renders(dash: Dash, page: str, expect: str) -> None:
    dash.go(page)
    dash.wait(lambda: expect in dash.visible_text("#page"), what=expect)
    time.sleep(0.3)
    dash.shot(page.replace("/", "-"))
    assert "this page failed" not in dash.visible_text("#page")


def test_logout_ends_the_session(dash: Dash) -> None:
    dash.go("overview")
    dash.find("#logout").click()
    dash.wait(lambda: dash.find("#login").is_displayed(), what="the login form")
    dash.driver.get(dash.url + "#/clients")
    dash.wait(lambda: dash.find("#login").is_displayed(), what="still logged out")
    _login(dash)  # leave the module's browser logged in


def test_no_script_errors_in_the_console(dash: Dash) -> None:
    """Every page ran without a JavaScript error (refused logins and 404s are expected)."""
    for page in ("overview", "clients", "subscriptions", "retained", "access/acl", "websocket"):
        dash.go(page)
        time.sleep(0.3)
    errors = [
        entry["message"]
        for entry in dash.driver.get_log("browser")
        if entry["level"] == "SEVERE" and "Failed to load resource" not in entry["message"]
    ]
    assert not errors, errors
