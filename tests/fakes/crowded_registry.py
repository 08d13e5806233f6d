"""A fake: the hostile registry in its `normal` mode (the OCI Distribution API, no auth), answering
slowly and recording, as the registry sees it, how many requests are in flight at once, when each one
started, and whose polls overlapped.

Why a fake: the limits under test are measured where a registry would feel them, and the real
`docker-registry` records none of this. A repository's owner is its first path segment, so tests that
give each process its own `owner/*` see which processes overlapped. `throttle(after, retry_after)`
answers one request with a 429 and `Retry-After`: the first after `after` requests that arrives once at
least three owners sent one of the last ten (all polls are under way).
"""

from __future__ import annotations

import threading
import time
from urllib.parse import unquote, urlsplit

from tests.fakes.hostile_registry import HostileRegistry, Recorder, _HostileHandler, digest_of


class CrowdedRegistry(HostileRegistry):
    def __init__(self, repositories: dict[str, list[str]], *, delay: float = 0.05) -> None:
        self.delay = delay
        self.in_flight = 0
        self.max_in_flight = 0
        #: per owner (first path segment of a repository): its first and last request's arrival
        self.spans: dict[str, tuple[float, float]] = {}
        #: monotonic arrival time of every request
        self.starts: list[float] = []
        #: the client end (address, port) of every connection a request came on
        self.peers: set[tuple[str, int]] = set()
        #: monotonic time the throttling 429 was answered
        self.throttled_at: float | None = None
        self._recent: list[str] = []  # owners of the last ten requests
        self._throttle: tuple[int, float] | None = None
        self._lock = threading.Lock()
        self._recorder = Recorder()  # the hostile registry's other host, unused in `normal` mode
        tags = {repo: {tag: digest_of(f"{repo}:{tag}") for tag in names} for repo, names in repositories.items()}
        super().__init__(self._recorder, repositories=tags)
        self._httpd.RequestHandlerClass = _CrowdedHandler

    def close(self) -> None:
        super().close()
        self._recorder.close()

    def throttle(self, after: int, retry_after: float) -> None:
        with self._lock:
            self._throttle = (after, retry_after)

    def enter(self, owner: str) -> float | None:
        """Count a request in; the Retry-After to answer it with, if it is the one to throttle."""
        with self._lock:
            self.starts.append(time.monotonic())
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            if owner != "-":
                first = self.spans.get(owner, (self.starts[-1], 0.0))[0]
                self.spans[owner] = (first, self.starts[-1])
            self._recent = [*self._recent[-9:], owner]
            if self._throttle is not None and len(self.starts) > self._throttle[0] and len(set(self._recent)) >= 3:
                retry_after = self._throttle[1]
                self._throttle = None
                self.throttled_at = time.monotonic()
                return retry_after
        return None

    def overlapping(self) -> int:
        """The most owners whose requests were under way (between their first and last) at one moment."""
        spans = list(self.spans.values())
        return max((sum(1 for a, b in spans if a <= t <= b) for t, _ in spans), default=0)

    def leave(self) -> None:
        with self._lock:
            self.in_flight -= 1


class _CrowdedHandler(_HostileHandler):
    def do_GET(self) -> None:
        path = unquote(urlsplit(self.path).path)
        repository = path.removeprefix("/v2/").split("/tags/")[0].split("/manifests/")[0]
        crowded: CrowdedRegistry = self.owner
        crowded.peers.add(self.client_address)
        retry_after = crowded.enter(repository.split("/")[0] if "/" in repository else "-")
        self._counted = True
        try:
            time.sleep(crowded.delay)
            if retry_after is not None:
                self._answer(429, b"{}", {"Retry-After": f"{retry_after:g}"})
            else:
                super().do_GET()
        finally:
            self._leave()

    do_HEAD = do_GET

    def _answer(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        # out of flight before the answer's first byte goes: a client may send its next request the moment
        # it has the answer, before this thread would otherwise get to count this one out
        self._leave()
        super()._answer(status, body, headers)

    def _leave(self) -> None:
        if getattr(self, "_counted", False):
            self._counted = False
            crowded: CrowdedRegistry = self.owner
            crowded.leave()
