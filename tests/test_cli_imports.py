"""The quick commands stay quick: what they import is checked in a fresh process, against a denylist of
the heavy libraries only other commands need (their wall time is measured by benchmarks/command_speed.py,
never asserted here)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.installation import seed

#: never imported by a command that only reads the state (a name and everything under it); pydantic(-settings)
#: only where the environment is not plain (a `.env` file, an invalid value: tests/test_settings.py)
HEAVY = (
    "alembic",
    "anyio",
    "azure",
    "boto3",
    "botocore",
    "celery",
    "dotenv",
    "fastapi",
    "google",
    "httpcore",
    "httpx",
    "jinja2",
    "kombu",
    "prometheus_client",
    "pydantic",
    "pydantic_core",
    "pydantic_settings",
    "re2",
    "redis",
    "requests",
    "starlette",
    "uvicorn",
    "yaml",
)
#: besides, only where a secret is read (`registry list/show` decrypt credentials to show the non-secret ones)
SECRETS = ("cryptography",)
#: besides, `--help` opens no database
DATABASE = ("sqlalchemy", "sqlite3", "psycopg")

PROBE = """
import json, sys
from watcher.cli import main
try:
    main(sys.argv[2:])
except SystemExit as exc:
    code = exc.code
with open(sys.argv[1], "w") as out:
    json.dump({"code": code, "modules": sorted(sys.modules)}, out)
"""


ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def installation(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """The installation, seeded and probed by this checkout's code (not whatever the venv has installed)."""
    home = tmp_path_factory.mktemp("quick")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PYTHONPATH", str(ROOT))
        return home, seed(home)


def imported(installation: tuple[Path, dict[str, str]], *args: str) -> set[str]:
    home, env = installation
    report = home / "modules.json"
    done = subprocess.run(
        [sys.executable, "-c", PROBE, str(report), *args], cwd=home, env=env, capture_output=True, text=True, timeout=60
    )
    result = json.loads(report.read_text())
    assert result["code"] in (0, None), (done.stdout, done.stderr)
    assert done.stdout.strip(), "the command printed nothing"
    return set(result["modules"])


def heavy(modules: set[str], denied: tuple[str, ...]) -> list[str]:
    return sorted(m for m in modules if m.split(".")[0] in denied)


@pytest.mark.parametrize(
    ("args", "denied", "reader"),
    [
        (["--help"], HEAVY + SECRETS + DATABASE, None),
        (["registry", "--help"], HEAVY + SECRETS + DATABASE, None),
        (["registry", "add", "--help"], HEAVY + SECRETS + DATABASE, None),
        (["registry", "list"], HEAVY, "watcher.readmodel"),
        (["registry", "list", "--json"], HEAVY, "watcher.readmodel"),
        (["registry", "show", "aws"], HEAVY, "watcher.readmodel"),
        (["registry", "show", "azure", "--json"], HEAVY, "watcher.readmodel"),
        (["status"], HEAVY + SECRETS, "watcher.readmodel"),
        (["status", "--json"], HEAVY + SECRETS, "watcher.readmodel"),
        (["token", "list"], HEAVY + SECRETS, "watcher.models"),
    ],
)
def test_quick_commands_import_nothing_heavy(
    installation: tuple[Path, dict[str, str]], args: list[str], denied: tuple[str, ...], reader: str | None
) -> None:
    modules = imported(installation, *args)
    assert heavy(modules, denied) == []
    if reader is not None:
        assert reader in modules  # it did read the state


def test_the_probe_sees_heavy_imports(installation: tuple[Path, dict[str, str]]) -> None:
    """The check above can fail: a command that does need the SDK (validating an ECR entry) is caught."""
    home, _ = installation
    spec = home / "registries.yaml"
    spec.write_text(
        "registries:\n"
        "  - name: applied\n"
        "    provider: ecr\n"
        "    url: https://123456789012.dkr.ecr.eu-west-1.amazonaws.com\n"
    )
    modules = imported(installation, "registry", "apply", "-f", str(spec), "--no-verify")
    assert {"boto3", "yaml"} <= set(heavy(modules, HEAVY))


def test_the_probe_sees_pydantic_where_the_settings_need_it(installation: tuple[Path, dict[str, str]]) -> None:
    """A `.env` file is pydantic-settings' to read: the same quick command then imports it (and the check
    of the quick commands above would have caught a command that always did)."""
    home, _ = installation
    (home / ".env").write_text("WATCHER_MAX_PAGES=5\n")
    try:
        modules = imported(installation, "status")
    finally:
        (home / ".env").unlink()
    assert {"pydantic", "pydantic_settings"} <= set(heavy(modules, HEAVY))
