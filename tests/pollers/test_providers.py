"""The provider table knows, without importing a provider, what its class says."""

from __future__ import annotations

import pytest

from watcher.errors import InputError
from watcher.pollers import PROVIDER_NAMES, SECRET_FIELDS, provider_class, secret_fields


@pytest.mark.parametrize("name", PROVIDER_NAMES)
def test_secret_fields_agree_with_the_provider_class(name: str) -> None:
    cls = provider_class(name)
    assert secret_fields(name) == cls.secret_fields
    assert secret_fields(name) <= set(cls.credential_fields)


def test_every_provider_is_in_the_table() -> None:
    assert set(SECRET_FIELDS) == set(PROVIDER_NAMES)
    with pytest.raises(InputError, match="unknown provider 'quay'"):
        secret_fields("quay")
