"""Reading a `registry apply` file: bounded, plain YAML, every entry typed before it is built.

The file is someone's input, so reading it must be cheap and exact whatever it holds:

* at most `MAX_FILE_BYTES` are read, and a larger file is refused before any parsing;
* UTF-8 text only;
* plain YAML only: anchors and aliases (the billion-laughs expansion) and explicit tags (`!!binary`,
  `!!python/...`) are refused at the first one the parser meets, and nesting is capped at `MAX_DEPTH`;
* each entry is checked against `RegistryEntry`, a strict schema: `emit_existing: "false"` is a string,
  not a boolean, and is refused rather than read as true; unknown keys are refused by name;
* then `forms.build_spec`, the same validation `registry add` uses.

A file may also hold a `policies:` list (`watcher.policies.applying` reads its entries, as strictly); either
list may be left out, not both.

Every failure is one `InputError` line naming the file and, where there is one, the entry.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from watcher.errors import InputError
from watcher.registrations.forms import build_spec, expand_env
from watcher.registrations.spec import RegistrySpec
from watcher.schema import DEFAULT_WORKSPACE

MAX_FILE_BYTES = 1024 * 1024
MAX_DEPTH = 16  # the file needs 5: document, `registries`, an entry, `repositories`, a glob
TOP_LEVEL = ("registries", "policies")


class RegistryEntry(BaseModel):
    """One entry of the file, typed: what `registry add` takes, as YAML values."""

    model_config = ConfigDict(extra="forbid", strict=True)

    name: str
    provider: str
    url: str | None = None
    interval: str | int | None = None
    poll_timeout: str | int | None = None
    emit_existing: bool | None = None
    repositories: list[str] | str | None = None
    include_tags: str | None = None
    exclude_tags: str | None = None
    max_concurrency: int | None = None
    rate_limit: float | None = None
    namespace: str | None = None
    region: str | None = None
    project_id: str | None = None
    username: str | None = None
    password: str | None = None
    access_key: str | None = None
    secret_key: str | None = None
    tenant_id: str | None = None
    client_id: str | None = None
    client_secret: str | None = None
    json_key: str | None = None


#: what each key takes, in the words of the one-line error
EXPECTED = {
    "interval": "a duration such as 30s, 5m, 1h or 1d",
    "poll_timeout": "a duration such as 30s, 5m, 1h or 1d",
    "emit_existing": "true or false (unquoted)",
    "repositories": "a repository glob or a list of them",
    "max_concurrency": "a whole number",
    "rate_limit": "a number",
}


class PlainYamlLoader(yaml.SafeLoader):
    """YAML without anchors, aliases, explicit tags or deep nesting; a key may appear once per mapping."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.peek_event()
        where = f"line {event.start_mark.line + 1}"
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
            raise InputError(f"{where}: YAML anchors and aliases (&, *) are not allowed: write each value out")
        if getattr(event, "tag", None) is not None:
            raise InputError(f"{where}: YAML tags such as {event.tag!r} are not allowed: write plain values")
        self._depth += 1
        if self._depth > MAX_DEPTH:
            raise InputError(f"{where}: nested more than {MAX_DEPTH} levels deep")
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if not isinstance(key, str):
                raise InputError(f"line {key_node.start_mark.line + 1}: keys must be plain names, not {kind(key)}")
            if key in seen:
                raise InputError(f"line {key_node.start_mark.line + 1}: {key!r} appears twice in one mapping")
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def load_specs(path: Path, *, workspace: str = DEFAULT_WORKSPACE) -> list[RegistrySpec]:
    """Every entry of the file as a validated RegistrySpec of `workspace`, or one InputError: all or nothing."""
    try:
        return specs_of(read_document(path), path, workspace=workspace)
    except InputError as exc:
        message = str(exc)
        raise InputError(message if message.startswith(f"{path}: ") else f"{path}: {message}") from None


def read_document(path: Path) -> Any:
    """The file's one YAML document, read within the bounds above."""
    try:
        with path.open("rb") as file:
            data = file.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise InputError(f"cannot read: {exc.strerror}") from None
    if len(data) > MAX_FILE_BYTES:
        raise InputError(f"larger than {MAX_FILE_BYTES // 1024 // 1024} MB: split it into several files")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputError(f"not UTF-8 text (byte {exc.start}): save it as UTF-8") from None
    loader = PlainYamlLoader(text)
    try:
        return loader.get_single_data()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f" (line {mark.line + 1})" if mark else ""
        raise InputError(f"not valid YAML{where}: {exc.problem or exc.context}") from None
    except yaml.YAMLError as exc:
        raise InputError(f"not valid YAML: {str(exc).splitlines()[0]}") from None
    except (ValueError, OverflowError) as exc:  # e.g. a 5,000-digit integer, a 13th month
        raise InputError(f"a value cannot be read: {str(exc).splitlines()[0][:120]}") from None
    finally:
        loader.dispose()


def specs_of(document: Any, path: Path, *, workspace: str = DEFAULT_WORKSPACE) -> list[RegistrySpec]:
    """The file's registries (none when it holds only `policies:`, which `watcher.policies.applying` reads)."""
    entries = entries_of(document, "registries")
    specs = []
    for number, entry in enumerate(entries, 1):
        name = entry.get("name")
        named = isinstance(name, str) and len(name) <= 63
        where = f"{path}: registry #{number}" + (f" ({name})" if named else "")
        try:
            specs.append(build_spec(typed_entry(entry), source="file", workspace=workspace))
        except InputError as exc:
            message = str(exc).removeprefix(f"registry {name!r}: ") if named else str(exc)
            raise InputError(f"{where}: {message}") from None
    names = [s.name for s in specs]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise InputError(f"registry {duplicates[0]!r} appears twice")
    return specs


def entries_of(document: Any, key: str) -> list[dict[str, Any]]:
    """The entries of the top-level list `key` (`registries` or `policies`; either may be left out, not
    both), once the document is known to hold nothing else."""
    if not isinstance(document, dict) or not set(document) & set(TOP_LEVEL):
        raise InputError(
            "expected a top-level `registries:` list of mappings, a `policies:` list, or both "
            "(see config/registries.example.yaml)"
        )
    extra = sorted(set(document) - set(TOP_LEVEL), key=str)
    if extra:
        raise InputError(f"unknown top-level key {extra[0]!r}: the file holds only `registries:` and `policies:`")
    entries = document.get(key, [])
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise InputError(f"expected a top-level `{key}:` list of mappings (see config/registries.example.yaml)")
    return entries


def typed_entry(entry: dict[str, Any], *, expand: bool = True) -> dict[str, Any]:
    """The entry checked against RegistryEntry, with `${VAR}` expanded from the environment when `expand`
    (a file of the operator's; never for a remote request); keys may use '-' or '_'."""
    values = {str(k).replace("-", "_"): expand_env(v) if expand else v for k, v in entry.items()}
    if len(values) < len(entry):
        raise InputError("a setting is given twice (once with '-' and once with '_')")
    try:
        checked = RegistryEntry.model_validate(values)
    except ValidationError as exc:
        raise InputError(schema_error(exc)) from None
    return checked.model_dump(exclude_none=True)


def schema_error(exc: ValidationError, expected: dict[str, str] = EXPECTED) -> str:
    """The most specific of pydantic's errors, as one line that never echoes a value (it may be a secret);
    `expected` says in words what each key takes (a string, unless it names the key)."""
    error = max(exc.errors(), key=lambda e: len(e["loc"]))
    key = str(error["loc"][0]) if error["loc"] else "?"
    if error["type"] == "extra_forbidden":
        return f"unknown setting {key!r}"
    if error["type"] == "missing":
        return f"{key} is missing"
    item = next((f" (item {i + 1})" for i in error["loc"][1:] if isinstance(i, int)), "")
    hint = "; write it without quotes" if key == "emit_existing" and isinstance(error["input"], str) else ""
    return f"{key} must be {expected.get(key, 'a string')}, not {kind(error['input'])}{item}{hint}"


def kind(value: Any) -> str:
    """A YAML value's type, in YAML's words."""
    if value is None:
        return "null"
    for python_type, word in ((bool, "a boolean"), (int, "an integer"), (float, "a number"), (str, "a string")):
        if isinstance(value, python_type):
            return word
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__
