"""The console's form actions against the real registry: each failure names the field it concerns, and
nothing is saved unless the registry answered."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select

from tests.conftest import Watcher
from tests.support.fixtures import PASSWORD, USERNAME, RegistryEnv
from tests.support.registry import free_port
from watcher.db import session_scope
from watcher.errors import AuthError, ConflictError, InputError, RegistryError, ScopeError, UnreachableError
from watcher.models import Registry
from watcher.read.tables import ago
from watcher.registrations.registration import field_at_fault
from watcher.registrations.spec import RegistrySpec
from watcher.schema import DEFAULT_WORKSPACE
from watcher.web.console import actions


def saved() -> list[str]:
    with session_scope() as session:
        return list(session.scalars(select(Registry.name)))


def oci(url: str, **extra: Any) -> dict[str, Any]:
    return {"name": "r1", "provider": "oci", "url": url, "interval": "5m", **extra}


def test_save_tests_first_and_names_the_field_at_fault(watcher: Watcher, basic_registry: RegistryEnv) -> None:
    with pytest.raises(AuthError) as refused:
        actions.save(oci(basic_registry.url, username=USERNAME, password="wrong"), workspace=DEFAULT_WORKSPACE)
    assert refused.value.field == "password" and "\n" not in str(refused.value) and "wrong" not in str(refused.value)
    with pytest.raises(UnreachableError) as unreachable:
        actions.test(oci(f"http://127.0.0.1:{free_port()}"), workspace=DEFAULT_WORKSPACE)
    assert unreachable.value.field == "url"
    assert saved() == []

    actions.test(oci(basic_registry.url, username=USERNAME, password=PASSWORD), workspace=DEFAULT_WORKSPACE)
    assert saved() == []
    actions.save(oci(basic_registry.url, username=USERNAME, password=PASSWORD), workspace=DEFAULT_WORKSPACE)
    assert saved() == ["r1"]
    with pytest.raises(ConflictError) as exists:
        actions.save(oci(basic_registry.url, username=USERNAME, password=PASSWORD), workspace=DEFAULT_WORKSPACE)
    assert exists.value.field == "name"


@pytest.mark.parametrize(
    ("values", "field"),
    [
        ({"name": "bad name!", "provider": "oci", "url": "https://r.example"}, "name"),
        ({"name": "r1", "provider": "oci", "url": "ftp://r.example"}, "url"),
        ({"name": "r1", "provider": "oci", "url": "https://r.example", "interval": "soon"}, "interval"),
        ({"name": "r1", "provider": "oci", "url": "https://r.example", "username": "u"}, "password"),
        ({"name": "r1", "provider": "gcr", "url": "https://gcr.io", "json_key": "{}"}, "project_id"),
        (
            {
                "name": "r1",
                "provider": "ecr",
                "url": "https://123456789012.dkr.ecr.eu-west-1.amazonaws.com",
                "region": "x",
            },
            "region",
        ),
    ],
)
def test_validation_failures_name_their_field(watcher: Watcher, values: dict[str, Any], field: str) -> None:
    with pytest.raises(InputError) as invalid:
        actions.validate(values)
    assert invalid.value.field == field, str(invalid.value)


def test_a_registry_refusal_points_at_the_providers_field() -> None:
    def field(exc: RegistryError, provider: str, **credentials: str) -> str | None:
        return field_at_fault(exc, RegistrySpec("r1", provider, "https://r.example", credentials=credentials))

    assert field(AuthError("no"), "ecr") == "secret_key"
    assert field(AuthError("no"), "gcr") == "json_key"
    assert field(AuthError("no"), "acr", username="u") == "password"
    assert field(AuthError("no"), "acr", tenant_id="t") == "client_secret"
    assert field(ScopeError("no"), "dockerhub") == "namespace"
    assert field(ScopeError("no"), "gcr") == "project_id"
    assert field(ScopeError("no"), "oci") == "repositories"


def test_times_read_as_a_person_says_them() -> None:
    now = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    assert ago(None, now) == "never"
    assert ago(now - timedelta(seconds=2), now) == "just now"
    assert ago(now - timedelta(minutes=3, seconds=20), now) == "3 min ago"
    assert ago(now + timedelta(hours=2), now) == "in 2 h"
    assert ago((now - timedelta(days=3)).replace(tzinfo=None), now) == "3 d ago"
