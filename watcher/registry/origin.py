"""Credentials belong to an origin: what a client may follow, and where it may send anything at all.

Every client of `watcher.registry.http` talks to one origin (scheme, host, port): its registry, or a provider API's
own base URL. A registry's answers cannot move it elsewhere: a pagination `Link`, a redirect or a
challenge pointing at another origin fails the request with one line naming the target, before anything
is sent there. The one exception is the token realm, the way Docker's client has it: a realm announced by
a challenge that came from the client's own origin may be on another host (Docker Hub's is
auth.docker.io), but never over plain http when the registry is https. Whatever the origin, the network
policy (`watcher.registry.netpolicy`) still decides at connect time whether its address may be reached.
"""

from __future__ import annotations

import httpx

from watcher import errors

Origin = tuple[str, str, int]
_DEFAULT_PORTS = {"http": 80, "https": 443}


class OffOrigin(errors.BadResponseError):
    """A link, redirect or realm that would take the request (and its credentials) to another origin."""


def origin_of(url: httpx.URL | str) -> Origin:
    url = httpx.URL(url)
    return (url.scheme, url.host, url.port or _DEFAULT_PORTS.get(url.scheme, 0))


def shown(url: httpx.URL | str) -> str:
    """A URL for an error line: no userinfo, no query (which could carry a token)."""
    return str(httpx.URL(url).copy_with(username=None, password=None, query=None, fragment=None))


class OriginGuard:
    """The origins one client may reach: its home, plus token realms its home announced."""

    def __init__(self, base_url: str) -> None:
        self.base = httpx.URL(base_url)
        self.home = origin_of(self.base)
        self._realms: set[Origin] = set()

    def at_home(self, url: httpx.URL) -> bool:
        return origin_of(url) == self.home

    # -- httpx event hooks: every request sent, every redirect answered -----------------------------------
    async def check_request(self, request: httpx.Request) -> None:
        """Nothing is sent outside the home origin and the realms it announced."""
        where = origin_of(request.url)
        if where != self.home and where not in self._realms:
            raise OffOrigin(
                f"refused to send a request to {shown(request.url)}: neither {self._home_text()} "
                "nor a token realm it announced"
            )

    async def check_redirect(self, response: httpx.Response) -> None:
        """A redirect is followed only within the origin of the request it answers."""
        if not response.has_redirect_location:
            return
        target = response.request.url.join(response.headers["location"])
        if origin_of(target) != origin_of(response.request.url):
            raise OffOrigin(
                f"redirected to {shown(target)}, another origin than {shown(response.request.url.join('/'))}; "
                "not followed"
            )

    # -- what the registry's answers point at -----------------------------------------------------------
    def follow_link(self, target: str, what: str) -> str:
        """The absolute URL of a pagination link, which must stay on the home origin."""
        url = self.base.join(target.strip())
        if not self.at_home(url):
            raise OffOrigin(f"{what}: the next page is on another origin ({shown(url)}); not followed")
        return str(url)

    def admit_realm(self, realm: str, announced_by: httpx.Response) -> httpx.URL:
        """The token realm a challenge announced, once it may be asked for a token with our credentials."""
        if not self.at_home(announced_by.url):
            raise OffOrigin(f"a challenge from {shown(announced_by.url)} (not {self._home_text()}) was not answered")
        if not realm.strip():
            raise OffOrigin("the registry's bearer challenge names no token realm")
        url = announced_by.url.join(realm.strip())
        if url.scheme not in ("http", "https") or not url.host:
            raise OffOrigin(f"the token realm {realm!r} is not an http(s) URL")
        if url.scheme == "http" and self.home[0] == "https":
            raise OffOrigin(
                f"the registry announced its token realm over plain http ({shown(url)}) although it is served "
                "over https; credentials are not sent in clear text"
            )
        self._realms.add(origin_of(url))
        return url

    def readmit(self, realms: set[Origin]) -> None:
        """Realms this same origin announced to an earlier client (a worker's previous poll, whose
        tokens are used again): admitted as they were then."""
        self._realms |= realms

    def _home_text(self) -> str:
        return f"the origin {shown(self.base.join('/'))}"
