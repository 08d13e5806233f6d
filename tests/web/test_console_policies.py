"""The console's policy pages in a real headless Chromium, after real polls of the real registry: the list
with each policy's selection, one policy with its pull reference, counts and selection history; text a
user gave (a filter) shown as text; a missing policy is the console's 404 page."""

from __future__ import annotations

from selenium.webdriver.common.by import By

from tests.conftest import Watcher
from tests.support.browser import wait_for
from tests.support.fixtures import RegistryEnv
from tests.web.test_console import Console
from tests.web.test_console import console as console  # its page helpers, on this module's browser
from tests.web.test_console import driver as driver  # the module's browser
from watcher.db import session_scope
from watcher.policies.store import PolicySpec, save
from watcher.schema import DEFAULT_WORKSPACE_ID


def add_policy(name: str, repository: str, **options: object) -> None:
    with session_scope() as session:
        save(session, PolicySpec.build(name, "r1", repository, **options), workspace_id=DEFAULT_WORKSPACE_ID)


def poll(watcher: Watcher) -> None:
    result = watcher.cli("poll", "r1")
    assert result.exit_code == 0, result.output


def test_a_reader_sees_each_policys_selection_and_its_history_after_real_polls(
    watcher: Watcher, console: Console, registry: RegistryEnv, unique_repo: str
) -> None:
    first = registry.client.push_image(unique_repo, "1.2.3")
    registry.client.push_image(unique_repo, "nightly")
    assert watcher.add_registry("r1", registry.url, "--repository", unique_repo).exit_code == 0
    poll(watcher)
    add_policy("app", unique_repo, semver="^1.2")
    add_policy("marked", unique_repo, numeric="asc", filter="<b>(?P<n>[0-9]+)</b>", extract="$n")  # selects nothing
    newer = registry.client.push_image(unique_repo, "1.2.4")
    poll(watcher)

    console.log_in(console.api.reader_token)
    console.find("#nav-policies").click()
    row = console.visible('#policies tr[data-policy="app"]')
    assert row.find_element(By.CSS_SELECTOR, ".selected-tag").text == "1.2.4"
    assert row.find_element(By.CSS_SELECTOR, ".copy-button").get_attribute("data-copy") == (
        f"{registry.host}/{unique_repo}:1.2.4@{newer}"
    )
    marked = console.find('#policies tr[data-policy="marked"]')
    assert marked.find_element(By.CSS_SELECTOR, ".selected-tag").text == "nothing selected"
    assert "filter '<b>(?P<n>[0-9]+)</b>'" in marked.find_element(By.CSS_SELECTOR, ".strategy").text  # as text
    assert not console.all("#policies b")
    console.shot("policies")

    row.find_element(By.CSS_SELECTOR, 'a[href="/console/policies/app"]').click()
    wait_for(console.driver, lambda d: console.path() == "/console/policies/app")
    assert console.visible("#selected-tag").text == "1.2.4"
    assert console.find("#reference").text == f"{registry.host}/{unique_repo}:1.2.4@{newer}"
    assert console.find("#strategy").text == "semver ^1.2"
    assert console.find("#counts").text == "2 considered, 1 ignored"  # `nightly` is no version
    history = [
        [cell.text for cell in tr.find_elements(By.CSS_SELECTOR, "td")][1:] for tr in console.all("#history tbody tr")
    ]
    assert [(tag, previous) for tag, _, previous, _ in history] == [("1.2.4", "1.2.3"), ("1.2.3", "nothing")]
    assert console.find("#history tbody tr code").get_attribute("title") == newer
    assert console.all("#history tbody tr")[0].find_elements(By.CSS_SELECTOR, "code")[1].get_attribute("title") == first
    console.shot("policy")

    console.open("/console/policies/nosuch")
    assert "no policy named 'nosuch'" in console.visible("#error-message").text
