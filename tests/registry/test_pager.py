"""The one pager (`watcher.registry.pager`) that the catalog, tag lists, Docker Hub's API and Harbor's API
read through: a looping link, a link to another origin, the page and entry caps, and a list that changed
while it was paged. Each provider's own tests (tests/registry/test_hostile_network.py, tests/pollers/
test_dockerhub.py, tests/pollers/test_harbor.py) show the same rules end to end; here the pages are
scripted, so each rule is seen on its own and the requests it did not send are seen too."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest

from watcher import errors
from watcher.registry.origin import OffOrigin, OriginGuard
from watcher.registry.pager import UNSAID, Page, page_after, read_list
from watcher.settings import get_settings

HOME = "https://registry.example"
GUARD = OriginGuard(HOME)
Reader = Callable[[str], Awaitable[Page[Any] | None]]


@pytest.fixture(autouse=True)
def settings(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    """Caps set per test through the environment, as an operator sets them; the defaults afterwards."""
    get_settings.cache_clear()
    yield monkeypatch
    monkeypatch.undo()
    get_settings.cache_clear()


def limit(monkeypatch: pytest.MonkeyPatch, **values: str) -> None:
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()


class Pages:
    """A scripted list: `pages[url]` answers that URL (None: a 404 the provider reads as "gone"); every
    URL asked for is recorded."""

    def __init__(self, pages: dict[str, Page[Any] | None]) -> None:
        self.pages = pages
        self.asked: list[str] = []

    async def __call__(self, url: str) -> Page[Any] | None:
        self.asked.append(url)
        return self.pages[url]


def read(reader: Reader, first: str = "/list?n=2", **options: Any) -> list[Any] | None:
    return asyncio.run(read_list(GUARD, "the list", first, reader, **options))


def test_the_next_links_are_followed_to_the_last_page_on_the_home_origin() -> None:
    pages = Pages(
        {
            "/list?n=2": Page(["a", "b"], "/list?n=2&last=b"),  # relative, as registries send it
            f"{HOME}/list?n=2&last=b": Page(["c", "d"], f"{HOME}/list?n=2&last=d"),
            f"{HOME}/list?n=2&last=d": Page(["e"], None),
        }
    )
    assert read(pages) == ["a", "b", "c", "d", "e"]
    assert len(pages.asked) == 3


def test_a_looping_next_link_fails_the_listing_instead_of_looping(settings: pytest.MonkeyPatch) -> None:
    limit(
        settings, WATCHER_MAX_PAGES="50"
    )  # without the seen set, the page cap would end it: later, and in other words
    pages = Pages(
        {
            "/list?n=2": Page(["a"], "/list?n=2&last=a"),
            f"{HOME}/list?n=2&last=a": Page(["b"], "/list?n=2&last=b"),
            f"{HOME}/list?n=2&last=b": Page(["c"], "/list?n=2&last=a"),  # back to the second page
        }
    )
    with pytest.raises(
        errors.BadResponseError, match=re.escape(f"the list: pagination loops at {HOME}/list?n=2&last=a")
    ):
        read(pages)
    assert len(pages.asked) == 3  # the page already read is not asked for again


@pytest.mark.parametrize(
    "link",
    ["https://elsewhere.example/list?page=2", "http://registry.example/list?page=2", f"{HOME}:8443/list?page=2"],
    ids=["host", "scheme", "port"],
)
def test_a_next_link_to_another_origin_is_not_followed(link: str) -> None:
    pages = Pages({"/list?n=2": Page(["a"], link)})
    with pytest.raises(OffOrigin, match="the list: the next page is on another origin"):
        read(pages)
    assert pages.asked == ["/list?n=2"]


def test_a_numbered_list_checks_its_link_but_asks_for_the_next_page_by_number() -> None:
    """Harbor: the link says there is a next page; the request is the same one with `page` one higher."""
    first = "/api/v2.0/projects/p/repositories/a%252Fb/artifacts?with_tag=true&page=1&page_size=2"
    second = first.replace("page=1", "page=2")
    pages = Pages(
        {
            first: Page(["x", "y"], "/api/v2.0/projects/p/repositories/a%2Fb/artifacts?page=2", 3),
            second: Page(["z"], None, 3),
        }
    )
    assert read(pages, first, numbered=True) == ["x", "y", "z"]
    assert pages.asked == [first, second]  # the double-encoded name kept; the link's single one not used
    off = Pages({first: Page(["x"], "https://elsewhere.example/next", 3)})
    with pytest.raises(OffOrigin):
        read(off, first, numbered=True)
    assert page_after("/p?q=1") == "/p?q=1&page=2"


def test_the_page_cap_stops_an_endless_list(settings: pytest.MonkeyPatch) -> None:
    limit(settings, WATCHER_MAX_PAGES="5")
    asked: list[str] = []

    async def endless(url: str) -> Page[str]:
        asked.append(url)
        return Page(["x"], f"/list?page={len(asked) + 1}")

    with pytest.raises(errors.BadResponseError, match=r"the list: more than 5 pages \(WATCHER_MAX_PAGES\)"):
        read(endless)
    assert len(asked) == 5


def test_the_entry_cap_counts_as_the_pages_arrive(settings: pytest.MonkeyPatch) -> None:
    limit(settings, WATCHER_MAX_ENTRIES="3")
    pages = Pages(
        {
            "/list?n=2": Page(["a", "b"], "/list?n=2&last=b"),
            f"{HOME}/list?n=2&last=b": Page(["c", "d"], "/list?n=2&last=d"),
            f"{HOME}/list?n=2&last=d": Page(["e"], None),
        }
    )
    with pytest.raises(errors.BadResponseError, match="the list: more than 3 entries, the limit; raise WATCHER_MAX"):
        read(pages)
    assert len(pages.asked) == 2  # the third page is never asked for

    artifacts = [{"tags": ["1", "2"]}, {"tags": ["3", "4"]}]  # a page of Harbor's: its tags are what counts
    tagged = Pages({"/list?n=2": Page(artifacts, None)})
    with pytest.raises(errors.BadResponseError, match="tags of app: more than 3 entries"):
        read(tagged, capped_as="tags of app", weight=lambda artifact: len(artifact["tags"]))
    assert read(tagged, capped_as=None, weight=lambda artifact: len(artifact["tags"])) == artifacts  # not counted


def test_a_list_whose_total_changed_while_paged_is_read_again() -> None:
    """A push right after the first page: the second page announces one more entry than the first did, so
    the list is read once more, and the second read, steady, is the answer."""
    asked: list[str] = []
    total = 3

    async def pushed_once(url: str) -> Page[str]:
        nonlocal total
        asked.append(url)
        if url == "/list?page_size=2":
            page, total = Page(["a", "b"], "/list?page=2", total), 4
            return page
        return Page(["c", "d"], None, total)

    assert read(pushed_once, "/list?page_size=2") == ["a", "b", "c", "d"]
    assert asked == ["/list?page_size=2", f"{HOME}/list?page=2"] * 2


@pytest.mark.parametrize(
    ("second", "distinct"),
    [
        (Page(["c"], None, 4), None),  # the pages disagree on the total
        (Page([], None, UNSAID), None),  # fewer entries were read than the total announced
        (Page(["b"], None, 3), repr),  # an entry came twice: one was shifted onto the next page
        (None, None),  # the second page is gone: the list shrank under us
    ],
    ids=["totals-disagree", "total-not-read", "entry-twice", "later-page-gone"],
)
def test_a_list_that_keeps_changing_fails_and_is_read_twice_at_most(
    second: Page[str] | None, distinct: Callable[[str], object] | None
) -> None:
    pages = Pages({"/list?page_size=2": Page(["a", "b"], "/list?page=2", 3), f"{HOME}/list?page=2": second})
    with pytest.raises(errors.BadResponseError, match="the list: the list kept changing while it was paged"):
        read(pages, "/list?page_size=2", distinct=distinct)
    assert pages.asked == ["/list?page_size=2", f"{HOME}/list?page=2"] * 2


def test_a_first_page_that_is_gone_is_no_list_and_a_list_without_totals_is_steady() -> None:
    assert read(Pages({"/list?n=2": None})) is None
    assert read(Pages({"/list?n=2": Page(["a", "a"], None)})) == ["a", "a"]  # no total, no key: as sent
    assert read(Pages({"/list?n=2": Page(["a"], None, None)})) == ["a"]  # Docker Hub's `count: null`
