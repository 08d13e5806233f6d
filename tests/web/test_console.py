"""The web console in a real headless Chromium, against the real app, state database, Redis and registry."""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from selenium.common.exceptions import StaleElementReferenceException, TimeoutException
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from sqlalchemy import select, update

from tests.conftest import Watcher
from tests.support import console as session_console
from tests.support.browser import screenshot, wait_for
from tests.support.fixtures import PASSWORD, USERNAME, RegistryEnv
from tests.support.registry import free_port
from tests.web.conftest import Api
from watcher.db import session_scope
from watcher.models import Registry, utcnow

WRONG_PASSWORD = "not-the-password-7Qx"
#: where the README's screenshot is written when CONSOLE_SCREENSHOT_TO names a path
README_SHOT = os.environ.get("CONSOLE_SCREENSHOT_TO")


@dataclass
class Console:
    driver: WebDriver
    api: Api
    shots: Path

    def open(self, path: str) -> None:
        self.driver.get(self.api.server.url + path)

    def path(self) -> str:
        return "/" + self.driver.current_url.split("/", 3)[3]

    def find(self, css: str) -> WebElement:
        return self.driver.find_element(By.CSS_SELECTOR, css)

    def all(self, css: str) -> list[WebElement]:
        return self.driver.find_elements(By.CSS_SELECTOR, css)

    def visible(self, css: str) -> WebElement:
        def shown(_: WebDriver) -> WebElement | bool:
            return next((e for e in self.all(css) if e.is_displayed()), False)

        found = wait_for(self.driver, shown)
        assert isinstance(found, WebElement)
        return found

    def texts(self, css: str) -> list[str]:
        """The texts of the elements matching `css` now (those replaced while read are left out)."""
        texts = []
        for element in self.all(css):
            with contextlib.suppress(StaleElementReferenceException):
                texts.append(element.text)
        return texts

    def shows(self, css: str, text: str, *, exact: bool = False) -> WebElement:
        """The displayed element matching `css` once its text contains `text` (or, `exact`, is it): waited
        for, so that the same element on the page being left (a flash, a heading) is not read instead."""

        def showing(_: WebDriver) -> WebElement | bool:
            return next(
                (e for e in self.all(css) if e.is_displayed() and (e.text == text if exact else text in e.text)),
                False,
            )

        try:
            found = wait_for(self.driver, showing)
        except TimeoutException:
            raise AssertionError(f"{css} never showed {text!r} on {self.path()}: {self.texts(css)}") from None
        assert isinstance(found, WebElement)
        return found

    def log_in(self, token: str) -> None:
        self.open("/console/login")
        self.find("#token").send_keys(token)
        self.find("#login-form button[type=submit]").click()
        wait_for(self.driver, lambda d: not self.path().startswith("/console/login"))
        self.visible("#logout")

    def shot(self, name: str) -> Path:
        return screenshot(self.driver, self.shots, name)

    def session_cookie(self) -> dict[str, str]:
        cookie = self.driver.get_cookie("watcher_console")
        assert cookie is not None
        return {cookie["name"]: cookie["value"]}


@pytest.fixture
def console(driver: WebDriver, api: Api, tmp_path: Path) -> Iterator[Console]:
    driver.delete_all_cookies()
    yield Console(driver, api, tmp_path / "screenshots")
    driver.get("about:blank")  # closes the events page's stream before its server stops


def registry_names() -> list[str]:
    with session_scope() as session:
        return list(session.scalars(select(Registry.name)))


def poll(watcher: Watcher, name: str) -> None:
    result = watcher.cli("poll", name)
    assert result.exit_code == 0, result.output


def test_an_admin_adds_a_registry_sees_its_tags_and_new_events_live(
    watcher: Watcher, console: Console, basic_registry: RegistryEnv, unique_repo: str
) -> None:
    repo = f"{unique_repo}/app"
    v1 = basic_registry.client.push_image(repo, "v1")

    # A page without a session redirects to the login page, and back after logging in.
    console.open("/console/events")
    assert console.path().startswith("/console/login?next=/console/events")
    console.find("#token").send_keys("wt_not-a-token")
    console.find("#login-form button[type=submit]").click()
    console.shows("#token-error", "unknown, revoked or expired")
    console.find("#token").send_keys(console.api.admin_token)
    console.find("#login-form button[type=submit]").click()
    wait_for(console.driver, lambda d: console.path() == "/console/events")
    console.visible("#live")
    cookie = console.driver.get_cookie("watcher_console")
    assert cookie is not None and cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert console.api.admin_token not in console.driver.page_source

    # Add the basic-auth registry: each provider shows its own fields; a wrong password is refused next to
    # the password field and nothing is saved.
    console.find("#add-registry").click()
    console.find("#provider-ecr").click()
    assert console.visible("#ecr-secret_key") and not console.find("#oci-password").is_displayed()
    console.find("#provider-gcr").click()
    assert console.visible("#gcr-json_key").get_attribute("type") == "file"
    console.find("#provider-oci").click()
    console.find("#name").send_keys("local")
    console.find("#oci-url").send_keys(basic_registry.url)
    console.find("#oci-username").send_keys(USERNAME)
    console.find("#oci-password").send_keys(WRONG_PASSWORD)
    console.find("#repositories").send_keys(f"{unique_repo}/*")
    console.find("#save").click()
    error = console.visible("#oci-password-error")
    assert error.text.startswith("registry 'local': credentials refused"), error.text
    console.shot("add-wrong-password")
    assert registry_names() == []
    assert WRONG_PASSWORD not in console.driver.page_source
    assert console.find("#oci-password").get_attribute("value") == ""
    assert console.find("#oci-url").get_attribute("value") == basic_registry.url

    # "Test connection" with the right password answers in place; "Save" then saves.
    console.find("#oci-password").send_keys(PASSWORD)
    console.find("#test-connection").click()
    console.shows("#form-notice", "connection OK")
    assert not console.find("#oci-password-error").is_displayed()
    assert registry_names() == []
    console.find("#save").click()
    wait_for(console.driver, lambda d: console.path() == "/console/registries/local")
    console.shows("#flash", "is saved")
    assert registry_names() == ["local"]
    assert PASSWORD not in console.driver.page_source

    # After a poll, the registry page lists the repository, and the repository page its tag, digest and
    # pull references.
    poll(watcher, "local")
    console.driver.refresh()
    assert console.find(".badge").text == "ok"
    console.find(f'#repositories a[href$="/{repo}"]').click()
    row = console.visible('#tags tr[data-tag="v1"]')
    assert row.find_element(By.CSS_SELECTOR, "code").get_attribute("title") == v1
    copies = [b.get_attribute("data-copy") for b in row.find_elements(By.CSS_SELECTOR, ".copy-button")]
    assert copies == [f"{basic_registry.host}/{repo}:v1", f"{basic_registry.host}/{repo}@{v1}"]
    row.find_elements(By.CSS_SELECTOR, ".copy-button")[1].click()
    wait_for(console.driver, lambda d: row.find_elements(By.CSS_SELECTOR, "[data-copied]"))
    console.shot("repository")

    # The registries page: a coloured state per registry, and a failing one's one-line cause.
    assert watcher.add_registry("staging", f"http://127.0.0.1:{free_port()}", "--no-verify").exit_code == 0
    assert watcher.cli("poll", "staging").exit_code != 0
    console.find('nav a[href="/console/"]').click()
    registry_row = console.visible('#registries tr[data-registry="local"]')
    assert registry_row.find_element(By.CSS_SELECTOR, ".badge").text == "ok"
    assert [c.text for c in registry_row.find_elements(By.CSS_SELECTOR, "td.num")] == ["1", "1"]
    failing = console.find('#registries tr[data-registry="staging"]')
    assert failing.find_element(By.CSS_SELECTOR, ".badge.state-failing").text == "failing"
    assert "unreachable" in failing.find_element(By.CSS_SELECTOR, ".error-cell").text
    console.shot("registries")
    if README_SHOT:  # the README's picture: the page's content, not the empty window below it
        assert console.find("body").screenshot(README_SHOT)

    # The events page shows a new event without being reloaded.
    console.find('nav a[href="/console/events"]').click()
    wait_for(console.driver, lambda d: console.find("#live").get_attribute("data-state") == "live")
    console.driver.execute_script("window.__notReloaded = true")
    v2 = basic_registry.client.push_image(repo, "v2")
    poll(watcher, "local")
    fresh = console.visible("#events tr.fresh td.tag")
    assert fresh.text == "v2"
    assert console.driver.execute_script("return window.__notReloaded") is True
    digest = console.find("#events tr.fresh code").get_attribute("title")
    assert digest == v2
    console.shot("events-live")


def test_readers_only_read_forged_posts_are_refused_and_logging_out_ends_the_session(
    watcher: Watcher, console: Console, registry: RegistryEnv
) -> None:
    assert watcher.add_registry("r1", registry.url, "--no-verify").exit_code == 0

    console.log_in(console.api.reader_token)
    row = console.visible('#registries tr[data-registry="r1"]')
    assert row.find_element(By.CSS_SELECTOR, ".badge").text == "pending"
    assert console.all(".poll-now") == [] and console.all("#add-registry") == []
    console.shot("reader")
    console.open("/console/registries/r1")
    assert console.all(".poll-now") == []
    console.open("/console/add")
    console.shows("#error-message", "is a reader")

    server = console.api.server.url
    csrf = console.find('input[name="csrf"]').get_attribute("value")
    assert csrf
    with httpx.Client(base_url=server, cookies=console.session_cookie()) as as_reader:
        refused = as_reader.post("/console/registries/r1/poll", data={"csrf": csrf})
        assert refused.status_code == 403 and "is a reader" in refused.text

    console.find("#logout").click()
    wait_for(console.driver, lambda d: console.path().startswith("/console/login"))
    console.log_in(console.api.admin_token)
    assert console.all(".poll-now")
    with httpx.Client(base_url=server, cookies=console.session_cookie()) as as_admin:
        # A forged form: no CSRF token, or another one, is refused before anything is done.
        for forged in ({}, {"csrf": "forged"}):
            refused = as_admin.post("/console/registries/r1/poll", data=forged)
            assert refused.status_code == 403 and "did not come from this session" in refused.text
            refused = as_admin.post(
                "/console/add", data={**forged, "provider": "oci", "name": "forged", "url": registry.url}
            )
            assert refused.status_code == 403
        # The session cookie does not authenticate the API's writes (only its reads, for the live feed).
        assert as_admin.get("/api/v1/registries").status_code == 200
    assert registry_names() == ["r1"]

    console.find(".poll-now").click()
    console.shows("#flash", "a poll of 'r1' is queued")

    console.find("#logout").click()
    wait_for(console.driver, lambda d: console.path().startswith("/console/login"))
    for path in ("/console/", "/console/registries/r1", "/console/events"):
        console.open(path)
        assert console.path().startswith("/console/login"), path
    assert re.search(r"/console/login\?next=/console/events$", console.path())


def test_a_cookie_copied_before_logout_is_refused_after_it(watcher: Watcher, console: Console) -> None:
    """The browser's cookie is an opaque id naming a server-side session: logging out ends every copy of it,
    for the API's reads and the console's pages alike."""
    console.log_in(console.api.admin_token)
    copied = console.session_cookie()
    session_console.assert_opaque(copied["watcher_console"], console.api.admin_token)
    with httpx.Client(base_url=console.api.server.url, cookies=copied) as thief:
        assert thief.get("/api/v1/registries").status_code == 200
        assert thief.get("/console/").status_code == 200

        console.find("#logout").click()
        wait_for(console.driver, lambda d: console.path().startswith("/console/login"))
        fresh = console.driver.get_cookie("watcher_console")
        assert fresh is None or fresh["value"] != copied["watcher_console"]

        refused = thief.get("/api/v1/registries")
        assert refused.status_code == 401 and refused.json()["error"]["code"] == "unauthorized"
        page = thief.get("/console/")
        assert page.status_code == 303 and page.headers["location"].startswith("/console/login")
    console.driver.add_cookie({"name": "watcher_console", "value": copied["watcher_console"], "path": "/"})
    console.open("/console/events")
    assert console.path() == "/console/login?next=/console/events"


def test_the_console_shows_each_registrys_last_webhook_and_what_triggered_each_poll(
    watcher: Watcher, console: Console, registry: RegistryEnv, unique_repo: str
) -> None:
    from watcher.polling.repository import poll_repository

    image = f"{unique_repo}/app"
    registry.client.push_image(image, "v1")
    for name in ("hooked", "plain"):
        assert watcher.add_registry(name, registry.url, "--repository", f"{unique_repo}/*").exit_code == 0
    poll(watcher, "hooked")
    registry.client.push_image(image, "v2")
    poll_repository("hooked", image)
    with session_scope() as session:
        session.execute(
            update(Registry).where(Registry.name == "hooked").values(last_webhook_at=utcnow() - timedelta(minutes=4))
        )

    console.log_in(console.api.reader_token)
    hooked = console.visible('#registries tr[data-registry="hooked"] td.webhook')
    assert hooked.text == "4 min ago"
    assert str(hooked.find_element(By.CSS_SELECTOR, "time").get_attribute("title")).endswith("UTC")
    assert console.find('#registries tr[data-registry="plain"] td.webhook').text == ""
    assert console.find('#registries tr[data-registry="hooked"] .badge').text == "ok"
    console.shot("registries-webhook")

    console.open("/console/registries/hooked")
    console.shows("#last-webhook", "4 min ago", exact=True)
    assert [c.text for c in console.all("#polls td.trigger")] == [f"webhook: {image}", "manual"]
    console.open("/console/registries/plain")
    assert console.all("#last-webhook") == []
