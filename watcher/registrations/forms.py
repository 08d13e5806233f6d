"""What the user typed — CLI options or a YAML entry — turned into a validated RegistrySpec.

Both front doors share this, so `registry add` and `registry apply` accept and reject exactly the same.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from typing import Any, Literal

from watcher.errors import InputError
from watcher.pollers import provider_class
from watcher.registrations.scope import Scope
from watcher.registrations.spec import (
    CONCURRENCY_RANGE,
    DEFAULT_INTERVAL,
    DEFAULT_POLL_TIMEOUT_SECONDS,
    RATE_LIMIT_RANGE,
    RegistrySpec,
    bounded_number,
    check_name,
    check_url,
    parse_interval,
    parse_poll_timeout,
)
from watcher.schema import DEFAULT_WORKSPACE

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
OPTION_KEYS = ("namespace", "region", "project_id", "max_concurrency", "rate_limit", "poll_timeout")
SCOPE_KEYS = ("repositories", "include_tags", "exclude_tags")
KNOWN_KEYS = frozenset(
    {"name", "provider", "url", "interval", "emit_existing", *CREDENTIAL_KEYS, *OPTION_KEYS, *SCOPE_KEYS}
)
MAX_TEXT_LENGTH = 1024  # a provider, namespace, region or project
MAX_PATTERN_LENGTH = 1024  # a tag regex
MAX_SECRET_LENGTH = 64 * 1024  # a credential (a service-account JSON key is a few KB)
MAX_REPOSITORY_LENGTH = 255
MAX_REPOSITORY_PATTERNS = 1000
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


#: where values come from, which decides what a secret's value may refer to: the command line may read a
#: file (`@PATH`) or standard input (`-`), a `registry apply` file may read a file, and a remote request
#: (the HTTP API, the console) only gives literal values — it must never make the watcher read its own files
Source = Literal["command", "file", "remote"]


def read_secret(value: str, option: str, *, source: Source = "command") -> str:
    """A secret option's value: literal, `@PATH` (the file's contents), or `-` (standard input).

    What is read is bounded and must be UTF-8 text: `--password @/dev/zero` is one line, not a hang.
    """
    if source == "remote":
        return value
    if value == "-" and source == "command":
        stdin = getattr(sys.stdin, "buffer", None)
        data = stdin.read(MAX_SECRET_LENGTH + 1) if stdin else sys.stdin.read(MAX_SECRET_LENGTH + 1).encode()
        return _secret_text(data, option, "standard input")
    if value.startswith("@"):
        path = Path(value[1:]).expanduser()
        try:
            with path.open("rb") as file:
                data = file.read(MAX_SECRET_LENGTH + 1)
        except OSError as exc:
            raise InputError(f"--{option}: cannot read {path}: {exc.strerror}") from None
        return _secret_text(data, option, str(path))
    return value


def _secret_text(data: bytes, option: str, source: str) -> str:
    if len(data) > MAX_SECRET_LENGTH:
        raise InputError(f"--{option}: {source} holds more than {MAX_SECRET_LENGTH // 1024} KiB: is it the right file?")
    try:
        return data.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise InputError(f"--{option}: {source} is not UTF-8 text: is it the right file?") from None


def expand_env(value: Any) -> Any:
    """`${VAR}` in YAML values, read from the environment; a missing variable is an error, not ''."""
    if isinstance(value, str):

        def lookup(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in os.environ:
                raise InputError(f"environment variable {name} is not set")
            return os.environ[name]

        return _ENV_REF.sub(lookup, value)
    if isinstance(value, list):
        return [expand_env(v) for v in value]
    return value


def build_spec(
    values: dict[str, Any], *, source: Source = "command", workspace: str = DEFAULT_WORKSPACE
) -> RegistrySpec:
    """Validate one registry's values (keys as CLI long options, '-' or '_') into a RegistrySpec of
    `workspace`.

    The one place every bound is enforced: `registry add`, `registry apply` and (next) the HTTP API all
    come through here, so each accepts and refuses exactly the same values, with the same one line.
    """
    values = {str(k).replace("-", "_"): v for k, v in values.items() if v not in (None, "", (), [])}
    name = check_name(values.get("name", ""))
    unknown = sorted(set(values) - KNOWN_KEYS)
    if unknown:
        raise InputError(f"registry {name!r}: unknown setting {unknown[0]!r}")
    try:
        spec = _build(name, values, source)
    except InputError as exc:
        message = str(exc)
        prefixed = message if message.startswith("registry ") else f"registry {name!r}: {message}"
        raise InputError(prefixed, field=exc.field) from None
    spec.workspace = workspace
    return spec


def _build(name: str, values: dict[str, Any], source: Source) -> RegistrySpec:
    if "provider" not in values:
        raise InputError("--provider is missing")
    cls = provider_class(_text(values["provider"], "provider"))
    url = check_url(values.get("url") or cls.default_url, name)
    credentials = {
        key: read_secret(_text(values[key], key, limit=MAX_SECRET_LENGTH), key.replace("_", "-"), source=source)
        for key in CREDENTIAL_KEYS
        if key in values
    }
    options: dict[str, Any] = {"repositories": _repositories(values.get("repositories", []))}
    for key in ("include_tags", "exclude_tags", "namespace", "region", "project_id"):
        if key in values:
            options[key] = _text(values[key], key, limit=MAX_PATTERN_LENGTH)
    if "max_concurrency" in values:
        options["max_concurrency"] = bounded_number(
            values["max_concurrency"], "--max-concurrency", int, *CONCURRENCY_RANGE
        )
    if "rate_limit" in values:
        options["rate_limit"] = float(bounded_number(values["rate_limit"], "--rate-limit", float, *RATE_LIMIT_RANGE))
    options["poll_timeout"] = parse_poll_timeout(values.get("poll_timeout", DEFAULT_POLL_TIMEOUT_SECONDS))
    Scope.from_options(options)  # rejects bad regexes now, not at the first poll
    emit_existing = values.get("emit_existing", False)
    if not isinstance(emit_existing, bool):
        raise InputError("--emit-existing must be true or false")
    spec = RegistrySpec(
        name=name,
        provider=cls.provider,
        url=url,
        credentials=credentials,
        options=options,
        interval_seconds=parse_interval(values.get("interval", DEFAULT_INTERVAL)),
        emit_existing=emit_existing,
    )
    cls.validate(spec)
    return spec


def option_name(key: str) -> str:
    return "--" + key.replace("_", "-")


def _text(value: Any, key: str, *, limit: int = MAX_TEXT_LENGTH) -> str:
    """A string option as given: no other type is turned into one, no NUL (PostgreSQL refuses it)."""
    if not isinstance(value, str):
        raise InputError(f"{option_name(key)} must be a string")
    if len(value) > limit:
        raise InputError(f"{option_name(key)} is too long: at most {limit:,} characters")
    if "\x00" in value:
        raise InputError(f"{option_name(key)} must not contain a NUL character")
    return value


def _repositories(value: Any) -> list[str]:
    patterns = [value] if isinstance(value, str) else value
    if not isinstance(patterns, list | tuple) or len(patterns) > MAX_REPOSITORY_PATTERNS:
        raise InputError(f"--repository must be repository globs: at most {MAX_REPOSITORY_PATTERNS:,}")
    found = [_text(p, "repository", limit=MAX_REPOSITORY_LENGTH).strip("/") for p in patterns]
    if not all(found):
        raise InputError("--repository must not be empty: give a repository path or glob, e.g. team/*")
    return found


def values_of(spec: RegistrySpec) -> dict[str, Any]:
    """A registry's values as `build_spec` takes them (its inverse): what a partial update starts from."""
    values: dict[str, Any] = {
        "name": spec.name,
        "provider": spec.provider,
        "url": spec.url,
        "interval": spec.interval_seconds,
        "emit_existing": spec.emit_existing,
        **spec.credentials,
    }
    for key, value in spec.options.items():
        if value not in (None, "", [], ()):
            values[key] = list(value) if key == "repositories" else value
    return values
