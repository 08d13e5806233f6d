"""Property-based fuzzing of the API from its own OpenAPI document: whatever a client sends, no 5xx, and
every error in the contract's one shape."""

from __future__ import annotations

import base64
import json
from datetime import datetime, timedelta, timezone

import httpx
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.core.result import Ok

from tests.conftest import Watcher
from tests.web.conftest import Api


def test_no_input_makes_the_api_fail_or_answer_off_contract(watcher: Watcher, api: Api) -> None:
    assert watcher.add_registry("r1", "https://r1.example.com", "--no-verify").exit_code == 0
    schema = schemathesis.openapi.from_url(f"{api.server.url}/openapi.json")
    results = list(schema.get_all_operations())
    operations = [result.ok() for result in results if isinstance(result, Ok)]
    assert len(operations) == len(results), "the OpenAPI document has operations schemathesis cannot read"
    assert len(operations) >= 8
    tokens = st.sampled_from([api.admin_token, api.reader_token, None])

    for operation in operations:
        if operation.path.endswith("/stream"):
            continue  # an endless response: its inputs are the filters, fuzzed on /events

        @given(case=operation.as_strategy(), token=tokens)
        @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def answers_within_contract(case: schemathesis.Case, token: str | None) -> None:
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            response = case.call(base_url=api.server.url, headers=headers, timeout=10)
            where = f"{case.method} {case.formatted_path} -> {response.status_code}: {response.text[:300]}"
            assert response.status_code < 500, where
            if response.status_code >= 400:
                body = response.json()
                assert set(body) == {"error"}, where
                assert isinstance(body["error"]["code"], str) and isinstance(body["error"]["message"], str), where
                assert "\n" not in body["error"]["message"] and "Traceback" not in response.text, where

        answers_within_contract()


ZONES = st.builds(timezone, st.timedeltas(timedelta(hours=-23), timedelta(hours=23)))
#: times at the calendar's edges (where an offset moves them out of it in UTC) and anywhere between
EDGES = st.sampled_from([datetime(1, 1, 1), datetime(1, 1, 1, 12), datetime(9999, 12, 31, 12), datetime.max])
TIMES = (EDGES | st.datetimes()).flatmap(
    lambda moment: (st.none() | ZONES).map(lambda zone: moment.replace(tzinfo=zone))
)
#: a cursor's parts: ids past 64 bits (a database's limit), any text, times in any zone and year
PARTS = (
    st.none()
    | st.booleans()
    | st.sampled_from([2**63, 10**20, -1, 2**63 - 1])
    | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats()
    | st.text(max_size=20)
    | TIMES.map(datetime.isoformat)
)
#: JSON values a forged cursor may hold: mostly a sort key's shape (a list of one to four parts), or any
JSON = st.lists(PARTS, min_size=1, max_size=4) | st.recursive(PARTS, lambda c: st.lists(c, max_size=3), max_leaves=6)
PAGED: tuple[tuple[str, dict[str, str]], ...] = (
    ("/api/v1/events", {}),
    ("/api/v1/registries/r1/polls", {}),
    ("/api/v1/registries/r1/repositories", {}),
    ("/api/v1/registries/r1/repositories/team/app/tags", {}),
    ("/api/v1/registries/r1/repositories/team/app/tags", {"order": "pushed_at"}),
    ("/api/v1/registries/r1/repositories/team/app/tags", {"order": "created"}),
)


def test_no_cursor_or_time_makes_the_api_fail(watcher: Watcher, api: Api) -> None:
    """Cursors are opaque, so a client can send any JSON in one; `since`/`until` any time in any zone."""
    assert watcher.add_registry("r1", "https://r1.example.com", "--no-verify").exit_code == 0

    def within_contract(response: httpx.Response) -> None:
        where = f"{response.request.url} -> {response.status_code}: {response.text[:300]}"
        assert response.status_code in (200, 422), where
        if response.status_code == 422:
            assert set(response.json()) == {"error"} and response.json()["error"]["code"] == "invalid", where

    @given(key=JSON, where=st.sampled_from(PAGED))
    @settings(max_examples=90, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    def any_cursor(key: object, where: tuple[str, dict[str, str]]) -> None:
        cursor = base64.urlsafe_b64encode(json.dumps(key).encode()).decode().rstrip("=")
        within_contract(api.reader.get(where[0], params={**where[1], "cursor": cursor}))

    @given(moment=TIMES, field=st.sampled_from(["since", "until"]))
    @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    def any_time(moment: datetime, field: str) -> None:
        within_contract(api.reader.get("/api/v1/events", params={field: moment.isoformat()}))

    any_cursor()
    any_time()
