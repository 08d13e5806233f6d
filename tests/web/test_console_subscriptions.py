"""The console's subscription pages in a real headless Chromium: the state, counts and last error (escaped)
of each subscription, one subscription's deliveries and dead letters, and redelivering them."""

from __future__ import annotations

import httpx
from selenium.webdriver.common.by import By
from sqlalchemy import update
from standardwebhooks.webhooks import Webhook

from tests.conftest import Watcher
from tests.support.browser import wait_for
from tests.support.subscription_receiver import SubscriptionReceiver
from tests.web.test_console import Console, console  # noqa: F401 - the fixtures
from tests.web.test_subscriptions_api import BASE, deliveries_of
from watcher import schema
from watcher.schema import utcnow

HOSTILE = "HTTP 410: <b id='injected'>gone</b>"


def test_subscriptions_pages_show_state_and_dead_letters_and_redeliver_them(
    watcher: Watcher,
    console: Console,  # noqa: F811 - the fixture imported above
) -> None:
    hook = {"name": "hook", "url": "http://127.0.0.1:9/services/T0/B0/secret-part", "format": "slack"}
    assert console.api.admin.post(BASE, json={**hook, "secret": "whsec_" + "A" * 44}).status_code == 201
    dead, _, pending = deliveries_of(watcher, "hook", ["dead", "delivered", "pending"])
    subs = schema.subscriptions
    with watcher.engine.begin() as connection:
        connection.execute(update(subs).values(last_error=HOSTILE, last_failed_at=utcnow()))

    console.log_in(console.api.admin_token)
    console.find("#nav-subscriptions").click()
    row = console.visible('#subscriptions tr[data-subscription="hook"]')
    assert row.find_element(By.CSS_SELECTOR, ".badge").text == "failing"
    assert row.find_element(By.CSS_SELECTOR, ".pending").text == "1"
    assert row.find_element(By.CSS_SELECTOR, ".dead").text == "1"
    assert row.find_element(By.CSS_SELECTOR, ".error-cell").text == HOSTILE  # shown as text, not markup
    assert console.all("#injected") == [] and "secret-part" not in console.driver.page_source
    assert "http://127.0.0.1:9/…" in row.text  # a Slack URL is a credential: its host only

    row.find_element(By.LINK_TEXT, "hook").click()
    letters = console.visible("#dead-letters")
    assert [r.get_attribute("data-delivery") for r in letters.find_elements(By.CSS_SELECTOR, "tbody tr")] == [str(dead)]
    recent = console.find("#deliveries").find_elements(By.CSS_SELECTOR, "tbody tr")
    assert len(recent) == 3 and recent[0].get_attribute("data-delivery") == str(pending)
    assert console.find("#last-error").text == HOSTILE

    with httpx.Client(base_url=console.api.server.url, cookies=console.session_cookie()) as forged:
        refused = forged.post("/console/subscriptions/hook/redeliver", data={"csrf": "forged"})
        assert refused.status_code == 403
    assert console.find("#dead").text == "1"

    console.find("#redeliver").click()
    console.shows("#flash", "1 dead letter of 'hook' pending again")
    assert console.find("#dead").text == "0" and console.find("#pending").text == "2"
    assert console.all("#dead-letters") == [] and console.all("#redeliver") == []

    console.open("/console/subscriptions/nothere")
    console.shows("main", "no subscription named 'nothere'")


def test_an_admin_adds_tests_and_removes_a_subscription_in_the_console(
    watcher: Watcher,
    console: Console,  # noqa: F811 - the fixture imported above
) -> None:
    receiver = SubscriptionReceiver()
    try:
        console.log_in(console.api.admin_token)
        console.find("#nav-subscriptions").click()
        console.find("#add-subscription").click()
        console.find("#name").send_keys("deploy")
        console.find("#url").send_keys("http://169.254.169.254/latest")  # the cloud's metadata: refused
        console.find("#change-added").click()
        console.find("#save-subscription").click()
        console.shows("#url-error", "refused by the network policy")
        assert console.find("#change-added").is_selected()  # what was typed stays, but the secret
        url = console.find("#url")
        url.clear()
        url.send_keys(f"{receiver.url}/hook")
        console.find("#save-subscription").click()

        # the result page's `code#secret`: the form being left has an `input#secret` too, found first at times
        secret = console.visible("code#secret").text
        assert secret.startswith("whsec_") and len(secret) > 40  # shown this once
        console.find("#go-subscription").click()
        assert secret not in console.driver.page_source
        console.find("#test-subscription").click()
        console.shows("#flash", "was accepted: HTTP 200: thanks")
        (sample,) = receiver.requests
        assert sample.path == "/hook" and sample.headers["webhook-id"].startswith("test-")
        assert Webhook(secret).verify(sample.body, sample.headers) is not None  # signed with the secret shown
        assert "test-" not in watcher.cli("events", "--json").stdout  # a sample is never in the history

        console.find("#remove-subscription").click()  # the page being left has a flash too: wait for the new one
        wait_for(console.driver, lambda d: "subscription 'deploy' is removed" in console.find("#flash").text)
        assert console.all('#subscriptions tr[data-subscription="deploy"]') == []
    finally:
        receiver.close()
