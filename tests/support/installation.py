"""A throw-away watcher installation for commands run in fresh processes: a data dir (SQLite, embedded
Redis, a generated key) with four registries of three providers (`hub`, `harbor`, `aws`, `azure`), two
tags stored for `hub` (and their two events), a policy `app` selecting one of them, and a reader token.
Used by tests/cli/test_cli_imports.py and benchmarks/command_speed.py."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

SEED = """
from click.testing import CliRunner
from watcher.cli.main import main
for args in [
    ["registry", "add", "hub", "--provider", "oci", "--url", "https://registry.example.com", "--no-verify"],
    ["registry", "add", "harbor", "--provider", "oci", "--url", "https://harbor.example.com", "--no-verify"],
    ["registry", "add", "aws", "--provider", "ecr", "--url", "https://123456789012.dkr.ecr.eu-west-1.amazonaws.com",
     "--access-key", "AKIAEXAMPLE", "--secret-key", "secret-example", "--no-verify"],
    ["registry", "add", "azure", "--provider", "acr", "--url", "https://example.azurecr.io",
     "--username", "robot", "--password", "secret-example", "--no-verify"],
    ["token", "create", "ci", "--role", "reader"],
]:
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, (args, result.output)

# two tags stored for `hub`, as a poll saves them (the events they made are in the history)
from watcher.registrations import store as registries
from watcher.db import get_engine, session_scope
from watcher.diff import TagState
from watcher.polling.saving import Listed, Target, save
from watcher.registrations.scope import Scope
with session_scope() as session:
    hub = registries.find(session, "hub")
    target = Target(hub.id, "hub", hub.url, Scope.from_options({}), emit_new=True)
tags = {tag: TagState("sha256:" + digit * 64) for tag, digit in (("v1", "1"), ("latest", "2"))}
save(get_engine(), target, [Listed("team/app", tags, fingerprint="seeded", stored=None)])

# a policy on them, with its first selection (`v1`) and its event
from watcher.policies.store import PolicySpec, save as save_policy
with session_scope() as session:
    save_policy(session, PolicySpec.build("app", "hub", "team/app", alphabetical="asc"), workspace_id=1)
"""


def environment(data_dir: Path) -> dict[str, str]:
    """This process's environment without any WATCHER_* setting, but WATCHER_DATA_DIR."""
    return {k: v for k, v in os.environ.items() if not k.startswith("WATCHER_")} | {"WATCHER_DATA_DIR": str(data_dir)}


def seed(home: Path) -> dict[str, str]:
    """Set up the installation in `home/data`; the environment that selects it (run commands in `home`,
    so no stray `.env` is read)."""
    env = environment(home / "data")
    done = subprocess.run([sys.executable, "-c", SEED], cwd=home, env=env, capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise RuntimeError(f"seeding failed: {done.stderr.strip()}")
    return env
