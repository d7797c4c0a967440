"""The console in a real headless Chromium (Debian's chromium and chromium-driver, driven by
Selenium): sign in, the overview, a transaction's trail with a hostile payload shown as text,
a payload found by the customer email it holds,
a dead email retried and received by an SMTP server, a rejected record reprocessed after a
dry run, both on the Audit page, a viewer offered neither and refused a forged one, sign out.
No page may break its own
Content-Security-Policy. With HOOKLINE_SCREENSHOTS=DIR each page is saved there as a PNG."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.common.exceptions import NoAlertPresentException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.expected_conditions import staleness_of
from selenium.webdriver.support.wait import WebDriverWait

from hookline.db.connection import Database
from hookline.lifecycle import Stopper
from hookline.mail.mailer import Mailer
from tests.console.conftest import VIEWER, Console
from tests.console.seed import (
    BOOKING,
    DEAD_RECIPIENT,
    REPROCESSED,
    REPROCESSED_EMAIL,
    SCRIPT,
    XSS_ID,
)
from tests.mailbox import Mailbox, text_of
from tests.processes import TOKEN, eventually

CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(
    (CHROMIUM is None or DRIVER is None) and not os.environ.get("CI"),
    reason="chromium and chromium-driver are not installed (scripts/test installs them)")
SHOTS = os.environ.get("HOOKLINE_SCREENSHOTS")


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                     "--disable-gpu", "--window-size=1280,900", "--lang=en-GB"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=str(DRIVER)), options=options)
    driver.implicitly_wait(0)
    yield driver
    driver.quit()


class Page:
    """The browser on the console served at `base`; each page it opens is checked to break no
    rule of its policy, and saved as a screenshot when asked to."""

    def __init__(self, driver: WebDriver, base: str) -> None:
        self.driver, self.base = driver, base

    def open(self, path: str) -> None:
        self.driver.get(self.base + path)
        self.settled()

    def settled(self) -> None:
        violations = [entry["message"] for entry in self.driver.get_log("browser")
                      if "Content Security Policy" in entry["message"]
                      or entry["level"] == "SEVERE"]
        assert violations == []

    def text(self) -> str:
        return str(self.driver.find_element(By.TAG_NAME, "body").text)

    def click(self, selector: str) -> None:
        """Follow a link or send a form: done once the next page has replaced this one."""
        before = self.driver.find_element(By.TAG_NAME, "html")
        self.driver.find_element(By.CSS_SELECTOR, selector).click()
        WebDriverWait(self.driver, 10).until(staleness_of(before))
        self.settled()

    def shoot(self, name: str) -> None:
        if not SHOTS:
            return
        folder = Path(SHOTS)
        folder.mkdir(parents=True, exist_ok=True)
        height = self.driver.execute_script("return document.documentElement.scrollHeight")
        # the whole page, up to a limit, rather than the window's first screen of it
        self.driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
            "width": 1280, "height": min(int(height), 2400), "deviceScaleFactor": 1,
            "mobile": False})
        self.driver.save_screenshot(str(folder / f"{name}.png"))
        self.driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})

    def sign_in(self, token: str = TOKEN) -> None:
        self.open("/console/sign-in")
        self.driver.find_element(By.ID, "token").send_keys(token)
        self.click("#sign-in")
        assert self.driver.current_url == self.base + "/console/"


@pytest.fixture
def page(browser: WebDriver, served: str) -> Page:
    browser.delete_all_cookies()
    return Page(browser, served)


def test_an_operator_signs_in_and_sees_the_overview(page: Page) -> None:
    page.open("/console/transactions")
    assert page.driver.current_url.endswith("/console/sign-in")  # nothing shown before
    page.shoot("sign-in")
    page.sign_in()
    text = page.text()
    for heading in ("Alerts that would fire now", "The log", "Consumers", "Outbox",
                    "Deliveries in the last hour"):
        assert heading in text
    assert "HooklineOutboxDeadRows" in text
    assert "unreadable" not in text  # the log's end was read from the broker
    bars = page.driver.find_elements(By.CSS_SELECTOR, "svg.chart rect.bar")
    assert bars, "the chart has a bar per source and outcome"
    page.shoot("overview")


def test_a_transactions_trail_shows_a_hostile_payload_as_text(page: Page) -> None:
    page.sign_in()
    page.open("/console/transactions")
    assert len(page.driver.find_elements(By.CSS_SELECTOR, "a.transaction")) == 50
    page.shoot("transactions")
    page.click("#next-page")
    assert page.driver.find_elements(By.CSS_SELECTOR, "a.transaction")
    page.open(f"/console/transactions?booking_reference={BOOKING}")
    page.click(f"a.transaction[href*='{XSS_ID}']")
    with pytest.raises(NoAlertPresentException):
        page.driver.switch_to.alert  # noqa: B018 - the script in the payload never ran
    payload = page.driver.find_element(By.CSS_SELECTOR, "pre.payload").text
    assert SCRIPT in payload  # shown, as text
    assert not page.driver.find_elements(By.XPATH, "//main//script")
    assert "verified" in page.driver.find_element(By.CSS_SELECTOR, ".signature").text
    page.shoot("transaction")


def test_bookings_and_events_list_and_open(page: Page) -> None:
    page.sign_in()
    page.open("/console/bookings")
    page.shoot("bookings")
    page.open(f"/console/bookings/{BOOKING}")
    assert DEAD_RECIPIENT in page.text()
    page.shoot("booking")
    page.open("/console/events?outcome=rejected")
    assert "amount: missing" in page.text()
    page.shoot("events")
    page.click("a.event")
    assert "Reason: amount: missing" in page.text()
    page.shoot("event")


def test_a_payload_is_found_by_the_customer_email_it_holds(page: Page) -> None:
    page.sign_in()
    page.open("/console/events")
    page.driver.find_element(By.NAME, "q").send_keys(REPROCESSED_EMAIL)
    page.click("form.filters button[type=submit]")
    assert "q=fixed%40example.com" in page.driver.current_url
    found = page.driver.find_elements(By.CSS_SELECTOR, "a.event")
    assert len(found) == 1
    assert REPROCESSED in page.text()
    page.shoot("search")
    page.click("a.event")
    assert REPROCESSED_EMAIL in page.text()  # the payload, pretty-printed


def test_a_dead_email_is_retried_and_received(page: Page, console: Console,
                                              mailbox: Mailbox) -> None:
    page.sign_in()
    page.open("/console/outbox?status=dead")
    row = f"#email-{console.dead_email}"
    assert "550 mailbox unavailable" in page.driver.find_element(By.CSS_SELECTOR, row).text
    page.shoot("outbox")
    page.open(f"/console/outbox/{console.dead_email}")
    frame = page.driver.find_element(By.CSS_SELECTOR, "iframe.preview")
    assert frame.get_attribute("sandbox") == ""  # no script, an origin of its own
    page.shoot("email")
    page.open("/console/outbox?status=dead")
    page.click(f"{row} button.retry")
    assert f"Email {console.dead_email} is pending again" in page.text()
    mailer = Mailer(replace(console.settings, smtp_url=mailbox.url))
    database = Database(console.settings.psycopg_url, Stopper())
    try:
        mailer.deliver_due(database)
    finally:
        database.close()
    [message] = eventually(lambda: _one(mailbox.to(DEAD_RECIPIENT)))
    assert BOOKING in text_of(message)
    page.open("/console/outbox?status=sent")
    assert page.driver.find_elements(By.CSS_SELECTOR, row)
    page.open("/console/audit?action=outbox.retry")
    entry = page.text()
    assert f"outbox:{console.dead_email}" in entry
    assert "token-1" in entry
    assert "succeeded" in entry


def test_a_rejected_record_is_reprocessed_after_its_dry_run(page: Page,
                                                            console: Console) -> None:
    page.sign_in()
    page.open("/console/events/0/0")  # rejected by yesterday's interpretation
    assert "Reason: interpretation failed: KeyError: 'customer'" in page.text()
    page.click("#reprocess")
    assert page.driver.current_url.endswith("/console/events/reprocess/preview")
    changed = page.driver.find_element(By.CSS_SELECTOR, ".diff-records").text
    assert "offset 0 rejected applied" in changed
    assert REPROCESSED in page.driver.find_element(By.CSS_SELECTOR, ".diff-rows").text
    assert REPROCESSED_EMAIL in page.driver.find_element(By.CSS_SELECTOR, ".diff-emails").text
    assert _outcome(console) == "rejected"  # the dry run changed nothing
    page.shoot("reprocess")
    page.click("#reprocess-these")
    assert page.driver.current_url.endswith("/console/events/0/0")
    assert "Reprocessed 1 of 1 records selected: 1 changed outcome" in page.text()
    assert page.driver.find_element(By.CSS_SELECTOR, "#record-0-0 .badge").text == "applied"
    assert not page.driver.find_elements(By.ID, "reprocess")  # nothing left to project again
    assert _outcome(console) == "applied"
    assert console.db.execute("SELECT recipient FROM email_outbox WHERE booking_reference = %s",
                              (REPROCESSED,)).fetchall() == [(REPROCESSED_EMAIL,)]
    page.open("/console/audit?action=events.reprocess")
    rows = [r.text for r in page.driver.find_elements(By.CSS_SELECTOR, "tr[id^=audit-]")]
    assert len(rows) == 2  # the dry run, then the reprocess, newest first
    assert all("token-1" in r and "events:0:0" in r and "succeeded" in r for r in rows)
    assert "dry_run false" in rows[0]
    assert "dry_run true" in rows[1]
    page.open("/console/audit")
    page.shoot("audit")


def _outcome(console: Console) -> str:
    row = console.db.execute('SELECT outcome FROM events WHERE "partition" = 0 AND "offset" = 0'
                             ).fetchone()
    return str(row[0]) if row else "missing"


def test_a_viewer_is_offered_no_action_and_a_forged_one_is_refused(page: Page,
                                                                   console: Console) -> None:
    page.sign_in(VIEWER)
    page.open("/console/outbox")
    assert not page.driver.find_elements(By.CSS_SELECTOR, "button.retry, #retry-dead")
    page.open("/console/events?outcome=rejected")
    assert not page.driver.find_elements(By.ID, "reprocess")
    page.click("a.event")
    assert "Reason: amount: missing" in page.text()  # a record an operator could reprocess
    assert not page.driver.find_elements(By.ID, "reprocess")
    before = page.driver.find_element(By.TAG_NAME, "html")
    page.driver.execute_script(FORGE, "/console/events/reprocess", {"partition": "0",
                                                                    "offset": "10002"})
    WebDriverWait(page.driver, 10).until(staleness_of(before))
    [refused] = [entry["message"] for entry in page.driver.get_log("browser")]
    assert "status of 403" in refused  # the only complaint: the refusal itself
    assert "403" in page.text()
    assert "viewer" in page.text()
    audited = console.db.execute("SELECT actor, action, outcome FROM operator_audit "
                                 "ORDER BY id DESC LIMIT 1").fetchone()
    assert audited == ("viewer", "events.reprocess", "refused")


# a form the page never offered, sent with the page's own CSRF token (from its sign-out form)
FORGE = """
const form = document.createElement('form');
form.method = 'post'; form.action = arguments[0];
const fields = Object.assign({csrf_token: document.querySelector('[name=csrf_token]').value},
                             arguments[1]);
for (const [name, value] of Object.entries(fields)) {
  const input = document.createElement('input');
  input.type = 'hidden'; input.name = name; input.value = value; form.appendChild(input);
}
document.body.appendChild(form); form.submit();
"""


def _one(messages: list[object]) -> list[object]:
    assert len(messages) == 1
    return messages


def test_signing_out_ends_the_session(page: Page) -> None:
    page.sign_in()
    page.click("#sign-out")
    assert page.driver.current_url.endswith("/console/sign-in")
    page.open("/console/")
    assert page.driver.current_url.endswith("/console/sign-in")
