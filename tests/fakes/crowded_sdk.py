"""FAKES for the SDK-driven providers that record, as the registry sees it, how many requests are in flight
at once: an ECR API (JSON 1.1 `DescribeRepositories` / `DescribeImages`, as boto3 calls it) and an ACR
(`tests.fakes.acr.FakeAcr`, its token exchange included). Each answer is delayed, so requests overlap.

A repository's owner is its first path segment (`p0/r1`), so tests giving each process its own `owner/*`
see whose requests overlapped. `throttle(after, retry_after)` throttles one request, the first after
`after` that arrives once at least three owners sent one of the last ten: ECR's way is
`400 ThrottlingException` (AWS sends no `Retry-After`; this fake adds one so the pause is long enough to
observe), ACR's `429` with `Retry-After`.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from typing import Any

import trustme

from tests.fakes.aad import FakeAad, Reply, Request
from tests.fakes.acr import FakeAcr
from tests.support.servers import BackgroundServer, QuietHandler

ECR_PREFIX = "AmazonEC2ContainerRegistry_V20150921."


class InFlight:
    """What a crowded server records: requests in flight (now and most), arrivals, owners' spans, and the
    one throttled answer."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.in_flight = 0
        self.max_in_flight = 0
        #: monotonic arrival time of every request
        self.starts: list[float] = []
        #: per owner: its first and last request's arrival
        self.spans: dict[str, tuple[float, float]] = {}
        #: monotonic time the throttled answer was sent
        self.throttled_at: float | None = None
        self._recent: list[str] = []
        self._throttle: tuple[int, float] | None = None
        self._counting = threading.Lock()

    def throttle(self, after: int, retry_after: float) -> None:
        with self._counting:
            self._throttle = (after, retry_after)

    def enter(self, owner: str) -> float | None:
        """Count a request in; the Retry-After to throttle it with, if it is the one."""
        with self._counting:
            now = time.monotonic()
            self.starts.append(now)
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            if owner != "-":
                self.spans[owner] = (self.spans.get(owner, (now, 0.0))[0], now)
            self._recent = [*self._recent[-9:], owner]
            if self._throttle is not None and len(self.starts) > self._throttle[0] and len(set(self._recent)) >= 3:
                retry_after = self._throttle[1]
                self._throttle = None
                self.throttled_at = now
                return retry_after
        return None

    def leave(self) -> None:
        with self._counting:
            self.in_flight -= 1

    def overlapping(self) -> int:
        """The most owners whose requests were under way (between their first and last) at one moment."""
        spans = list(self.spans.values())
        return max((sum(1 for a, b in spans if a <= t <= b) for t, _ in spans), default=0)


def owner_of(repository: str | None) -> str:
    return repository.split("/")[0] if repository and "/" in repository else "-"


class CrowdedEcrApi(BackgroundServer, InFlight):
    """FAKE ECR API over HTTP: `repositories` maps each repository to its tags (one image per tag)."""

    def __init__(self, repositories: dict[str, list[str]], *, delay: float = 0.05) -> None:
        InFlight.__init__(self, delay)
        self.repositories = repositories
        super().__init__(_EcrHandler, name="crowded-ecr-api")


class _EcrHandler(QuietHandler):
    def do_POST(self) -> None:
        api: CrowdedEcrApi = self.owner
        params = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
        operation = self.headers.get("X-Amz-Target", "").removeprefix(ECR_PREFIX)
        retry_after = api.enter(owner_of(params.get("repositoryName")))
        try:
            time.sleep(api.delay)
            headers: dict[str, str] = {}
            body: dict[str, Any]
            if retry_after is not None:
                status, body = 400, {"__type": "ThrottlingException", "message": "Rate exceeded"}
                headers["Retry-After"] = f"{retry_after:g}"
            elif operation == "DescribeRepositories":
                status, body = 200, {"repositories": [{"repositoryName": name} for name in api.repositories]}
            elif operation == "DescribeImages" and params.get("repositoryName") in api.repositories:
                status, body = 200, {"imageDetails": _images(params["repositoryName"], api.repositories)}
            elif operation == "DescribeImages":
                status, body = 400, {"__type": "RepositoryNotFoundException", "message": "no such repository"}
            else:
                status, body = 400, {"__type": "UnknownOperationException", "message": operation}
            data = json.dumps(body).encode()
            self.send_response(status)
            for key, value in {**headers, "Content-Type": "application/x-amz-json-1.1"}.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        finally:
            api.leave()


def _images(repository: str, repositories: dict[str, list[str]]) -> list[dict[str, Any]]:
    return [
        {
            "repositoryName": repository,
            "imageDigest": "sha256:" + hashlib.sha256(f"{repository}:{tag}".encode()).hexdigest(),
            "imageTags": [tag],
            "imagePushedAt": 1.7145648001e9,
        }
        for tag in repositories[repository]
    ]


class CrowdedAcr(FakeAcr, InFlight):
    """FAKE ACR (`FakeAcr`) whose every request — listings and token exchanges — is delayed and counted."""

    def __init__(self, ca: trustme.CA, aad: FakeAad, *, delay: float = 0.05, page_size: int = 100) -> None:
        InFlight.__init__(self, delay)
        super().__init__(ca, aad, page_size=page_size)

    def _handle(self, request: Request) -> Reply:
        rest = request.path.removeprefix("/acr/v1/")
        retry_after = self.enter(owner_of(rest.removesuffix("/_tags").replace("%2F", "/")))
        try:
            time.sleep(self.delay)
            if retry_after is not None:
                return Reply(
                    429,
                    {"errors": [{"code": "TOOMANYREQUESTS", "message": "slow down"}]},
                    {"Retry-After": f"{retry_after:g}"},
                )
            return super()._handle(request)
        finally:
            self.leave()
