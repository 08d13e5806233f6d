"""The quick commands' read (`watcher.quickread`, sqlite3 alone) answers exactly as the read model does, on
a database holding every case the answer distinguishes; and whatever it cannot read goes to the read model."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Watcher
from watcher import quickread, readmodel, registries
from watcher.db import HEAD_REVISION, get_engine, session_scope
from watcher.errors import NotFoundError
from watcher.models import PollRun, Registry, Repository, Tag, utcnow
from watcher.settings import get_settings
from watcher.spec import RegistrySpec

DIGEST = "sha256:" + "b" * 64


@pytest.fixture
def default_db(watcher: Watcher, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The default database (no WATCHER_DATABASE_URL: `data_dir/watcher.db`), created and current."""
    monkeypatch.delenv("WATCHER_DATABASE_URL")
    get_settings.cache_clear()
    get_engine.cache_clear()
    get_engine()
    yield watcher.data_dir / "watcher.db"
    get_engine().dispose()
    get_engine.cache_clear()


def populate() -> None:
    """Registries pending, ok, failing (a multi-line error), running after a success, with repositories and
    tags, options, a webhook time, and one whose credentials no key decrypts."""
    now = utcnow()
    with session_scope() as session:
        specs = [
            RegistrySpec("pending", "oci", "https://pending.example.com"),
            RegistrySpec(
                "healthy",
                "ecr",
                "https://123456789012.dkr.ecr.eu-west-1.amazonaws.com",
                credentials={"access_key": "AKIAEXAMPLE", "secret_key": "s3cret"},
            ),
            RegistrySpec(
                "broken",
                "acr",
                "https://broken.azurecr.io",
                credentials={"username": "u", "password": "p"},
                options={"repositories": ["team/*"], "include_tags": "^v"},
                emit_existing=True,
            ),
            RegistrySpec("busy", "oci", "https://busy.example.com", interval_seconds=3600),
            RegistrySpec("locked", "oci", "https://locked.example.com", credentials={"username": "u", "password": "p"}),
        ]
        ids = {spec.name: registries.save(session, spec)[0].id for spec in specs}
        session.flush()
        runs = [
            ("healthy", "failed", 30, "unreachable"),
            ("healthy", "ok", 20, ""),
            ("broken", "ok", 50, ""),
            ("broken", "failed", 10, "\n  listing failed: HTTP 500\nsecond line"),
            ("busy", "ok", 40, ""),
            ("busy", "running", 1, ""),
        ]
        for name, outcome, minutes, error in runs:
            moment = now - timedelta(minutes=minutes, microseconds=123)
            finished = None if outcome == "running" else moment
            session.add(
                PollRun(
                    registry_id=ids[name],
                    started_at=moment,
                    finished_at=finished,
                    outcome=outcome,
                    error=error,
                    repositories=2,
                    tags=3,
                    events=1,
                    requests=7,
                )
            )
        for name, repos in (("healthy", 2), ("busy", 1)):
            for r in range(repos):
                repo = Repository(registry_id=ids[name], name=f"team/r{r}")
                session.add(repo)
                session.flush()
                session.add_all(Tag(repository_id=repo.id, name=f"v{t}", digest=DIGEST) for t in range(3))
        healthy = session.get(Registry, ids["healthy"])
        assert healthy is not None
        healthy.last_webhook_at = now - timedelta(seconds=5)
        healthy.baselined = True
        locked = session.get(Registry, ids["locked"])
        assert locked is not None
        locked.credentials = "not-a-fernet-token"


def quick_readable() -> bool:
    """Whether the quick read takes the database now."""
    conn = quickread.connect()
    if conn is None:
        return False
    conn.close()
    return True


def both(question: str, *args: Any) -> tuple[Any, Any]:
    """The quick answer and the read model's, to one question."""
    conn = quickread.connect()
    assert conn is not None, "the quick read refused the default database"
    try:
        quick = quickread.QUESTIONS[question](conn, *args)
    finally:
        conn.close()
    with session_scope() as session:
        full = getattr(readmodel, question)(session, *args)
    return quick, full


@pytest.mark.parametrize(
    ("question", "args"),
    [
        ("registry_statuses", ()),
        ("registry_statuses", (["busy", "pending", "nowhere"],)),
        ("registry_statuses", ([],)),
        ("registry_details", ()),
        ("registry_details", (["broken", "locked"],)),
        ("registry_detail", ("healthy",)),
        ("registry_detail", ("busy",)),
    ],
)
def test_the_quick_read_answers_as_the_read_model(default_db: Path, question: str, args: tuple[Any, ...]) -> None:
    populate()
    quick, full = both(question, *args)
    assert repr(quick) == repr(full)  # types too: True is not 1, an aware time is not a naive one


def test_the_answers_cover_every_case(default_db: Path) -> None:
    """The comparison above means something: the database does hold each case."""
    populate()
    statuses, _ = both("registry_statuses")
    assert {s.name: s.state for s in statuses} == {
        "broken": "failing",
        "busy": "ok",
        "healthy": "ok",
        "locked": "pending",
        "pending": "pending",
    }
    by_name = {s.name: s for s in statuses}
    assert by_name["broken"].last_error == "listing failed: HTTP 500"
    assert (by_name["healthy"].repositories, by_name["healthy"].tags) == (2, 6)
    assert by_name["healthy"].last_webhook_at is not None
    details, _ = both("registry_details")
    shown = {d["name"]: d for d in details}
    assert shown["healthy"]["credentials"] == {"access_key": "AKIAEXAMPLE", "secret_key": "set"}
    assert isinstance(shown["locked"]["credentials"], str)  # undecryptable: said so, the others shown
    assert shown["broken"]["options"]["include_tags"] == "^v" and shown["broken"]["emit_existing"] is True
    assert shown["busy"]["last_poll"]["outcome"] == "running"


def test_an_unknown_name_is_the_same_one_line(default_db: Path) -> None:
    populate()
    conn = quickread.connect()
    assert conn is not None
    with pytest.raises(NotFoundError) as quick:
        quickread.registry_detail(conn, "nowhere")
    conn.close()
    with session_scope() as session, pytest.raises(NotFoundError) as full:
        readmodel.registry_detail(session, "nowhere")
    assert str(quick.value) == str(full.value)


def test_what_the_quick_read_cannot_read_goes_to_the_read_model(
    default_db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    populate()
    expected = quickread.read("registry_details")
    with session_scope() as session:
        assert expected == readmodel.registry_details(session)
    engine = get_engine()
    with engine.begin() as conn:  # a schema behind the code's (before its migration)
        conn.exec_driver_sql("UPDATE alembic_version SET version_num = '0005'")
    assert not quick_readable()
    with engine.begin() as conn:
        conn.exec_driver_sql(f"UPDATE alembic_version SET version_num = '{HEAD_REVISION}'")
    assert quick_readable()
    # a value neither reads: the quick read gives up, and the read model's own error is the answer
    with engine.begin() as conn:
        conn.exec_driver_sql("UPDATE registries SET next_poll_at = 'not a time' WHERE name = 'pending'")
    with session_scope() as session, pytest.raises(ValueError) as full:
        readmodel.registry_statuses(session)
    with pytest.raises(ValueError) as quick:
        quickread.read("registry_statuses")
    assert str(quick.value) == str(full.value)
    # any other database (here an explicit URL, even to the same file) is the read model's
    monkeypatch.setenv("WATCHER_DATABASE_URL", f"sqlite:///{default_db}")
    get_settings.cache_clear()
    assert not quick_readable()


@pytest.mark.parametrize(
    "args",
    [
        ["status", "--json"],
        ["registry", "list"],
        ["registry", "list", "--json"],
        ["registry", "show", "broken"],
        ["registry", "show", "locked", "--json"],
        ["registry", "show", "nowhere"],
    ],
)
def test_the_commands_print_the_same_either_way(
    default_db: Path, watcher: Watcher, monkeypatch: pytest.MonkeyPatch, args: list[str]
) -> None:
    """What the commands print from the quick read is what they print from the read model (plain `status`
    prints relative times, which move between two runs; its JSON holds the same answer)."""
    populate()
    assert quick_readable()
    quick = watcher.cli(*args)
    monkeypatch.setenv("WATCHER_DATABASE_URL", f"sqlite:///{default_db}")  # the same file, for the read model
    get_settings.cache_clear()
    assert not quick_readable()
    full = watcher.cli(*args)
    assert (quick.exit_code, quick.stdout, quick.stderr) == (full.exit_code, full.stdout, full.stderr)
    assert quick.stdout or quick.stderr
