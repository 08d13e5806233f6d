"""Every poll is bounded: a deadline for the whole poll, a clean stop on request, a lease that lapses
when its poll dies and holds while it lives, a history that is pruned, one registry's bad row or option
kept to itself, and names the registry sent that are not valid counted as `ignored`."""

from __future__ import annotations

import json
import logging
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import timedelta

import pytest
from cryptography.fernet import Fernet

from tests.conftest import Watcher
from tests.fakes.hostile_registry import HostileRegistry, Recorder, digest_of
from tests.support.polls import lease_of, runs_of, set_options, set_row, wait_for
from tests.support.processes import stop_process
from watcher.db import session_scope
from watcher.models import PollRun, utcnow
from watcher.polling import poll as polling
from watcher.registrations import store as registries
from watcher.registry.deadline import DeadlineExceeded, Interrupted
from watcher.settings import get_settings


@pytest.fixture
def hostile() -> Iterator[HostileRegistry]:
    with Recorder() as recorder, HostileRegistry(recorder) as server:
        yield server


def add_baselined(watcher: Watcher, name: str, server: HostileRegistry) -> None:
    """Registered and polled once (the baseline), so a later change would be an event."""
    added = watcher.add_registry(name, server.url)
    assert added.exit_code == 0, added.output
    first = watcher.cli("poll", name)
    assert first.exit_code == 0, first.output


def test_a_poll_without_a_poll_timeout_has_the_ten_minute_default(watcher: Watcher, hostile: HostileRegistry) -> None:
    add_baselined(watcher, "h", hostile)
    with session_scope(watcher.engine) as session:
        spec = registries.spec_of(registries.find(session, "h"))
    assert spec.poll_timeout() == 600


@pytest.mark.parametrize("db", ["sqlite", "postgresql"], indirect=True)
def test_a_registry_sending_a_byte_a_second_fails_at_its_deadline_and_recovers(
    watcher: Watcher, hostile: HostileRegistry
) -> None:
    add_baselined(watcher, "h", hostile)
    hostile.repositories["team/app"]["v3"] = digest_of("team/app:v3")
    set_options(watcher, "h", poll_timeout=2)
    hostile.mode = "slow"
    started = time.monotonic()
    result = watcher.cli("poll", "h")
    assert time.monotonic() - started < 10  # 2 s and a moment to hang up, not the 40 s the body takes
    assert result.exit_code == 1
    assert result.stderr.splitlines() == [
        "watcher: registry 'h': too slow: the poll exceeded its 2s deadline (--poll-timeout)"
    ]
    assert watcher.stream_entries() == []
    last = runs_of(watcher, "h")[-1]
    assert (last.outcome, last.error) == ("failed", "too slow: the poll exceeded its 2s deadline (--poll-timeout)")
    assert lease_of(watcher, "h") is None

    hostile.mode = "normal"
    fixed = watcher.cli("poll", "h")
    assert fixed.exit_code == 0, fixed.output
    assert [(e["change"], e["tag"]) for e in watcher.stream_entries()] == [("added", "v3")]


def test_a_stop_request_ends_a_slow_poll_cleanly(watcher: Watcher, hostile: HostileRegistry) -> None:
    add_baselined(watcher, "h", hostile)
    hostile.repositories["team/app"]["v3"] = digest_of("team/app:v3")
    hostile.mode = "slow"
    stop = threading.Event()
    threading.Timer(1.0, stop.set).start()
    started = time.monotonic()
    with pytest.raises(Interrupted):
        polling.poll("h", stop=stop)
    assert time.monotonic() - started < 8
    last = runs_of(watcher, "h")[-1]
    assert last.outcome == "abandoned" and last.finished_at is not None
    assert lease_of(watcher, "h") is None
    hostile.mode = "normal"
    assert [(e.change, e.tag) for e in polling.poll("h").events] == [("added", "v3")]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_to_watcher_poll_ends_it_with_one_line(
    watcher: Watcher, hostile: HostileRegistry, sig: signal.Signals
) -> None:
    add_baselined(watcher, "h", hostile)
    hostile.mode = "slow"
    proc = subprocess.Popen(
        [sys.executable, "-m", "watcher", "poll", "h"],
        env=watcher.env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert wait_for(lambda: runs_of(watcher, "h")[-1].outcome == "running", 20)
        time.sleep(0.5)  # well inside the listing
        proc.send_signal(sig)
        _, stderr = proc.communicate(timeout=10)
    finally:
        stop_process(proc)
    assert proc.returncode == 1
    assert stderr.splitlines() == [
        "watcher: registry 'h': poll interrupted: the process is stopping; nothing was saved"
    ]
    assert runs_of(watcher, "h")[-1].outcome == "abandoned"
    assert lease_of(watcher, "h") is None


def test_the_heartbeat_keeps_a_long_poll_claimed_past_its_lease(
    watcher: Watcher, hostile: HostileRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WATCHER_POLL_LEASE_SECONDS", "2")
    get_settings.cache_clear()
    add_baselined(watcher, "h", hostile)
    set_options(watcher, "h", poll_timeout=6)
    hostile.mode = "slow"
    outcome: list[BaseException] = []

    def long_poll() -> None:
        try:
            polling.poll("h")
        except BaseException as exc:  # the test reads it
            outcome.append(exc)

    worker = threading.Thread(target=long_poll)
    worker.start()
    assert wait_for(lambda: runs_of(watcher, "h")[-1].outcome == "running", 10)
    time.sleep(3.5)  # past the 2 s lease: only the heartbeat keeps the claim
    with pytest.raises(polling.Busy):
        polling.poll("h")
    worker.join(timeout=20)
    assert len(outcome) == 1 and isinstance(outcome[0], DeadlineExceeded)
    hostile.mode = "normal"
    assert polling.poll("h").registry == "h"


def test_old_poll_runs_are_pruned_by_the_next_poll_of_their_registry(
    watcher: Watcher, hostile: HostileRegistry
) -> None:
    add_baselined(watcher, "h", hostile)
    add_baselined(watcher, "other", hostile)
    now = utcnow()
    with session_scope(watcher.engine) as session:
        ids = {r.registry_id for r in session.query(PollRun)}
        h_id, other_id = sorted(ids)
        for registry_id in (h_id, other_id):
            for days in (45, 31, 29):
                session.add(PollRun(registry_id=registry_id, started_at=now - timedelta(days=days), outcome="ok"))
    polling.poll("h")
    ages = sorted(round((now - r.started_at) / timedelta(days=1)) for r in runs_of(watcher, "h"))
    assert ages == [0, 0, 29]  # the baseline, this poll, and the one run within 30 days
    assert len(runs_of(watcher, "other")) == 4  # pruned when that registry polls, not before


def test_a_bad_stored_poll_timeout_fails_only_its_own_registry(watcher: Watcher, hostile: HostileRegistry) -> None:
    add_baselined(watcher, "bad", hostile)
    add_baselined(watcher, "good", hostile)
    set_options(watcher, "bad", poll_timeout="soon")
    result = watcher.cli("poll", "bad")
    assert result.exit_code == 1
    assert result.stderr.splitlines() == [
        "watcher: registry 'bad': option poll_timeout 'soon' is not a number of seconds: "
        "set it with `--poll-timeout` (`watcher registry apply`)"
    ]
    assert runs_of(watcher, "bad")[-1].outcome == "failed"
    assert lease_of(watcher, "bad") is None
    assert watcher.cli("poll", "good").exit_code == 0


def test_undecryptable_credentials_fail_only_their_registry(
    watcher: Watcher, hostile: HostileRegistry, caplog: pytest.LogCaptureFixture
) -> None:
    from watcher.tasks.jobs import poll_registry

    add_baselined(watcher, "locked", hostile)
    add_baselined(watcher, "good", hostile)
    foreign = Fernet(Fernet.generate_key()).encrypt(b'{"username": "u", "password": "p"}').decode()
    set_row(watcher, "locked", credentials=foreign)
    with caplog.at_level(logging.INFO, logger="watcher"):
        assert poll_registry("locked") == 0  # the Celery task: one line, no traceback, no exception
    lines = [r.getMessage() for r in caplog.records if r.name == "watcher"]
    assert len(lines) == 1 and lines[0].startswith("registry 'locked': credentials cannot be decrypted")
    assert not any(r.exc_info for r in caplog.records)
    last = runs_of(watcher, "locked")[-1]
    assert last.outcome == "failed" and "cannot be decrypted" in last.error
    assert lease_of(watcher, "locked") is None
    assert poll_registry("good") == 0 and runs_of(watcher, "good")[-1].outcome == "ok"


def test_ignored_names_are_counted_logged_and_reported(
    watcher: Watcher, hostile: HostileRegistry, caplog: pytest.LogCaptureFixture
) -> None:
    added = watcher.add_registry("h", hostile.url)
    assert added.exit_code == 0, added.output
    hostile.mode = "path_tricks"  # two bad repository names in the catalog, four bad tags in each tag list
    with caplog.at_level(logging.WARNING, logger="watcher"):
        text = watcher.cli("poll", "h")
    assert text.exit_code == 0, text.output
    assert text.stdout.splitlines()[0].endswith(", 10 ignored")
    warnings = [r.getMessage() for r in caplog.records if r.name == "watcher"]
    assert len(warnings) == 10 and all(w.startswith("registry 'h': ") for w in warnings), warnings
    assert runs_of(watcher, "h")[-1].ignored == 10
    as_json = json.loads(watcher.cli("poll", "h", "--json").stdout)
    assert (as_json["ignored"], as_json["events"]) == (10, [])
    hostile.mode = "normal"
    assert json.loads(watcher.cli("poll", "h", "--json").stdout)["ignored"] == 0


def test_an_unreachable_registry_is_retried_then_logged_in_one_line(
    watcher: Watcher, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    from watcher.registry.http import LimitedTransport
    from watcher.tasks.jobs import MAX_RETRIES, poll_registry

    monkeypatch.setattr(LimitedTransport, "_backoff", lambda self, attempt: 0.01)  # the task's retries are the point

    with socket.socket() as closed:  # a loopback port nobody listens on
        closed.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{closed.getsockname()[1]}"
    assert watcher.add_registry("gone", url, "--no-verify").exit_code == 0
    with caplog.at_level(logging.WARNING, logger="watcher"):
        poll_registry.apply(args=("gone",))  # eager: each retry runs at once, in this process
    lines = [r.getMessage() for r in caplog.records if r.name == "watcher"]
    assert len(lines) == MAX_RETRIES + 1, lines
    assert all(line.startswith("registry 'gone': unreachable") for line in lines)
    assert not any(r.exc_info for r in caplog.records)
    assert [r.outcome for r in runs_of(watcher, "gone")] == ["failed"] * (MAX_RETRIES + 1)


def test_a_connection_test_is_bounded_by_the_poll_timeout_too() -> None:
    """`registry add`/`test` (and the API's registration) run the same bounded listing as a poll."""
    from tests.fakes.hostile_registry import HostileRegistry, Recorder
    from watcher.registrations.registration import verify
    from watcher.registrations.spec import RegistrySpec
    from watcher.registry.deadline import DeadlineExceeded

    with Recorder() as recorder, HostileRegistry(recorder) as server:
        server.mode = "slow"
        spec = RegistrySpec("slow", "oci", server.url, options={"poll_timeout": 1})
        started = time.monotonic()
        with pytest.raises(DeadlineExceeded, match=r"registry 'slow': too slow: the test exceeded its 1s deadline"):
            verify(spec)
        assert time.monotonic() - started < 8
