"""Fuzzing what a registry answers: generated bodies and headers for catalog, tag lists and manifests,
polled through `watcher poll`. Whatever the registry sends, the poll exits 0, or 1 with one line; no
traceback; no event whose repository, tag or digest is not valid OCI.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tests.conftest import Watcher
from tests.fakes.canned import Answer, CannedServer
from tests.fakes.hostile_registry import digest_of
from watcher.registry.reference import is_digest, is_repository, is_tag

ROUTES = ("catalog", "tags", "manifest")
RETRYABLE = frozenset({429, 500, 502, 503, 504})


class FuzzRegistry(CannedServer):
    """A registry (a fake: it answers whatever the example planned) for the `/v2/` routes."""

    def __init__(self) -> None:
        self.plan: dict[str, Answer] = dict(ANSWERS)
        super().__init__(self.route, name="fuzz-registry")

    def route(self, path: str) -> Answer:
        if path in ("/v2/", "/v2"):
            return Answer()
        if path == "/v2/_catalog":
            return self.plan["catalog"]
        if path.endswith("/tags/list"):
            return self.plan["tags"]
        if "/manifests/" in path:
            return self.plan["manifest"]
        return Answer(404, [], b'{"errors": []}')


# -- what a registry may send ----------------------------------------------------------------------
VALID_REPOSITORIES = st.sampled_from(["team/app", "team/web", "a" * 255, "x/y/z"])
VALID_TAGS = st.sampled_from(["v1", "latest", "t" * 128, "1.0-rc_1"])
NASTY_NAMES = st.sampled_from(
    ["a/../../b", "v1#frag", "v1?x=1", "%2e%2e", "../../etc", "", " ", "Team/App", "a" * 600, "t" * 300, "é", "\x00"]
)
JSON_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
NAMES = st.one_of(VALID_REPOSITORIES, VALID_TAGS, NASTY_NAMES, JSON_VALUES)
DIGESTS = st.one_of(
    st.sampled_from(
        [
            digest_of("one"),
            digest_of("one", "sha512"),
            "not-a-digest; rm -rf /",
            "sha256:" + "A" * 64,
            "sha256:abc",
            "blake3:" + "a" * 300,
            "sha256:" + "a" * 64 + ", sha256:" + "b" * 64,
        ]
    ),
    st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=40),
)
LINKS = st.one_of(
    st.sampled_from(
        [
            '</v2/_catalog?n=1&last=x>; rel="next"',
            '</v2/team/app/tags/list?n=1&last=v1>; rel="next"',
            "<http://127.0.0.2:9/v2/_catalog>; rel=next",
            '<>; rel="next"',
            "garbage",
        ]
    ),
    st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=60),
)
STATUSES = st.sampled_from([200] * 12 + [204, 206, 302, 400, 401, 403, 404, 405, 429, 500, 501, 503])


@st.composite
def listing_bodies(draw: st.DrawFn, key: str, odd: bool) -> bytes:
    """A catalog or tag-list body: the right shape with odd entries, or (when `odd`) anything at all."""
    shape = draw(st.sampled_from(["listing", "json", "bytes", "deep"])) if odd else "listing"
    if shape == "bytes":
        return draw(st.binary(max_size=64))
    if shape == "deep":  # nesting deeper than a recursive parser goes
        depth = draw(st.sampled_from([100, 10_000]))
        return f'{{"{key}": {"[" * depth}{"]" * depth}}}'.encode()
    valid = VALID_REPOSITORIES if key == "repositories" else VALID_TAGS
    entries = st.lists(st.one_of(valid, valid, NAMES), max_size=8)
    document: Any = {"name": "team/app", key: draw(entries)} if shape == "listing" else draw(JSON_VALUES)
    encoding = draw(st.sampled_from(["utf-8", "utf-16", "latin-1"])) if odd else "utf-8"
    return json.dumps(document).encode(encoding, errors="replace")


@st.composite
def answers(draw: st.DrawFn, route: str) -> Answer:
    """Mostly a well-formed answer with odd contents (so polls reach tag lists and manifests), sometimes
    odd headers, statuses and encodings as well."""
    odd = draw(st.integers(0, 9)) >= 7
    headers: list[tuple[str, str]] = []
    if route == "manifest":
        body = draw(st.sampled_from([b"{}", b"", b"\xff\xfe"]))
        if draw(st.integers(0, 4)) > 0:
            headers.append(("Docker-Content-Digest", draw(DIGESTS)))
    else:
        body = draw(listing_bodies("repositories" if route == "catalog" else "tags", odd))
    if not odd:
        return Answer(200, [*headers, ("Content-Type", "application/json")], body)
    if draw(st.booleans()):
        content_type = draw(st.sampled_from(["application/json", "text/html", "application/json; charset=utf-16"]))
        headers.append(("Content-Type", content_type))
    if draw(st.booleans()):
        headers.append(("Link", draw(LINKS)))
    if draw(st.integers(0, 3)) == 0:
        headers.append(("Content-Encoding", "gzip"))
        body = gzip.compress(body) if draw(st.booleans()) else body  # and sometimes a lie
    status = draw(STATUSES)
    if status in RETRYABLE:
        headers.append(("Retry-After", "0"))  # retried at once: the fuzz stays fast
    return Answer(status, headers, body)


PLANS = st.fixed_dictionaries({route: answers(route) for route in ROUTES})


#: well-formed answers, for the routes an explicit example leaves out
ANSWERS = {
    "catalog": Answer(body=b'{"repositories": ["team/app"]}'),
    "tags": Answer(body=b'{"name": "team/app", "tags": ["v1"]}'),
    "manifest": Answer(headers=[("Docker-Content-Digest", digest_of("v1"))]),
}


@pytest.fixture
def fuzz_registry() -> Iterator[FuzzRegistry]:
    with FuzzRegistry() as server:
        yield server


@settings(
    max_examples=120,  # about 15 s: the suite has a 7-minute budget
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    database=None,
)
@given(plan=PLANS)
@example(plan={"catalog": Answer(body=b'{"repositories": ' + b"[" * 10_000 + b"]" * 10_000 + b"}")})
@example(plan={"catalog": Answer(body=b'{"repositories": ["team/app"]}'), "tags": Answer(body=b"[" * 10_000)})
@example(plan={"catalog": Answer(headers=[("Content-Encoding", "gzip")], body=b'{"repositories": []}')})
@example(plan={"manifest": Answer(headers=[("Docker-Content-Digest", "not-a-digest; rm -rf /")])})
def test_any_registry_answer_is_one_line_or_valid_events(
    watcher: Watcher, fuzz_registry: FuzzRegistry, plan: dict[str, Answer]
) -> None:
    if watcher.cli("registry", "show", "h").exit_code != 0:
        added = watcher.add_registry("h", fuzz_registry.url, "--emit-existing", "--no-verify")
        assert added.exit_code == 0, added.output
    fuzz_registry.plan = {route: plan.get(route) or ANSWERS[route] for route in ROUTES}
    result = watcher.cli("poll", "h")  # a traceback would raise here: the runner does not catch
    assert result.exit_code in (0, 1), result.output
    assert "Traceback" not in result.output
    if result.exit_code == 1:
        assert len(result.output.strip().splitlines()) == 1, result.output
    for entry in watcher.stream_entries():
        assert is_repository(entry["repository"]), entry
        assert is_tag(entry["tag"]), entry
        assert is_digest(entry["digest"]), entry
