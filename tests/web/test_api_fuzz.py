"""Property-based fuzzing of the API from its own OpenAPI document: whatever a client sends, no 5xx, and
every error in the contract's one shape."""

from __future__ import annotations

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
        @settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), database=None)
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
