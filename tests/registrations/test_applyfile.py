"""`registry apply -f FILE` reads a bounded, plain, typed file: every bad file is one line, nothing saved."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from sqlalchemy import func, select

from tests.conftest import Watcher
from watcher.models import Registry
from watcher.registrations.applyfile import MAX_FILE_BYTES, RegistryEntry
from watcher.registrations.forms import KNOWN_KEYS

ENTRY = "registries:\n  - name: r1\n    provider: oci\n    url: https://registry.example.com\n"

BILLION_LAUGHS = """
a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]
registries: *i
"""


def apply(watcher: Watcher, tmp_path: Path, content: str | bytes):
    path = tmp_path / "registries.yaml"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    return watcher.cli("registry", "apply", "--no-verify", "-f", str(path))


def refused(watcher: Watcher, tmp_path: Path, content: str | bytes, *needles: str) -> str:
    result = apply(watcher, tmp_path, content)
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"watcher: {tmp_path / 'registries.yaml'}: "), result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    with watcher.engine.connect() as conn:
        assert conn.scalar(select(func.count(Registry.id))) == 0
    return lines[0]


def test_a_plain_file_is_applied(watcher: Watcher, tmp_path: Path) -> None:
    result = apply(watcher, tmp_path, ENTRY + "    emit_existing: false\n    max_concurrency: 4\n    rate_limit: 2\n")
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == "created registry 'r1'"


def test_the_schema_knows_every_setting_build_spec_knows() -> None:
    assert set(RegistryEntry.model_fields) == set(KNOWN_KEYS)


def test_a_billion_laughs_is_refused_at_once(watcher: Watcher, tmp_path: Path) -> None:
    started = time.monotonic()
    refused(watcher, tmp_path, BILLION_LAUGHS, "line 2", "anchors and aliases", "are not allowed")
    assert time.monotonic() - started < 10  # generous: it stops at the first anchor


@pytest.mark.parametrize(
    ("tail", "needles"),
    [
        ("    password: !!binary aGVsbG8=\n", ["line 5", "tags such as 'tag:yaml.org,2002:binary'"]),
        ("    username: !!python/object/apply:os.system ['true']\n", ["tags such as", "python"]),
        ("    username: !custom x\n", ["tags such as '!custom'"]),
        ("    username: !!str x\n", ["tags such as"]),
        ("    username: &u alice\n    password: *u\n", ["anchors and aliases"]),
    ],
)
def test_tags_anchors_and_aliases_are_refused(watcher: Watcher, tmp_path: Path, tail: str, needles: list[str]) -> None:
    refused(watcher, tmp_path, ENTRY + tail, *needles)


@pytest.mark.parametrize(
    ("tail", "needles"),
    [
        ('    emit_existing: "false"\n', ["registry #1 (r1)", "emit_existing must be true or false", "a string"]),
        ("    emit_existing: 1\n", ["emit_existing must be true or false", "not an integer"]),
        ('    max_concurrency: "8"\n', ["max_concurrency must be a whole number, not a string"]),
        ("    max_concurrency: 8.5\n", ["max_concurrency must be a whole number, not a number"]),
        ("    max_concurrency: true\n", ["max_concurrency must be a whole number, not a boolean"]),
        ("    rate_limit: .nan\n", ["--rate-limit must be a number from 0.1 to 10,000"]),
        ("    rate_limit: .inf\n", ["--rate-limit"]),
        ("    rate_limit: 1.0e+400\n", ["--rate-limit"]),
        ("    max_concurrency: " + "9" * 5000 + "\n", ["a value cannot be read"]),
        ("    interval: 99999d\n", ["--interval", "out of range"]),
        ("    interval: 1.5\n", ["interval must be a duration", "not a number"]),
        ("    repositories: {a: b}\n", ["repositories must be a repository glob or a list of them, not a mapping"]),
        ("    repositories: [team/*, 7]\n", ["repositories must be", "not an integer (item 2)"]),
        ("    username: [a]\n", ["username must be a string, not a list"]),
        ("    namespace: 12\n", ["namespace must be a string, not an integer"]),
        ("    colour: blue\n", ["unknown setting 'colour'"]),
        ("    include-tags: a\n    include_tags: b\n", ["given twice"]),
        ("    url: https://other.example.com\n", ["'url' appears twice"]),
        ("    1: x\n", ["keys must be plain names, not an integer"]),
        ("    url2: http://u:pw@h\n", ["unknown setting 'url2'"]),
    ],
)
def test_entries_are_strictly_typed(watcher: Watcher, tmp_path: Path, tail: str, needles: list[str]) -> None:
    refused(watcher, tmp_path, ENTRY + tail, *needles)


def test_a_url_with_credentials_is_refused_without_echoing_them(watcher: Watcher, tmp_path: Path) -> None:
    line = refused(watcher, tmp_path, ENTRY.replace("https://", "https://bob:pa55word@"), "--username")
    assert "pa55word" not in line


def test_secrets_are_never_echoed_in_type_errors(watcher: Watcher, tmp_path: Path) -> None:
    line = refused(watcher, tmp_path, ENTRY + "    username: 1234567890123\n", "username must be a string")
    assert "1234567890123" not in line


@pytest.mark.parametrize(
    ("content", "needles"),
    [
        (b"registries:\n  - name: \xff\xfe\n", ["not UTF-8 text (byte 22)"]),
        ("[" * 100_000 + "]" * 100_000, ["nested more than 16 levels deep"]),
        ("registries:\n" + "  " * 0 + "- " * 5000 + "x\n", ["nested more than 16 levels deep"]),
        ("registries: [\n", ["not valid YAML (line 2)"]),
        ("registries: []\n---\nregistries: []\n", ["not valid YAML"]),
        ("registries: []\nextra: 1\n", ["unknown top-level key 'extra'"]),
        ("registries: {r1: {}}\n", ["top-level `registries:` list of mappings"]),
        ("registries: ['r1']\n", ["top-level `registries:` list of mappings"]),
        ("", ["top-level `registries:`"]),
        ("registries:\n  - name: r1\n    provider: oci\n    when: 2001-13-45\n", ["a value cannot be read"]),
        ("registries:\n  - {provider: oci}\n", ["registry #1: name is missing"]),
        ("registries:\n  - name: R1\n    provider: oci\n", ["registry #1 (R1): registry name 'R1' is not valid"]),
    ],
)
def test_malformed_files_are_one_line(
    watcher: Watcher, tmp_path: Path, content: str | bytes, needles: list[str]
) -> None:
    refused(watcher, tmp_path, content, *needles)


def test_a_file_over_one_megabyte_is_refused_before_parsing(watcher: Watcher, tmp_path: Path) -> None:
    too_big = ENTRY + "# " + "x" * MAX_FILE_BYTES + "\n"
    refused(watcher, tmp_path, too_big, "larger than 1 MB")
    just_fits = ENTRY + "# " + "x" * (MAX_FILE_BYTES - len(ENTRY) - 3) + "\n"
    assert apply(watcher, tmp_path, just_fits).exit_code == 0


def test_one_bad_entry_saves_none(watcher: Watcher, tmp_path: Path) -> None:
    second = "  - name: r2\n    provider: oci\n    url: https://h\n    emit_existing: 'yes'\n"
    refused(watcher, tmp_path, ENTRY + second, "registry #2 (r2)", "emit_existing")
