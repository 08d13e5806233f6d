"""Registering: `registry add` never overwrites a registry of the same name, even when two race."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import pytest
from sqlalchemy import func, select

from tests.conftest import Watcher
from tests.support.fixtures import PASSWORD, RegistryEnv
from watcher.db import get_engine, session_scope
from watcher.errors import InputError
from watcher.models import Registry
from watcher.registrations import store as registries
from watcher.registrations.spec import RegistrySpec

ALREADY = "registry 'dup' already exists; use `watcher registry apply` to change it"


def urls_of_dup() -> list[str]:
    with session_scope() as session:
        return list(session.scalars(select(Registry.url).where(Registry.name == "dup")))


@pytest.mark.parametrize("db", ["sqlite", "postgresql"], indirect=True)
def test_add_of_an_existing_name_fails_and_apply_still_updates(watcher: Watcher, basic_registry: RegistryEnv) -> None:
    assert watcher.add_registry("dup", basic_registry.url, "--no-verify").exit_code == 0
    again = watcher.add_registry("dup", "https://elsewhere.example.com", "--no-verify")
    assert again.exit_code == 1 and again.stderr == f"watcher: {ALREADY}\n"
    assert urls_of_dup() == [basic_registry.url]


@pytest.mark.parametrize("db", ["sqlite", "postgresql"], indirect=True)
def test_two_racing_adds_of_one_name(watcher: Watcher, basic_registry: RegistryEnv) -> None:
    get_engine()  # the schema exists: the race is about the registry, not the migration
    command = [sys.executable, "-m", "watcher", "registry", "add", "dup", "--provider", "oci"]
    command += ["--url", basic_registry.url, "--username", "alice", "--password", PASSWORD]
    procs = [
        subprocess.Popen(command, env=watcher.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outcomes = sorted((proc.wait(120), *proc.communicate()) for proc in procs)
    (won, won_out, won_err), (lost, lost_out, lost_err) = outcomes
    assert (won, lost) == (0, 1), outcomes
    assert won_out.startswith("added registry 'dup'") and not won_err
    assert lost_err == f"watcher: {ALREADY}\n" and not lost_out
    assert len(urls_of_dup()) == 1


@pytest.mark.parametrize("db", ["sqlite", "postgresql"], indirect=True)
def test_the_unique_name_decides_when_both_pass_the_check(watcher: Watcher) -> None:
    """The second INSERT waits for the first transaction and then fails with the same one line."""
    engine = get_engine()
    first_inserted = threading.Event()
    errors: list[str] = []

    def second() -> None:
        first_inserted.wait(30)
        try:
            with session_scope(engine) as session:
                registries.create(session, RegistrySpec("dup", "oci", "https://second.example.com"))
        except InputError as exc:
            errors.append(str(exc))

    racer = threading.Thread(target=second)
    racer.start()
    with session_scope(engine) as session:
        registries.create(session, RegistrySpec("dup", "oci", "https://first.example.com"))
        first_inserted.set()
        time.sleep(0.5)  # the second INSERT is now waiting on this uncommitted one
    racer.join(60)
    assert errors == [ALREADY]
    assert urls_of_dup() == ["https://first.example.com"]
    with session_scope(engine) as session:
        assert session.scalar(select(func.count(Registry.id))) == 1
