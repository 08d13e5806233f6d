"""The one pager: every paginated listing a registry or its API gives, read to the end under one set of rules.

`/v2/_catalog` and tag lists (`watcher.registry.oci`) link their next page in a `Link` header, Docker Hub's
API (`watcher.pollers.dockerhub`) names it in the body's `next`, Harbor's (`watcher.pollers.harbor`) pages
by number and says in a `Link` header that there is a next page. Each provider says only how to read one
page (`Page`: its entries, the next link as sent, the total it announces); this module owns what a
registry's answers are not trusted with:

* a next link is followed only on the client's own origin (`OriginGuard.follow_link`): the credentials
  go nowhere else;
* a page already asked for fails the listing ("pagination loops") instead of looping;
* at most `WATCHER_MAX_PAGES` pages, and `WATCHER_MAX_ENTRIES` entries counted as the pages arrive
  (`watcher.registry.entries`), so a registry announcing millions fails the poll before filling memory;
* a list that changed while it was paged (the totals the pages announce disagree with each other or with
  the entries read, an entry came twice, or a later page is gone) is read once more; a second change
  fails the listing rather than report what was pushed away from under the pages as removed.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

import httpx

from watcher import errors
from watcher.registry.entries import check_entries
from watcher.registry.origin import OriginGuard
from watcher.settings import get_settings

T = TypeVar("T")
#: a list that changed while it was paged is read this often in all, then the listing fails
READS = 2
#: a page that announces no total (an OCI tag list; a Harbor answer without `X-Total-Count`)
UNSAID: object = object()


@dataclass(frozen=True)
class Page(Generic[T]):
    """One page as its provider read it."""

    entries: list[T]
    #: the next page as the answer names it (a `Link` target, a `next` URL), not yet checked; None: the last
    link: str | None
    #: how many entries the whole list holds, as this page says (any JSON value: it is only compared)
    total: object = UNSAID


async def read_list(
    guard: OriginGuard,
    what: str,
    first: str,
    read_page: Callable[[str], Awaitable[Page[T] | None]],
    *,
    capped_as: str | None = "",
    weight: Callable[[T], int] | None = None,
    numbered: bool = False,
    distinct: Callable[[T], object] | None = None,
) -> list[T] | None:
    """Every entry of the list whose first page is `first`; None when that page is gone.

    `read_page(url)` reads one page, or answers None for a page that is not there (404) where the provider
    takes that for "gone" rather than an error. `capped_as` names the entries in the `WATCHER_MAX_ENTRIES`
    error (`what` by default; None: not counted here), each entry counting for `weight(entry)` of them (1 by
    default; the tags of a raw OCI tag page, or of a Harbor artifact). `numbered`: the next page is asked
    for by number (the `page` query parameter), its link only saying there is one: Harbor's links unescape
    a repository's path, so `a%252Fb` would come back as `a%2Fb`. `distinct`: a key two entries of a
    steady list never share.
    """
    for _ in range(READS):
        read = await _read_once(guard, what, first, read_page, capped_as, weight, numbered, distinct)
        if read is None:
            return None
        entries, steady = read
        if steady:
            return entries
    raise errors.BadResponseError(f"{what}: the list kept changing while it was paged; the next poll retries")


async def _read_once(
    guard: OriginGuard,
    what: str,
    first: str,
    read_page: Callable[[str], Awaitable[Page[T] | None]],
    capped_as: str | None,
    weight: Callable[[T], int] | None,
    numbered: bool,
    distinct: Callable[[T], object] | None,
) -> tuple[list[T], bool] | None:
    """The entries of one pass over the pages, and whether the list held still meanwhile."""
    url: str | None = first
    seen: set[str] = set()
    entries: list[T] = []
    totals: set[object] = set()
    counted = 0
    while url is not None:
        if url in seen:
            raise errors.BadResponseError(f"{what}: pagination loops at {url}")
        check_page_count(len(seen), what)
        seen.add(url)
        page = await read_page(url)
        if page is None:  # the first page: nothing there; a later one: the list shrank under us
            return None if len(seen) == 1 else (entries, False)
        entries.extend(page.entries)
        if capped_as is not None:
            counted += len(page.entries) if weight is None else sum(weight(entry) for entry in page.entries)
            check_entries(counted, capped_as or what)
        if page.total is not UNSAID:
            totals.add(page.total)
        if page.link is None:
            break
        link = guard.follow_link(page.link, what)
        url = page_after(url) if numbered else link
    size = len({distinct(entry) for entry in entries}) if distinct is not None else len(entries)
    steady = len(totals) <= 1 and size == len(entries) and all(total is None or total == size for total in totals)
    return entries, steady


def page_after(url: str) -> str:
    """`url` asking for the next page by number: its `page` query parameter (1 when absent) plus one."""
    parsed = httpx.URL(url)
    return str(parsed.copy_set_param("page", str(int(parsed.params.get("page", "1")) + 1)))


def link_target(response: httpx.Response) -> str | None:
    """The `rel="next"` target of a response's `Link` header, as sent (`read_list` checks where it goes)."""
    for link in response.headers.get_list("link"):
        for part in link.split(","):
            target, _, params = part.partition(";")
            if 'rel="next"' in params.replace(" ", "") or "rel=next" in params.replace(" ", ""):
                return target.strip().strip("<>")
    return None


def check_page_count(pages_read: int, what: str) -> None:
    """Refuse to read one more page once a listing has had `WATCHER_MAX_PAGES` of them."""
    limit = get_settings().max_pages
    if pages_read >= limit:
        raise errors.BadResponseError(f"{what}: more than {limit} pages (WATCHER_MAX_PAGES)")
