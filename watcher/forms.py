"""What the user typed — CLI options or a YAML entry — turned into a validated RegistrySpec.

Both front doors share this, so `registry add` and `registry apply` accept and reject exactly the same.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from typing import Any

from watcher.errors import InputError
from watcher.pollers import provider_class
from watcher.scope import Scope
from watcher.spec import RegistrySpec, check_name, check_url, parse_interval

CREDENTIAL_KEYS = (
    "username",
    "password",
    "access_key",
    "secret_key",
    "tenant_id",
    "client_id",
    "client_secret",
    "json_key",
)
OPTION_KEYS = ("namespace", "region", "project_id", "max_concurrency", "rate_limit")
SCOPE_KEYS = ("repositories", "include_tags", "exclude_tags")
KNOWN_KEYS = frozenset(
    {"name", "provider", "url", "interval", "emit_existing", *CREDENTIAL_KEYS, *OPTION_KEYS, *SCOPE_KEYS}
)
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def read_secret(value: str, option: str, *, allow_stdin: bool = True) -> str:
    """A secret option's value: literal, `@PATH` (the file's contents), or `-` (standard input)."""
    if value == "-" and allow_stdin:
        return sys.stdin.read().strip()
    if value.startswith("@"):
        path = Path(value[1:]).expanduser()
        try:
            return path.read_text().strip()
        except OSError as exc:
            raise InputError(f"--{option}: cannot read {path}: {exc.strerror}") from None
    return value


def expand_env(value: Any, where: str) -> Any:
    """`${VAR}` in YAML values, read from the environment; a missing variable is an error, not ''."""
    if isinstance(value, str):

        def lookup(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in os.environ:
                raise InputError(f"{where}: environment variable {name} is not set")
            return os.environ[name]

        return _ENV_REF.sub(lookup, value)
    if isinstance(value, list):
        return [expand_env(v, where) for v in value]
    return value


def build_spec(values: dict[str, Any], *, stdin_allowed: bool = True) -> RegistrySpec:
    """Validate one registry's values (keys as CLI long options, '-' or '_') into a RegistrySpec."""
    values = {str(k).replace("-", "_"): v for k, v in values.items() if v not in (None, "", (), [])}
    name = check_name(str(values.get("name", "")))
    unknown = sorted(set(values) - KNOWN_KEYS)
    if unknown:
        raise InputError(f"registry {name!r}: unknown setting {unknown[0]!r}")
    if "provider" not in values:
        raise InputError(f"registry {name!r}: --provider is missing")
    cls = provider_class(str(values["provider"]))
    url = check_url(str(values.get("url") or cls.default_url), name)
    credentials = {
        key: read_secret(str(values[key]), key.replace("_", "-"), allow_stdin=stdin_allowed)
        for key in CREDENTIAL_KEYS
        if key in values
    }
    repositories = values.get("repositories", [])
    if isinstance(repositories, str):
        repositories = [repositories]
    options: dict[str, Any] = {"repositories": [str(r).strip("/") for r in repositories]}
    for key in ("include_tags", "exclude_tags", "namespace", "region", "project_id"):
        if key in values:
            options[key] = str(values[key])
    for key, kind in (("max_concurrency", int), ("rate_limit", float)):
        if key in values:
            options[key] = _positive(values[key], kind, key, name)
    Scope.from_options(options)  # rejects bad regexes now, not at the first poll
    spec = RegistrySpec(
        name=name,
        provider=cls.provider,
        url=url,
        credentials=credentials,
        options=options,
        interval_seconds=parse_interval(str(values.get("interval", "5m"))),
        emit_existing=bool(values.get("emit_existing", False)),
    )
    cls.validate(spec)
    return spec


def _positive(value: Any, kind: type[int] | type[float], key: str, name: str) -> int | float:
    try:
        number = kind(value)
    except (TypeError, ValueError):
        number = 0
    if number <= 0:
        raise InputError(f"registry {name!r}: --{key.replace('_', '-')} must be a positive number, not {value!r}")
    return number
