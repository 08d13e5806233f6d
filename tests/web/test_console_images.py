"""What the console's repository page shows of each image, in a real headless Chromium: when it was built,
its platforms, and where it came from — a link only to an https source, whatever else an image's pusher
wrote into its annotations shown as inert text."""

from __future__ import annotations

from datetime import timedelta

import pytest
from selenium.webdriver.common.by import By
from sqlalchemy import insert

from tests.conftest import Watcher
from tests.web.test_console import Console
from tests.web.test_console import console as console  # its page helpers, on the session's browser
from watcher import schema
from watcher.db import session_scope
from watcher.models import Repository, Tag, utcnow
from watcher.read.tables import platforms_cell
from watcher.registrations import store
from watcher.registrations.spec import RegistrySpec
from watcher.web.console.render import https_link

SOURCE = "org.opencontainers.image.source"
REVISION = "org.opencontainers.image.revision"
HTML = '<img src=x onerror="window.__xss=1"><script>window.__xss=1</script>'
#: each tag's creation time (hours ago) and source annotation; "unread" has no metadata yet
SOURCES = {
    "good": (1, "https://git.example/team/app"),
    "js": (2, "javascript:alert(1)"),
    "http": (3, "http://git.example/team/app"),
    "html": (4, HTML),
    "quoted": (5, 'https://git.example/a"onclick="window.__xss=1'),  # an https link, its quote escaped
}


def test_the_repository_page_shows_builds_platforms_and_only_https_sources_as_links(
    watcher: Watcher, console: Console
) -> None:
    now = utcnow().replace(microsecond=0)
    with session_scope(watcher.engine) as session:
        registry, _ = store.save(session, RegistrySpec("r1", "oci", "https://r1.example.com"))
        repo = Repository(registry_id=registry.id, name="team/app")
        session.add(repo)
        session.flush()
        digests = {tag: f"sha256:{n:064x}" for n, tag in enumerate([*SOURCES, "unread"])}
        session.add_all(Tag(repository_id=repo.id, name=tag, digest=digest) for tag, digest in digests.items())
        session.execute(
            insert(schema.images),
            [
                {
                    "digest": digests[tag],
                    "kind": "index",
                    "platforms": [
                        {"os": "linux", "architecture": "amd64", "variant": None},
                        {"os": "linux", "architecture": "arm64", "variant": "v8"},
                    ],
                    "created": now - timedelta(hours=hours),
                    "size": 1000,
                    "annotations": {SOURCE: source, REVISION: f"0123456789abcdef-{tag}" if tag != "html" else HTML},
                }
                for tag, (hours, source) in SOURCES.items()
            ],
        )

    console.log_in(console.api.reader_token)
    console.open("/console/registries/r1/repositories/team/app")
    good = console.visible('#tags tr[data-tag="good"]')
    assert good.find_element(By.CSS_SELECTOR, "td.created").text == "1 h ago"
    assert str(good.find_element(By.CSS_SELECTOR, "td.created").get_attribute("title")).endswith("UTC")
    assert good.find_element(By.CSS_SELECTOR, "td.pushed").text == "—"  # as the registry says: no push time
    assert good.find_element(By.CSS_SELECTOR, "td.platforms").text == "linux/amd64,linux/arm64/v8"
    link = good.find_element(By.CSS_SELECTOR, "td.source a.source-link")
    assert (link.get_attribute("href"), link.text) == ("https://git.example/team/app", "https://git.example/team/app")
    assert "noopener" in str(link.get_attribute("rel"))
    revision = good.find_element(By.CSS_SELECTOR, "td.source code.revision")
    assert (revision.text, revision.get_attribute("title")) == ("0123456789ab", "0123456789abcdef-good")

    for tag in ("js", "http", "html"):  # shown as the text it is, never a link nor markup
        cell = console.find(f'#tags tr[data-tag="{tag}"] td.source')
        assert cell.find_elements(By.CSS_SELECTOR, "a") == []
        assert cell.find_element(By.CSS_SELECTOR, ".source-text").get_attribute("title") == SOURCES[tag][1]
    html = console.find('#tags tr[data-tag="html"] td.source')
    assert html.find_element(By.CSS_SELECTOR, "code.revision").get_attribute("title") == HTML
    assert console.all("#tags img, #tags script, #tags [onerror], #tags [onclick]") == []
    quoted = console.find('#tags tr[data-tag="quoted"] td.source a.source-link')
    assert quoted.get_attribute("onclick") is None and quoted.get_attribute("title") == SOURCES["quoted"][1]
    unread = console.find('#tags tr[data-tag="unread"]')
    assert [unread.find_element(By.CSS_SELECTOR, f"td.{c}").text for c in ("created", "platforms", "source")] == [
        "—",
        "—",
        "—",
    ]
    assert console.driver.execute_script("return window.__xss") is None

    console.find("#sort a[href='?order=created']").click()
    console.visible("#sort strong")
    assert console.find("#sort strong").text == "newest build"
    tags = [row.get_attribute("data-tag") for row in console.all("#tags tbody tr")]
    assert tags == ["good", "js", "http", "html", "quoted", "unread"]
    console.shot("repository-images")


@pytest.mark.parametrize(
    ("value", "linked"),
    [
        ("https://github.com/team/app", True),
        ("https://git.example:8443/a?b=c#d", True),
        ("javascript:alert(1)", False),
        ("JAVASCRIPT:alert(1)", False),
        ("data:text/html,<script>alert(1)</script>", False),
        ("http://github.com/team/app", False),
        ("HTTPS://github.com/team/app", False),  # not as written by any tool: text, never a guess
        (" https://github.com/team/app", False),
        ("https://github.com/te\tam", False),  # a browser drops the tab: it would follow another URL
        ("https://git.example\\@evil.example/", False),
        ("https:///path-only", False),
        ("https://[::1", False),
        ("//evil.example/", False),
        ("github.com/team/app", False),
    ],
)
def test_only_a_plain_https_url_becomes_a_link(value: str, linked: bool) -> None:
    assert https_link(value) == (value if linked else None)


def test_platforms_are_compact() -> None:
    many = [f"linux/arch{n}" for n in range(6)]
    assert platforms_cell(many) == "linux/arch0,linux/arch1,linux/arch2,+3"
    assert platforms_cell(many[:4]) == ",".join(many[:4])
    assert platforms_cell(None) == platforms_cell(()) == "—"
