"""The console per workspace, in a real headless Chromium: two workspaces each with a real registry named
`prod`; a reader sees only its own workspace, whose name is in the header; another workspace's registry is
the same 404 page as one that does not exist; an operator switches between workspaces, and no one else can."""

from __future__ import annotations

import html
import re
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta

import httpx
import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select
from sqlalchemy import insert, select, update

from tests.conftest import Watcher
from tests.support.browser import wait_for
from tests.support.fixtures import RegistryEnv
from tests.web.test_console import Console
from tests.web.test_console import console as console  # its page helpers, on the session's browser
from watcher import schema
from watcher.db import session_scope
from watcher.models import ApiToken, ConsoleSession, Registry, utcnow
from watcher.registrations import store, tokens
from watcher.registrations.spec import RegistrySpec
from watcher.schema import DEFAULT_WORKSPACE, DEFAULT_WORKSPACE_ID

A, B = "team-a", "team-b"
MISSING = "nowhere"
EVENT_ROW = re.compile(r'<tr data-id="(\d+)"')


@dataclass
class Team:
    """One workspace of the test: its id, the repository its `prod` watches, and the events it owns."""

    name: str
    id: int
    repository: str
    digest: str
    event_ids: list[int]


@dataclass
class Teams:
    a: Team
    b: Team
    #: a registry only B has: what A's people must not be able to tell from one that does not exist
    b_only: str


def new_workspace(name: str) -> int:
    """A workspace inserted as the migration's table holds it (creating one is another part's command)."""
    with session_scope() as session:
        created = session.scalar(
            insert(schema.workspaces).values(name=name, created_at=utcnow()).returning(schema.workspaces.c.id)
        )
        return int(created)


def token_in(workspace_id: int, name: str, role: str) -> str:
    """A token of `workspace_id`: created as `tokens.create` creates one (in `default`, reader or admin),
    then moved into its workspace, and given its role when that is `operator`."""
    with session_scope() as session:
        token = tokens.create(session, name, "admin" if role == "operator" else role)
        session.execute(update(ApiToken).where(ApiToken.name == name).values(workspace_id=workspace_id, role=role))
    return token


def add_event(team: Team, registry: str, tag: str) -> None:
    """An event of `team`'s registry in the history, as the poll that found it writes it."""
    with session_scope() as session:
        created = session.scalar(
            insert(schema.events)
            .values(
                workspace_id=team.id,
                event_id=secrets.token_hex(16),
                registry=registry,
                repository=team.repository,
                tag=tag,
                change="added",
                digest=team.digest,
                previous_digest="",
                detected_at=utcnow(),
                cloudevent="{}",
                published_at=utcnow(),
            )
            .returning(schema.events.c.id)
        )
        team.event_ids.append(int(created))


@pytest.fixture
def teams(watcher: Watcher, registry: RegistryEnv, unique_repo: str) -> Iterator[Teams]:
    from watcher.polling.poll import poll

    found = []
    for name in (A, B):
        workspace_id = new_workspace(name)
        repository = f"{unique_repo}/{name}"
        digest = registry.client.push_image(repository, "v1")
        spec = RegistrySpec("prod", "oci", registry.url, options={"repositories": [repository]}, workspace=name)
        with session_scope() as session:
            store.save(session, spec)
        poll(spec.key)  # its first poll: the repository and its tag, as a baseline (no event)
        found.append(Team(name, workspace_id, repository, digest, []))
    a, b = found
    b_only = "b-only"
    with session_scope() as session:
        store.save(
            session, RegistrySpec(b_only, "oci", registry.url, options={"repositories": [b.repository]}, workspace=B)
        )
    for tag in ("v2", "v3"):
        add_event(a, "prod", f"a-{tag}")
        add_event(b, "prod", f"b-{tag}")
    add_event(b, b_only, "b-only-v1")
    yield Teams(a, b, b_only)


def shown_workspaces(token: str) -> list[int | None]:
    """What the sessions of `token` store as the workspace they show (None: the token's own)."""
    with session_scope() as session:
        query = select(ConsoleSession.workspace_id).join(ApiToken).where(ApiToken.name == token)
        return list(session.scalars(query))


def csrf(console: Console) -> str:
    value = console.find('input[name="csrf"]').get_attribute("value")
    assert value
    return value


def served(console: Console, path: str) -> httpx.Response:
    """The page as the console serves it to this browser's session, before any script of it ran (the live
    feed's rows come from the API, whose isolation is tested with the API)."""
    with httpx.Client(base_url=console.api.server.url, cookies=console.session_cookie(), timeout=10) as client:
        return client.get(path)


def event_ids(page: httpx.Response) -> list[int]:
    """The history ids of the events a served page lists, oldest first."""
    return sorted(int(found) for found in EVENT_ROW.findall(page.text))


def header_workspace(console: Console) -> str:
    return str(console.find("header.top").get_attribute("data-workspace"))


def registry_rows(console: Console) -> list[str]:
    return [str(row.get_attribute("data-registry")) for row in console.all("#registries tbody tr")]


def assert_no_trace_of(text: str, team: Team, *also: str, named: bool = False) -> None:
    """Nothing of `team`'s in `text`: its repository, digest and (unless its name is one the operator's header
    lists) its workspace's name."""
    for leaked in (team.repository, team.digest, *(() if named else (team.name,)), *also):
        assert leaked not in text, leaked


@pytest.mark.parametrize("db", ["sqlite", "postgresql"], indirect=True)
def test_a_reader_sees_only_its_workspace_and_anothers_registry_is_not_found(
    watcher: Watcher, console: Console, teams: Teams
) -> None:
    a, b = teams.a, teams.b
    with session_scope() as session:  # B is ten minutes behind its schedule; A is not
        behind = (
            update(Registry).where(Registry.name == teams.b_only).values(next_poll_at=utcnow() - timedelta(minutes=10))
        )
        session.execute(behind)
    console.log_in(token_in(a.id, "reader-a", "reader"))

    # The header names the workspace, on every page; a reader has no switcher.
    console.shows("#workspace", A, exact=True)
    assert header_workspace(console) == A
    assert console.all("#workspace-switch") == []
    assert registry_rows(console) == ["prod"]
    lag = console.find("#schedule-lag").text
    assert re.fullmatch(r"Schedule lag: \d+\.\d s", lag) and float(lag.split()[2]) < 60, lag  # not B's 600 s
    assert_no_trace_of(console.driver.page_source, b, teams.b_only)
    console.shot("reader-a-registries")

    # Its registry page: A's repository, never B's.
    console.find('#registries a[href="/console/registries/prod"]').click()
    wait_for(console.driver, lambda d: console.path() == "/console/registries/prod")
    assert [r.text for r in console.all("#repositories tbody td:first-child a")] == [a.repository]
    assert console.find("#workspace").text == A
    assert_no_trace_of(console.driver.page_source, b, teams.b_only)
    console.find(f'#repositories a[href$="/{a.repository}"]').click()
    row = console.visible('#tags tr[data-tag="v1"]')
    assert row.find_element(By.CSS_SELECTOR, "code").get_attribute("title") == a.digest
    assert console.find("#workspace").text == A
    # B's repository under A's `prod`: A's registry has no such repository, so no tag of it
    console.open(f"/console/registries/prod/repositories/{b.repository}")
    assert console.all("#tags") == [] and b.digest not in console.driver.page_source

    # B's registry, by URL, is the very page a registry that does not exist is: same status, same words.
    missing = served(console, f"/console/registries/{MISSING}")
    for path in (
        f"/console/registries/{teams.b_only}",
        f"/console/registries/{teams.b_only}/repositories/{b.repository}",
        f"/console/registries/{teams.b_only}?polls=x",
    ):
        page = served(console, path)
        assert page.status_code == missing.status_code == 404, path
        assert page.text.replace(teams.b_only, MISSING) == missing.text, path
        assert_no_trace_of(page.text, b)
    console.open(f"/console/registries/{teams.b_only}")
    console.shows("h1", "Not found", exact=True)
    assert console.find("#error-message").text == f"no registry named {teams.b_only!r}: see `watcher registry list`"
    assert console.find("#workspace").text == A

    # The events page: A's events, and A's registries to filter by, in the page the console serves.
    page = served(console, "/console/events")
    assert page.status_code == 200 and event_ids(page) == a.event_ids
    assert_no_trace_of(page.text, b, teams.b_only, "b-v2", "b-v3")
    console.open("/console/events")
    assert console.find("#workspace").text == A
    assert [o.get_attribute("value") for o in console.all('#filters select[name="registry"] option')] == ["", "prod"]
    filtered = served(console, f"/console/events?registry={teams.b_only}")
    assert 'id="no-events"' in filtered.text and "b-only-v1" not in filtered.text


@pytest.mark.parametrize("db", ["postgresql"], indirect=True)
def test_an_operator_switches_workspaces_and_acts_in_the_one_shown(
    watcher: Watcher, console: Console, teams: Teams, registry: RegistryEnv
) -> None:
    a, b = teams.a, teams.b
    console.log_in(token_in(DEFAULT_WORKSPACE_ID, "deployment", "operator"))

    # The operator's console starts in its token's workspace; the header lists every workspace.
    choice = Select(console.visible("#workspace-choice"))
    assert [o.text for o in choice.options] == [DEFAULT_WORKSPACE, A, B]
    assert choice.first_selected_option.text == DEFAULT_WORKSPACE == header_workspace(console)
    assert registry_rows(console) == []

    # Choosing A shows A's (the select submits itself); then B shows B's: its `prod`, not A's.
    choice.select_by_visible_text(A)
    wait_for(console.driver, lambda d: header_workspace(console) == A)
    console.shows("#flash", "now shows workspace 'team-a'")
    assert registry_rows(console) == ["prod"]
    console.open("/console/registries/prod")
    assert [r.text for r in console.all("#repositories tbody td:first-child a")] == [a.repository]

    Select(console.find("#workspace-choice")).select_by_visible_text(B)
    wait_for(console.driver, lambda d: header_workspace(console) == B)
    assert console.path() == "/console/"  # not A's registry page: B's `prod` is another registry
    assert registry_rows(console) == [teams.b_only, "prod"]
    console.open("/console/registries/prod")
    assert [r.text for r in console.all("#repositories tbody td:first-child a")] == [b.repository]
    assert_no_trace_of(console.driver.page_source, a, named=True)
    console.shot("operator-in-b")
    assert shown_workspaces("deployment") == [b.id]

    # Its events page shows B's events; switching from it keeps to the events page.
    console.find('nav a[href="/console/events"]').click()
    wait_for(console.driver, lambda d: console.path() == "/console/events")
    page = served(console, "/console/events")
    assert event_ids(page) == b.event_ids
    assert_no_trace_of(page.text, a, "a-v2", "a-v3", named=True)
    assert [o.get_attribute("value") for o in console.all('#filters select[name="registry"] option')] == [
        "",
        teams.b_only,
        "prod",
    ]
    Select(console.find("#workspace-choice")).select_by_visible_text(A)
    wait_for(console.driver, lambda d: header_workspace(console) == A)
    assert console.path() == "/console/events"
    assert event_ids(served(console, "/console/events")) == a.event_ids
    Select(console.find("#workspace-choice")).select_by_visible_text(B)
    wait_for(console.driver, lambda d: header_workspace(console) == B)

    # Poll now acts on B's `prod` (an operator may do what an admin may), and the add form saves into B.
    console.open("/console/registries/prod")
    console.find(".poll-now").click()
    console.shows("#flash", "a poll of 'prod' is queued")
    assert header_workspace(console) == B
    console.find("#add-registry").click()
    console.shows("#add-workspace", f"It is added to workspace {B}.", exact=True)
    console.find("#provider-oci").click()
    console.find("#name").send_keys("added")
    console.find("#oci-url").send_keys(registry.url)
    console.find("#repositories").send_keys(b.repository)
    console.find("#save").click()
    wait_for(console.driver, lambda d: console.path() == "/console/registries/added")
    console.shows("#flash", "is saved")
    with session_scope() as session:
        assert session.execute(select(Registry.workspace_id).where(Registry.name == "added")).scalars().all() == [b.id]

    Select(console.find("#workspace-choice")).select_by_visible_text(A)
    wait_for(console.driver, lambda d: header_workspace(console) == A)
    assert registry_rows(console) == ["prod"]  # B's `added` is B's alone
    assert served(console, "/console/registries/added").status_code == 404


@pytest.mark.parametrize("db", ["sqlite", "postgresql"], indirect=True)
def test_the_switch_refuses_anyone_but_an_operator_and_a_form_without_the_session_csrf_token(
    watcher: Watcher, console: Console, teams: Teams
) -> None:
    a, b = teams.a, teams.b
    url = console.api.server.url
    for role in ("reader", "admin"):
        console.driver.delete_all_cookies()
        console.log_in(token_in(a.id, f"{role}-a", role))
        assert console.all("#workspace-switch") == [] and console.find("#workspace").text == A
        with httpx.Client(base_url=url, cookies=console.session_cookie(), timeout=10) as as_them:
            refused = as_them.post("/console/workspace", data={"csrf": csrf(console), "workspace": B})
            assert refused.status_code == 403, role
            assert f"token '{role}-a' is a {role}: switching workspaces needs an operator token" in html.unescape(
                refused.text
            )
            assert_no_trace_of(refused.text, b)
        console.driver.refresh()
        console.shows("#workspace", A, exact=True)
        assert registry_rows(console) == ["prod"]

    console.driver.delete_all_cookies()
    console.log_in(token_in(a.id, "operator-a", "operator"))
    assert header_workspace(console) == A
    with httpx.Client(base_url=url, cookies=console.session_cookie(), timeout=10) as as_operator:
        for forged in ({}, {"csrf": "forged"}):
            refused = as_operator.post("/console/workspace", data={**forged, "workspace": B})
            assert refused.status_code == 403 and "did not come from this session" in refused.text
        unknown = as_operator.post("/console/workspace", data={"csrf": csrf(console), "workspace": MISSING})
        assert unknown.status_code == 404 and f"no workspace named {MISSING!r}" in html.unescape(unknown.text)
    assert shown_workspaces("operator-a") == [None]
    console.driver.refresh()
    assert header_workspace(console) == A and registry_rows(console) == ["prod"]
