"""`watcher secrets rotate`: credentials move to a new key while a worker keeps decrypting them."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import select, update

from tests.conftest import Watcher
from tests.support.processes import stop_process
from watcher.db import session_scope
from watcher.delivery.subscriptions import SubscriptionSpec, save
from watcher.models import Registry
from watcher.registrations import rotation, vault
from watcher.registrations import store as registries
from watcher.registrations.spec import RegistrySpec
from watcher.schema import subscriptions as SUBSCRIPTIONS
from watcher.settings import get_settings

PASSWORD = "rotate-me-not-in-output"

# A worker-like reader: another process decrypting every registry's credentials over and over.
READER = """
import json, sys, pathlib
from sqlalchemy import select
from watcher.db import session_scope
from watcher.delivery.subscriptions import SubscriptionSpec, save
from watcher.models import Registry
from watcher.registrations.store import spec_of

stop, ready = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
first, changed, failures, passes = {}, set(), [], 0
while not stop.exists():
    with session_scope() as session:
        for row in session.scalars(select(Registry)):
            try:
                if spec_of(row).credentials["username"] != "user-" + row.name:
                    failures.append(row.name + ": wrong credentials")
            except Exception as exc:
                failures.append(f"{row.name}: {type(exc).__name__}: {exc}")
            if first.setdefault(row.name, row.credentials) != row.credentials:
                changed.add(row.name)
    passes += 1
    ready.touch()
print(json.dumps({"passes": passes, "failures": failures[:3], "failed": len(failures), "changed": len(changed)}))
"""


def save_registries(count: int, *, keys: vault.Keyring | None = None) -> None:
    with session_scope() as session:
        for i in range(count):
            name = f"r{i:03}"
            spec = RegistrySpec(name, "oci", f"https://{name}.example.com", {"username": f"user-{name}"})
            spec.credentials["password"] = PASSWORD
            registries.save(session, spec)
            if keys is not None:  # saved under a key this installation does not have
                token = vault.encrypt(spec.credentials, keys)
                session.execute(update(Registry).where(Registry.name == name).values(credentials=token))


def tokens() -> dict[str, str]:
    with session_scope() as session:
        return {name: token for name, token in session.execute(select(Registry.name, Registry.credentials))}


def wait_for(path: Path, reader: subprocess.Popen[str], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert reader.poll() is None, reader.communicate()
        assert time.monotonic() < deadline, "the reader made no pass"
        time.sleep(0.05)


def use_key_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WATCHER_SECRET_KEY")
    get_settings.cache_clear()


@pytest.mark.parametrize("db", ["sqlite", "postgresql"], indirect=True)
def test_rotating_the_key_file_while_a_worker_decrypts(
    watcher: Watcher, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    use_key_file(monkeypatch)
    save_registries(120)
    key_file = watcher.data_dir / "secret.key"
    old_key = key_file.read_text().strip()
    before = tokens()

    stop, ready = tmp_path / "stop", tmp_path / "ready"
    reader = subprocess.Popen(
        [sys.executable, "-c", READER, str(stop), str(ready)],
        env=watcher.env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(ready, reader)
        rotated = watcher.cli("secrets", "rotate")
        ready.unlink()
        wait_for(ready, reader)  # one more whole pass after the rotation ended
        stop.touch()
        out, err = reader.communicate(timeout=60)
    finally:
        stop_process(reader)
    assert rotated.exit_code == 0, rotated.output
    assert rotated.stdout.startswith("re-encrypted 120 registries under a new key in ")
    assert reader.returncode == 0, err
    seen = json.loads(out)
    assert seen["failed"] == 0, seen["failures"]
    assert seen["changed"] == 120  # the reader saw every row before and after its re-encryption

    new_key = key_file.read_text().strip()
    assert "\n" not in new_key and new_key != old_key
    assert key_file.stat().st_mode & 0o777 == 0o600
    for key in (old_key, new_key, PASSWORD):
        assert key not in rotated.output
    after = tokens()
    assert all(after[name] != before[name] for name in before)
    for token in after.values():
        with pytest.raises(vault.Undecryptable):
            vault.Keyring((old_key,)).decrypt(token)  # the old key opens nothing any more
        assert vault.decrypt(token)["password"] == PASSWORD


@pytest.mark.parametrize("db", ["sqlite", "postgresql"], indirect=True)
def test_rotating_the_environment_key_with_fallbacks(watcher: Watcher, monkeypatch: pytest.MonkeyPatch) -> None:
    old_key = watcher.settings.secret_key
    save_registries(3)
    with session_scope() as session:
        registries.save(session, RegistrySpec("anonymous", "oci", "https://anonymous.example.com"))
    unrelated = "an-unrelated-old-key-that-opens-nothing"

    new_key = "the-new-passphrase-of-the-operator"
    monkeypatch.setenv("WATCHER_SECRET_KEY", new_key)
    monkeypatch.setenv("WATCHER_SECRET_KEY_FALLBACKS", f"{unrelated},\n{old_key}\n")
    get_settings.cache_clear()
    shown = watcher.cli("registry", "show", "r001", "--json")
    assert json.loads(shown.stdout)["credentials"]["username"] == "user-r001"  # read through a fallback

    rotated = watcher.cli("secrets", "rotate")
    assert rotated.exit_code == 0, rotated.output
    assert rotated.stdout == (
        "re-encrypted 3 registries under WATCHER_SECRET_KEY; "
        "now remove WATCHER_SECRET_KEY_FALLBACKS from every watcher process\n"
    )
    for secret in (old_key, new_key, unrelated, PASSWORD):
        assert secret not in rotated.output

    monkeypatch.delenv("WATCHER_SECRET_KEY_FALLBACKS")
    get_settings.cache_clear()
    for name in ("r000", "r001", "r002"):
        assert json.loads(watcher.cli("registry", "show", name, "--json").stdout)["credentials"]["password"] == "set"
    again = watcher.cli("secrets", "rotate")
    assert again.stdout == "re-encrypted 0 registries under WATCHER_SECRET_KEY\n"

    monkeypatch.setenv("WATCHER_SECRET_KEY", old_key)
    get_settings.cache_clear()
    assert "cannot be decrypted" in watcher.cli("registry", "test", "r001").stderr  # nothing left under it


@pytest.mark.parametrize("db", ["sqlite", "postgresql"], indirect=True)
def test_a_rotation_names_the_registries_it_cannot_decrypt(watcher: Watcher) -> None:
    save_registries(2)
    with session_scope() as session:
        registries.save(session, RegistrySpec("lost", "oci", "https://lost.example.com", {"username": "user-lost"}))
    lost = vault.encrypt({"username": "user-lost"}, vault.Keyring(("a key this installation never had",)))
    with session_scope() as session:
        session.execute(update(Registry).where(Registry.name == "lost").values(credentials=lost))
    outcome = rotation.rotate(grace_seconds=0.1)
    assert (outcome.reencrypted, outcome.unreadable) == (set(), {"lost"})
    result = watcher.cli("secrets", "rotate")
    assert result.exit_code == 1
    assert result.stderr.startswith("watcher: registries 'lost': credentials cannot be decrypted with any key")
    assert result.stderr.count("\n") == 1


def test_two_rotations_at_once_leave_one_working_key(watcher: Watcher, monkeypatch: pytest.MonkeyPatch) -> None:
    use_key_file(monkeypatch)
    save_registries(30)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            rotation.rotate(batch=5, grace_seconds=0.2)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors
    assert len((watcher.data_dir / "secret.key").read_text().split()) == 1
    keys = vault.keyring()
    assert all(vault.decrypt(token, keys)["password"] == PASSWORD for token in tokens().values())


def test_a_rotation_reencrypts_the_subscriptions_secrets_too(watcher: Watcher, monkeypatch: pytest.MonkeyPatch) -> None:
    old_key = watcher.settings.secret_key
    save_registries(1)
    with session_scope() as session:
        given = {
            name: save(session, SubscriptionSpec.build(name, "http://127.0.0.1:9/x"), workspace_id=1) for name in "ab"
        }
        save(session, SubscriptionSpec.build("lost", "http://127.0.0.1:9/x"), workspace_id=1)
        lost = vault.Keyring(("a key this installation never had",)).encrypt(b"whsec_lost")
        session.execute(update(SUBSCRIPTIONS).where(SUBSCRIPTIONS.c.name == "lost").values(secret=lost))

    monkeypatch.setenv("WATCHER_SECRET_KEY", "the-new-passphrase-of-the-operator")
    monkeypatch.setenv("WATCHER_SECRET_KEY_FALLBACKS", old_key)
    get_settings.cache_clear()
    assert rotation.rotate.__kwdefaults__ is not None
    monkeypatch.setitem(rotation.rotate.__kwdefaults__, "grace_seconds", 0.05)  # no writer races this one
    rotated = watcher.cli("secrets", "rotate")
    assert rotated.exit_code == 1
    assert rotated.stdout == (
        "re-encrypted 1 registries under WATCHER_SECRET_KEY; "
        "now remove WATCHER_SECRET_KEY_FALLBACKS from every watcher process\n"
        "and the secrets of 2 subscriptions\n"
    )
    assert rotated.stderr.startswith("watcher: subscriptions 'default/lost': secrets cannot be decrypted")
    assert rotated.stderr.count("\n") == 1 and not any(secret in rotated.output for secret in given.values())

    with session_scope() as session:
        stored = dict(session.execute(select(SUBSCRIPTIONS.c.name, SUBSCRIPTIONS.c.secret)).all())
    assert stored["lost"] == lost  # left as it was
    for name, secret in given.items():
        assert vault.Keyring(("the-new-passphrase-of-the-operator",)).decrypt(stored[name]).decode() == secret
        with pytest.raises(vault.Undecryptable):
            vault.Keyring((old_key,)).decrypt(stored[name])
