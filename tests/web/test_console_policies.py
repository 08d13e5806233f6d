"""The console's policy pages in a real headless Chromium, after real polls of the real registry: the list
with each policy's selection, one policy with its pull reference, counts and selection history; text a
user gave (a filter) shown as text; a missing policy is the console's 404 page; and the form with which an admin
adds a policy, and the button that removes one, which a reader cannot use."""

from __future__ import annotations

from selenium.webdriver.common.by import By

from tests.conftest import Watcher
from tests.support import console as session_console
from tests.support.browser import wait_for
from tests.support.fixtures import RegistryEnv
from tests.web.conftest import Api
from tests.web.test_console import Console
from tests.web.test_console import console as console  # its page helpers, on the session's browser
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
    console.shows("#selected-tag", "1.2.4", exact=True)
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
    console.shows("#error-message", "no policy named 'nosuch'")


def test_an_admin_adds_and_removes_a_policy_with_the_console_and_a_reader_cannot(
    watcher: Watcher, api: Api, registry: RegistryEnv, unique_repo: str
) -> None:
    digest = registry.client.push_image(unique_repo, "1.0.0")
    assert watcher.add_registry("r1", registry.url, "--repository", unique_repo).exit_code == 0
    poll(watcher)
    wanted = {"name": "app", "registry": "r1", "repository": unique_repo, "strategy": "semver", "argument": "*"}

    with session_console.log_in(api.server.url, api.reader_token) as reader:
        assert 'id="add-policy"' not in reader.get("/console/policies").text
        assert reader.get("/console/add-policy").status_code == 403
        csrf = session_console.csrf_of(reader.get("/console/policies"))
        assert reader.post("/console/add-policy", data={**wanted, "csrf": csrf}).status_code == 403

    with session_console.log_in(api.server.url, api.admin_token) as admin:
        form = admin.get("/console/policies")
        assert 'id="add-policy"' in form.text
        assert '<option value="r1"' in admin.get("/console/add-policy").text
        csrf = session_console.csrf_of(form)
        assert admin.post("/console/add-policy", data=wanted).status_code == 403  # no CSRF token: refused
        wrong = admin.post("/console/add-policy", data={**wanted, "argument": "^^", "csrf": csrf})
        assert wrong.status_code == 422 and 'id="argument-error"' in wrong.text and "--semver" in wrong.text
        saved = admin.post("/console/add-policy", data={**wanted, "csrf": csrf})
        assert (saved.status_code, saved.headers["location"]) == (303, "/console/policies/app")
        shown = admin.get("/console/policies/app").text
        assert "policy &#39;app&#39; is saved" in shown and f"{unique_repo}:1.0.0@{digest}" in shown
        assert [(e["change"], e["policy"], e["tag"]) for e in watcher.stream_entries()] == [
            ("selected", "app", "1.0.0")
        ]
        again = admin.post("/console/add-policy", data={**wanted, "csrf": csrf})
        assert again.status_code == 422 and 'id="name-error"' in again.text and "exists" in again.text

        removed = admin.post("/console/policies/app/remove", data={"csrf": csrf})
        assert (removed.status_code, removed.headers["location"]) == (303, "/console/policies")
        assert admin.get("/console/policies/app").status_code == 404
        assert admin.post("/console/policies/app/remove", data={"csrf": csrf}).status_code == 404
