"""What a reader (or anyone) can send that once made the API answer 500 with a traceback: forged cursors,
times at the edges of the calendar, an id past 64 bits, a NUL, a URL whose host only looks like an address.
Each is now one 4xx in the error shape, on SQLite and on PostgreSQL."""

from __future__ import annotations

import base64
import json
from typing import Any

import httpx
import pytest

from tests.conftest import Watcher
from tests.fakes.hostile_registry import HostileRegistry, Recorder
from tests.web.conftest import Api
from watcher.read.model import encode_cursor


def forged(text: str) -> str:
    """A cursor as the API hands them out: url-safe base64 of JSON, without padding."""
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def one_error(response: httpx.Response, status: int, field: str | None = None) -> dict[str, Any]:
    where = f"{response.request.method} {response.request.url} -> {response.status_code}: {response.text[:300]}"
    assert response.status_code == status, where
    error: dict[str, Any] = response.json()["error"]
    assert set(response.json()) == {"error"} and {"code", "message"} <= error.keys(), where
    assert "\n" not in error["message"] and "Traceback" not in response.text, where
    if field is not None:
        assert error.get("field") == field, where
    return error


@pytest.fixture
def polled(watcher: Watcher) -> Watcher:
    """A registry with a stored repository, tag, poll and event (so every query has rows to compare)."""
    with Recorder() as recorder, HostileRegistry(recorder) as hostile:
        added = watcher.add_registry("r1", hostile.url, "--emit-existing")
        assert added.exit_code == 0, added.output
        assert watcher.cli("poll", "r1").exit_code == 0
    return watcher


CURSORS = {
    "an id past 64 bits": encode_cursor([10**20]),
    "a negative id": encode_cursor([-1]),
    "1,400 nested arrays": forged("[" * 1400 + "]" * 1400),
    "a float": encode_cursor([1.5]),
}
TIME_CURSORS = {
    "a naive time": encode_cursor(["2026-01-01T00:00:00", 1]),
    "year 1 with an offset": encode_cursor(["0001-01-01T00:00:00+01:00", 1]),
    "year 9999 with an offset": encode_cursor(["9999-12-31T23:59:59-01:00", 1]),
    "an id past 64 bits": encode_cursor(["2026-01-01T00:00:00+00:00", 10**20]),
}


@pytest.mark.parametrize("db", ["sqlite", "postgresql"], indirect=True)
def test_forged_cursors_are_one_422(polled: Watcher, api: Api) -> None:
    for what, cursor in CURSORS.items():
        for path in ("/api/v1/events", "/api/v1/registries/r1/polls"):
            error = one_error(api.reader.get(path, params={"cursor": cursor}), 422)
            assert "cursor" in error["message"], what
    for what, cursor in TIME_CURSORS.items():
        response = api.reader.get(
            "/api/v1/registries/r1/repositories/team/app/tags", params={"order": "pushed_at", "cursor": cursor}
        )
        assert "cursor" in one_error(response, 422)["message"], what
    for path in ("/api/v1/registries/r1/repositories", "/api/v1/registries/r1/repositories/team/app/tags"):
        text_cursor = encode_cursor(["team\x00app"] if path.endswith("repositories") else ["team/app", "v\x00"])
        one_error(api.reader.get(path, params={"cursor": text_cursor}), 422)
    # a year-1 cursor in UTC is a real (if odd) position: a page, not an error
    year_one = encode_cursor(["0001-01-01T00:00:00+00:00", 1])
    tags = api.reader.get(
        "/api/v1/registries/r1/repositories/team/app/tags", params={"order": "pushed_at", "cursor": year_one}
    )
    assert tags.status_code == 200 and tags.json()["items"] == [], tags.text


@pytest.mark.parametrize("db", ["sqlite", "postgresql"], indirect=True)
def test_times_past_the_calendar_in_utc_are_one_422(polled: Watcher, api: Api) -> None:
    for field, moment in (("since", "0001-01-01T00:00:00+01:00"), ("until", "9999-12-31T23:59:59-01:00")):
        error = one_error(api.reader.get("/api/v1/events", params={field: moment}), 422, field)
        assert "out of range" in error["message"]
    edges = {"since": "0001-01-01T00:00:00-01:00", "until": "9999-12-31T23:59:59+01:00"}  # inside, in UTC
    answer = api.reader.get("/api/v1/events", params=edges)
    assert answer.status_code == 200 and len(answer.json()["items"]) == 3, answer.text


@pytest.mark.parametrize("db", ["sqlite", "postgresql"], indirect=True)
def test_a_nul_is_one_422_and_never_matches_everything(polled: Watcher, api: Api) -> None:
    for path in ("/api/v1/registries/r1/repositories", "/api/v1/registries/r1/repositories/team/app/tags"):
        one_error(api.reader.get(path, params={"q": "\x00"}), 422, "q")
        everything = api.reader.get(path).json()["items"]
        assert everything and api.reader.get(path, params={"q": "%"}).json()["items"] == []  # matched literally
    one_error(api.reader.get("/api/v1/events", params={"repository": "team\x00"}), 422, "repository")
    one_error(api.reader.get("/api/v1/registries/r1%00"), 404)  # no registry's name holds one
    one_error(api.reader.get("/api/v1/registries/r1%00/polls"), 404)


def test_a_last_event_id_past_64_bits_is_one_422(watcher: Watcher, api: Api) -> None:
    answer = api.reader.get("/api/v1/events/stream", headers={"Last-Event-ID": str(10**20)})
    assert one_error(answer, 422, "last-event-id")
    with api.reader.stream("GET", "/api/v1/events/stream", headers={"Last-Event-ID": str(2**63 - 1)}) as stream:
        assert stream.status_code == 200
        assert next(stream.iter_lines()) == ": connected"  # the largest id there can be: nothing to replay


def test_a_host_that_only_looks_like_an_address_is_one_422(watcher: Watcher, api: Api) -> None:
    for url in ("http://0177.0.0.2:5000", "http://127.1:5000", "http://0x7f.0.0.1", "https://1.2.3.04"):
        entry = {"name": "r2", "provider": "oci", "url": url}
        error = one_error(api.admin.post("/api/v1/registries/validate", json=entry), 422, "url")
        assert "is not an IPv4 address" in error["message"], error
        one_error(api.admin.post("/api/v1/registries", json=entry), 422, "url")
        added = watcher.add_registry("r2", url)
        assert added.exit_code != 0 and "internal error" not in added.output, added.output
        assert "is not an IPv4 address" in added.output


def test_an_invalid_registry_name_is_a_422_on_its_field(watcher: Watcher, api: Api) -> None:
    entry = {"name": "Not A Name", "provider": "oci", "url": "https://r.example.com"}
    for path in ("/api/v1/registries", "/api/v1/registries/validate"):
        error = one_error(api.admin.post(path, json=entry, params={"verify": "false"}), 422, "name")
        assert error["message"].startswith("registry name 'Not A Name' is not valid")
    bad_url = {**entry, "name": "r2", "url": "ftp://r.example.com"}
    one_error(api.admin.post("/api/v1/registries", json=bad_url, params={"verify": "false"}), 422, "url")


@pytest.mark.parametrize("db", ["sqlite", "postgresql"], indirect=True)
def test_a_cursor_is_still_what_the_previous_page_gave(polled: Watcher, api: Api) -> None:
    first = api.reader.get("/api/v1/events", params={"limit": 1}).json()
    second = api.reader.get("/api/v1/events", params={"limit": 1, "cursor": first["next_cursor"]})
    assert second.status_code == 200 and second.json()["items"][0]["id"] < first["items"][0]["id"]
    first_tags = api.reader.get(
        "/api/v1/registries/r1/repositories/team/app/tags", params={"limit": 1, "order": "pushed_at"}
    ).json()
    cursor = first_tags["next_cursor"]
    assert json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))[0].endswith("+00:00")
    rest = api.reader.get(
        "/api/v1/registries/r1/repositories/team/app/tags", params={"order": "pushed_at", "cursor": cursor}
    )
    assert rest.status_code == 200 and len(rest.json()["items"]) == 1, rest.text
