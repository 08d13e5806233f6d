"""Bearer-token auth against the real registry: one token per scope per poll, fetched before it is needed."""

from __future__ import annotations

import json
from collections import Counter

from tests.conftest import Watcher
from tests.support.fixtures import RegistryEnv
from watcher.registry.auth import Challenge, parse_challenge


def test_tokens_are_fetched_once_per_scope_not_per_request(
    watcher: Watcher, token_registry: RegistryEnv, unique_repo: str
) -> None:
    for repo in ("a", "b", "c"):
        for tag in ("v1", "v2", "v3", "v4"):
            token_registry.client.push_image(f"{unique_repo}/{repo}", tag)
    added = watcher.add_registry(
        "r1", token_registry.url, "--username", "alice", "--password", "s3cret-pass", "--repository", f"{unique_repo}/*"
    )
    assert added.exit_code == 0, added.output
    assert token_registry.token_server is not None
    token_registry.token_server.reset()

    result = watcher.cli("poll", "r1", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["tags"] == 12
    asked = Counter(scope for request in token_registry.token_server.requests for scope in request.scopes)
    assert asked == {
        "registry:catalog:*": 1,
        **{f"repository:{unique_repo}/{repo}:pull": 1 for repo in ("a", "b", "c")},
    }, asked  # 12 HEADs, 3 tag lists, yet one token per scope
    assert all(
        request.username == "alice" and request.status == 200 for request in token_registry.token_server.requests
    )


def test_challenges_are_parsed_with_quoted_commas() -> None:
    header = (
        'Bearer realm="https://auth.example.com/token",service="registry.example.com",scope="repository:a/b:pull,push"'
    )
    assert parse_challenge(header) == Challenge(
        "bearer",
        {
            "realm": "https://auth.example.com/token",
            "service": "registry.example.com",
            "scope": "repository:a/b:pull,push",
        },
    )
    assert parse_challenge('Basic realm="Registry Realm"') == Challenge("basic", {"realm": "Registry Realm"})
    assert parse_challenge("") is None
