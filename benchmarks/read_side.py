"""How fast the read side answers on a big state database: API pages, `/metrics`, `watcher status`, SSE.

Seeds a throw-away state database (a SQLite file in a temporary directory, or a PostgreSQL database of its
own on 127.0.0.1:5432, dropped afterwards) through the app's own migrations, with bulk inserts (executemany
on SQLite, COPY on PostgreSQL): EVENTS events in the history over 10 registries (one hot repository with
5 % of them; 1,000 repository names in each registry, ~95 events per registry each), 100,000 tags in one
registry (one repository of 10,000 tags), 1,000 registries with their poll runs, and the deployment
counters such a fleet has.

Then it starts the real app (`watcher serve`, its own process, so it never shares this one's GIL) and
measures over HTTP with one keep-alive client. The cases run interleaved, round by round, and every round
also asks `/healthz`: the app's own overhead, measured side by side, is the floor every page is compared
with on a shared, noisy machine. `watcher status` runs as a CLI (process start included, beside `watcher
--version` as its floor) and as the in-process `registry_statuses` call. Last, 50 SSE clients connect to
`/api/v1/events/stream` and a writer commits events one at a time, as a poll would; each commit's latency
to every client is measured in this one process (one clock).

Targets (issue 7, "Speed"): every API page <= 50 ms at p95, `/metrics` <= 200 ms, `watcher status` with
1,000 registries <= 1 s, SSE commit -> received <= 1 s at p95. Exit status 1 if one is missed.

Run from the repository root: `.venv/bin/python -m benchmarks.read_side --db sqlite` (or `postgresql`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import Engine, event, text

from benchmarks import throwaway
from tests.support.processes import stop_process
from tests.support.registry import free_port

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)

# the shape of the seeded deployment
REGISTRIES = 1000
EVENT_REGISTRIES = 10  # the registries the history is spread over ("several")
EVENT_REPOSITORIES = 1000  # per event registry
HOT_REPOSITORY = "platform/api"  # in registry 1: every 20th event
BIG_REGISTRY = "hub"  # registry 1: 100,000 tags
BIG_REPOSITORY = "library/big"  # its 10,000-tag repository
BIG_TAGS = 10_000
OTHER_REPOSITORIES, OTHER_TAGS = 900, 100  # the rest of the big registry's 100,000 tags
SMALL_REPOSITORIES, SMALL_TAGS = 2, 5  # every other registry
POLLS_PER_REGISTRY = 100  # the default of --polls-per-registry; 30 days' retention at 5 min is 8,640

TARGET_PAGE_MS = 50.0
TARGET_METRICS_MS = 200.0
TARGET_STATUS_S = 1.0
TARGET_SSE_S = 1.0

Row = tuple[Any, ...]
#: what the benchmarks scrape `/metrics` with, as Prometheus would (WATCHER_METRICS_TOKEN of the installation)
METRICS_TOKEN = "bench-metrics-token-0123456789"
METRICS_AUTH = {"Authorization": f"Bearer {METRICS_TOKEN}"}


# ---- the throw-away installation ------------------------------------------------------------------
@dataclass
class Installation:
    """One watcher installation of the benchmark's own: its environment, database URL and temp dir."""

    db: str
    tmp: Path
    url: str
    stream: str
    env: dict[str, str] = field(default_factory=dict)


@contextlib.contextmanager
def installation(db: str) -> Iterator[Installation]:
    """A temporary data dir, a database of our own and a unique Redis stream key, all removed afterwards.
    WATCHER_* variables go into this process's environment too: the seeding and the SSE writer use the app's
    own engine (`watcher.db.get_engine`)."""
    with throwaway.state(db, "read-bench") as state:
        env = {**state.env, "WATCHER_METRICS_TOKEN": METRICS_TOKEN}
        os.environ.update(env)
        _clear_caches()
        try:
            yield Installation(db, state.tmp, state.url, state.stream, env)
        finally:
            _clear_caches(dispose=True)


def _clear_caches(dispose: bool = False) -> None:
    from watcher.db import get_engine
    from watcher.settings import get_settings

    if dispose and get_engine.cache_info().currsize:
        get_engine().dispose()
    get_engine.cache_clear()
    get_settings.cache_clear()


# ---- seeding --------------------------------------------------------------------------------------
def bulk_insert(engine: Engine, table: str, columns: Sequence[str], rows: Iterable[Row]) -> int:
    """Rows in one transaction, without the ORM: COPY on PostgreSQL, executemany in chunks on SQLite.
    Datetimes are given aware (UTC) and stored as the app's `UTCDateTime` stores them (naive UTC)."""
    raw = engine.raw_connection()
    count = 0
    try:
        cursor = raw.cursor()
        if engine.dialect.name == "postgresql":
            with cursor.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row([_pg_value(v) for v in row])
                    count += 1
            if "id" in columns:
                cursor.execute(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), (SELECT max(id) FROM {table}))")
        else:
            sql = f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"
            for chunk in chunks(rows, 20_000):
                cursor.executemany(sql, [[_sqlite_value(v) for v in row] for row in chunk])
                count += len(chunk)
        raw.commit()
    finally:
        raw.close()
    return count


def _pg_value(value: Any) -> Any:
    return value.astimezone(UTC).replace(tzinfo=None) if isinstance(value, datetime) else value


def _sqlite_value(value: Any) -> Any:
    """SQLAlchemy's SQLite DateTime format: always with microseconds."""
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
    if isinstance(value, bool):
        return int(value)
    return value


def chunks(rows: Iterable[Row], size: int) -> Iterator[list[Row]]:
    chunk: list[Row] = []
    for row in rows:
        chunk.append(row)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def registry_name(index: int) -> str:
    """Registry 1 is the big one; 2..EVENT_REGISTRIES share the history with it."""
    return BIG_REGISTRY if index == 1 else f"registry-{index:04d}"


def digest_of(*parts: object) -> str:
    return "sha256:" + hashlib.sha256(":".join(map(str, parts)).encode()).hexdigest()


def registry_rows(
    count: int = REGISTRIES, name_of: Callable[[int], str] = registry_name, interval: int = 300, age_days: int = 90
) -> Iterator[Row]:
    """REGISTRY_COLUMNS of `count` baselined OCI registries, each next due at its own second of `interval`."""
    for i in range(1, count + 1):
        yield (
            i,
            name_of(i),
            "oci",
            f"https://{name_of(i)}.registry.example.com",
            "",
            "{}",
            interval,
            False,
            True,
            NOW + timedelta(seconds=i % interval),
            NOW - timedelta(days=age_days),
        )


REGISTRY_COLUMNS = (
    "id",
    "name",
    "provider",
    "url",
    "credentials",
    "options",
    "interval_seconds",
    "emit_existing",
    "baselined",
    "next_poll_at",
    "created_at",
)


def repositories_and_tags() -> tuple[list[Row], Iterator[Row]]:
    """The big registry's 901 repositories (one of 10,000 tags, 900 of 100) and two small ones elsewhere."""
    repos: list[Row] = [(1, 1, BIG_REPOSITORY, NOW - timedelta(days=90))]
    repos += [
        (2 + r, 1, f"team-{r % 30:02d}/service-{r:04d}", NOW - timedelta(days=60)) for r in range(OTHER_REPOSITORIES)
    ]
    for reg in range(2, REGISTRIES + 1):
        first = len(repos) + 1
        repos += [(first + r, reg, f"apps/app-{r}", NOW - timedelta(days=30)) for r in range(SMALL_REPOSITORIES)]
    return repos, tag_rows(repos)


def tag_rows(repos: list[Row]) -> Iterator[Row]:
    rng = random.Random(7)
    tag_id = 0
    for repo_id, registry_id, _name, _seen in repos:
        count = BIG_TAGS if repo_id == 1 else (OTHER_TAGS if registry_id == 1 else SMALL_TAGS)
        for t in range(count):
            tag_id += 1
            pushed = None if rng.random() < 0.1 else NOW - timedelta(seconds=rng.randrange(365 * 86400))
            yield tag_id, repo_id, f"1.{t // 100}.{t % 100}", digest_of(repo_id, t), pushed


CLOUDEVENT_PAD = "x" * 420  # brings the fixed-template CloudEvent to about 1 KB


def event_rows(count: int, unpublished: int = 2000) -> Iterator[Row]:
    """COUNT events, oldest first, one a minute back from NOW: every 20th in the hot repository, the rest
    spread over EVENT_REGISTRIES x EVENT_REPOSITORIES repositories; the last `unpublished` not yet on the
    stream."""
    rng = random.Random(1)
    changes = ("added", "added", "updated", "removed")
    for i in range(1, count + 1):
        if i % 20 == 0:
            reg, repo = 1, HOT_REPOSITORY
        else:
            reg, repo = rng.randrange(1, EVENT_REGISTRIES + 1), event_repository(rng.randrange(EVENT_REPOSITORIES))
        change = changes[i % 4]
        detected = NOW - timedelta(minutes=count - i)
        event_id = f"{i:08x}-0000-4000-8000-{i:012x}"
        tag = f"1.{i % 97}.{i % 13}"
        digest = digest_of("event", i)
        yield (
            i,
            event_id,
            reg,
            registry_name(reg),
            repo,
            tag,
            change,
            digest,
            digest_of("event", i - 1) if change == "updated" else "",
            detected - timedelta(seconds=30),
            detected,
            cloudevent_text(event_id, registry_name(reg), repo, tag, change, digest, detected),
            None if i > count - unpublished else detected + timedelta(seconds=1),
            None if i > count - unpublished else f"{int(detected.timestamp() * 1000)}-0",
        )


def event_repository(index: int) -> str:
    """The same EVENT_REPOSITORIES names in every event registry (mirrors, environments)."""
    return f"team-{index % 30:02d}/svc-{index:04d}"


RARE_REPOSITORY = event_repository(123)  # ~950 events over all registries, ~95 in each


EVENT_COLUMNS = (
    "id",
    "event_id",
    "registry_id",
    "registry",
    "repository",
    "tag",
    "change",
    "digest",
    "previous_digest",
    "pushed_at",
    "detected_at",
    "cloudevent",
    "published_at",
    "stream_id",
)


def cloudevent_text(event_id: str, registry: str, repo: str, tag: str, change: str, digest: str, at: datetime) -> str:
    """A fixed template of the app's CloudEvent, about 1 KB (the real one carries the same fields)."""
    return json.dumps(
        {
            "specversion": "1.0",
            "id": event_id,
            "source": f"/watcher/registries/{registry}",
            "type": "dev.cdevents.artifact.published.0.3.0",
            "subject": f"{repo}:{tag}",
            "time": at.isoformat(),
            "datacontenttype": "application/json",
            "data": {"customData": {"change": change, "registry": registry, "digest": digest}, "pad": CLOUDEVENT_PAD},
        },
        separators=(",", ":"),
    )


def poll_rows(polls: int) -> Iterator[Row]:
    """POLLS polls a registry, every 5 minutes; every 10th registry's newest poll failed."""
    run_id = 0
    for p in range(polls):
        for reg in range(1, REGISTRIES + 1):
            run_id += 1
            started = NOW - timedelta(minutes=5 * (polls - p))
            failed = (p == polls - 1 and reg % 10 == 0) or (p * reg) % 53 == 0
            error = "GET https://example/v2/_catalog: HTTP 401 unauthorized\n(details)" if failed else ""
            outcome = "failed" if failed else "ok"
            yield run_id, reg, started, started + timedelta(seconds=2), outcome, error, 3, 100, 0, 104, 0


POLL_COLUMNS = (
    "id",
    "registry_id",
    "started_at",
    "finished_at",
    "outcome",
    "error",
    "repositories",
    "tags",
    "events",
    "requests",
    "ignored",
)


def counter_rows() -> Iterator[Row]:
    """The counters a fleet of REGISTRIES registries accumulates: a few series per registry."""
    from watcher.read.counters import DURATION_BUCKETS, _le, labels_key

    for reg in range(1, REGISTRIES + 1):
        base = {"registry": registry_name(reg), "provider": "oci"}
        yield "watcher_polls_total", labels_key({**base, "outcome": "ok"}), 95.0
        yield "watcher_polls_total", labels_key({**base, "outcome": "failed"}), 5.0
        yield "watcher_registry_requests_total", labels_key({**base, "code": "200"}), 10_400.0
        yield "watcher_registry_requests_total", labels_key({**base, "code": "401"}), 5.0
        for change in ("added", "updated", "removed") if reg <= EVENT_REGISTRIES else ():
            yield "watcher_events_total", labels_key({"registry": registry_name(reg), "change": change}), 33_000.0
    provider = {"provider": "oci"}  # the duration histogram is per provider (migration 0009)
    for bound in DURATION_BUCKETS:
        yield "watcher_poll_duration_seconds_bucket", labels_key({**provider, "le": _le(bound)}), 100.0 * REGISTRIES
    yield "watcher_poll_duration_seconds_sum", labels_key(provider), 200.0 * REGISTRIES
    yield "watcher_poll_duration_seconds_count", labels_key(provider), 100.0 * REGISTRIES


def seed(engine: Engine, events: int, polls: int = POLLS_PER_REGISTRY) -> dict[str, float]:
    """Every table, in bulk; returns the seconds each took."""
    timings: dict[str, float] = {}
    repos, tags = repositories_and_tags()
    plan: list[tuple[str, Sequence[str], Iterable[Row]]] = [
        ("registries", REGISTRY_COLUMNS, registry_rows()),
        ("repositories", ("id", "registry_id", "name", "first_seen_at"), repos),
        ("tags", ("id", "repository_id", "name", "digest", "pushed_at"), tags),
        ("poll_runs", POLL_COLUMNS, poll_rows(polls)),
        ("counters", ("metric", "labels", "value"), counter_rows()),
        ("events", EVENT_COLUMNS, event_rows(events)),
    ]
    for table, columns, rows in plan:
        started = time.perf_counter()
        count = bulk_insert(engine, table, columns, rows)
        timings[table] = time.perf_counter() - started
        print(f"  seeded {count:>9,} {table:<12} in {timings[table]:6.1f} s", flush=True)
    if engine.dialect.name == "postgresql":  # what autovacuum does soon after a bulk load
        started = time.perf_counter()
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("VACUUM ANALYZE"))
        timings["vacuum analyze"] = time.perf_counter() - started
    return timings


def create_token() -> str:
    from watcher.db import session_scope
    from watcher.registrations import tokens

    with session_scope() as session:
        return tokens.create(session, "bench", "reader")


# ---- the app --------------------------------------------------------------------------------------
@contextlib.contextmanager
def app_server(inst: Installation) -> Iterator[str]:
    """`watcher serve` on a free loopback port, in its own process; its base URL once `/healthz` answers."""
    with served(inst) as (base, _proc):
        yield base


@contextlib.contextmanager
def served(inst: Installation) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """`app_server`, with its process (whose CPU a benchmark may read)."""
    port = free_port()
    proc = subprocess.Popen(
        [str(VENV_BIN / "watcher"), "serve", "--listen", f"127.0.0.1:{port}", "--loglevel", "WARNING"],
        cwd=inst.tmp,
        env={**os.environ, **inst.env},
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_healthy(base, proc, 30, "watcher serve did not start")
        yield base, proc
    finally:
        stop_process(proc)


def wait_until_healthy(base: str, proc: subprocess.Popen[bytes], seconds: float, failure: str) -> None:
    """Until `base`'s `/healthz` answers 200; RuntimeError(failure) if the process ends or time runs out."""
    deadline = time.monotonic() + seconds
    while True:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                return
        if time.monotonic() > deadline or proc.poll() is not None:
            raise RuntimeError(failure)
        time.sleep(0.1)


# ---- HTTP measurements ----------------------------------------------------------------------------
@dataclass
class Case:
    """One request measured: its label, its path, the p95 it must meet in ms (None: an extra, shown but not
    judged) and how many items its page must hold (None: any)."""

    label: str
    path: str
    target_ms: float | None
    items: int | None = 100
    samples: list[float] = field(default_factory=list)
    #: instead of the client's (the reader's token)
    headers: dict[str, str] | None = None


def cursor_for(*key: Any) -> str:
    from watcher.read.model import encode_cursor

    return encode_cursor(list(key))


def cases(events: int) -> list[Case]:
    """The issue's pages, plus extras that show where the cost moves with the data."""
    deep = cursor_for(events // 2)
    tags = f"/api/v1/registries/{BIG_REGISTRY}/repositories/{BIG_REPOSITORY}/tags"
    middle = datetime(2026, 6, 1, tzinfo=UTC)
    rare = RARE_REPOSITORY
    page = TARGET_PAGE_MS
    return [
        Case("/healthz (floor)", "/healthz", None, None),
        Case("events, first page", "/api/v1/events?limit=100", page),
        Case("events, deep (id ~ half)", f"/api/v1/events?limit=100&cursor={deep}", page),
        Case("events, hot repository (5 %)", f"/api/v1/events?limit=100&repository={HOT_REPOSITORY}", page),
        Case("events, a repository (0.1 %)", f"/api/v1/events?limit=100&repository={rare}", page, None),
        Case(
            "events, registry+repo (0.01 %)",
            f"/api/v1/events?limit=100&registry={registry_name(3)}&repository={rare}",
            page,
            None,
        ),
        Case("events, registry (10 %)", f"/api/v1/events?limit=100&registry={registry_name(2)}", page),
        Case("events, tag (extra)", "/api/v1/events?limit=100&tag=1.5.5", None, None),
        Case("tags by name, first", f"{tags}?limit=100", page),
        Case("tags by name, deep", f"{tags}?limit=100&cursor={cursor_for(BIG_REPOSITORY, '1.50.0')}", page),
        Case("tags by push, first", f"{tags}?limit=100&order=pushed_at", page),
        Case(
            "tags by push, deep",
            f"{tags}?limit=100&order=pushed_at&cursor={cursor_for(middle, 10**9)}",
            page,
        ),
        Case("repositories (extra)", f"/api/v1/registries/{BIG_REGISTRY}/repositories?limit=100", None),
        Case("/metrics", "/metrics", TARGET_METRICS_MS, None, headers=METRICS_AUTH),
    ]


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile: an observed value, never an interpolation."""
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))]


def measure_http(base: str, token: str, all_cases: list[Case], requests: int, warmup: int) -> None:
    """Round by round, each case once per round, so load from elsewhere hits every case alike. A case slower
    than 2 s after its warm-up (a scan of the history) is measured 20 times only, to keep the run short."""
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=base, headers=headers, timeout=60) as client:
        budget: dict[str, int] = {}
        for case in all_cases:
            times = [timed_get(client, case) for _ in range(warmup)]
            budget[case.label] = requests if statistics.median(times) < 2.0 else min(requests, 20)
        for round_ in range(requests):
            for case in all_cases:
                if round_ < budget[case.label]:
                    case.samples.append(timed_get(client, case))


def timed_get(client: httpx.Client, case: Case) -> float:
    started = time.perf_counter()
    response = client.get(case.path, headers=case.headers)
    elapsed = time.perf_counter() - started
    if response.status_code != 200:
        raise RuntimeError(f"{case.path}: HTTP {response.status_code} {response.text[:300]}")
    if case.items is not None and len(response.json()["items"]) != case.items:
        raise RuntimeError(f"{case.path}: {len(response.json()['items'])} items, expected {case.items}")
    return elapsed


def http_table(all_cases: list[Case]) -> tuple[list[str], list[str]]:
    """The table's lines, and the misses."""
    floor = next(c for c in all_cases if c.label.startswith("/healthz"))
    floor_p50, floor_p95 = percentile(floor.samples, 50) * 1000, percentile(floor.samples, 95) * 1000
    lines = [f"{'request':<32} {'n':>4} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8} {'p95/floor':>9}  target"]
    misses = []
    for case in all_cases:
        p50, p95 = percentile(case.samples, 50) * 1000, percentile(case.samples, 95) * 1000
        verdict = "-"
        if case.target_ms is not None:
            ok = p95 <= case.target_ms
            verdict = f"<= {case.target_ms:.0f} ms: {'OK' if ok else 'MISSED'}"
            if not ok:
                misses.append(f"{case.label}: p95 {p95:.1f} ms > {case.target_ms:.0f} ms")
        lines.append(
            f"{case.label:<32} {len(case.samples):>4} {p50:>8.1f} {p95:>8.1f} {max(case.samples) * 1000:>8.1f}"
            f" {p95 / floor_p95:>9.1f}  {verdict}"
        )
    lines.append(f"(floor: /healthz p50 {floor_p50:.1f} ms, p95 {floor_p95:.1f} ms, same client, same rounds)")
    return lines, misses


# ---- watcher status --------------------------------------------------------------------------------
def measure_status(inst: Installation, runs: int) -> tuple[list[str], list[str]]:
    """`watcher status` as a process (start included) beside `watcher --version` (the start alone), then
    the in-process `registry_statuses` call."""
    from watcher.db import session_scope
    from watcher.read.model import registry_statuses
    from watcher.schema import DEFAULT_WORKSPACE_ID

    env = {**os.environ, **inst.env}
    cli, floor = [], []
    for _ in range(runs):
        cli.append(run_timed([str(VENV_BIN / "watcher"), "status"], env, inst.tmp))
        floor.append(run_timed([str(VENV_BIN / "watcher"), "--version"], env, inst.tmp))
    calls = []
    for _ in range(runs * 3):
        started = time.perf_counter()
        with session_scope() as session:
            count = len(registry_statuses(session, workspace_id=DEFAULT_WORKSPACE_ID))
        calls.append(time.perf_counter() - started)
    if count != REGISTRIES:
        raise RuntimeError(f"registry_statuses returned {count} registries")
    lines = [f"{'command':<36} {'n':>4} {'p50 s':>7} {'p95 s':>7} {'max s':>7}  target"]
    misses = []
    for label, samples, target in (
        ("watcher status (1,000 registries)", cli, TARGET_STATUS_S),
        ("watcher --version (floor)", floor, None),
        ("registry_statuses() in process", calls, None),
    ):
        p95 = percentile(samples, 95)
        verdict = "-" if target is None else f"<= {target:.0f} s: {'OK' if p95 <= target else 'MISSED'}"
        if target is not None and p95 > target:
            misses.append(f"{label}: p95 {p95:.2f} s > {target:.0f} s")
        lines.append(
            f"{label:<36} {len(samples):>4} {percentile(samples, 50):>7.3f} {p95:>7.3f} {max(samples):>7.3f}  {verdict}"
        )
    return lines, misses


def run_timed(argv: list[str], env: dict[str, str], cwd: Path) -> float:
    started = time.perf_counter()
    result = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: exit {result.returncode}: {result.stderr[-500:]}")
    return elapsed


# ---- SSE ------------------------------------------------------------------------------------------
@dataclass
class SseRun:
    committed: dict[int, float] = field(default_factory=dict)  # event id -> perf_counter after commit
    received: dict[int, list[float]] = field(default_factory=dict)  # event id -> receive times


async def sse_client(client: httpx.AsyncClient, run: SseRun, ready: asyncio.Event, counter: list[int]) -> None:
    """One dashboard: reads the stream, notes when each event id arrives."""
    async with client.stream("GET", "/api/v1/events/stream") as response:
        if response.status_code != 200:
            raise RuntimeError(f"stream: HTTP {response.status_code}")
        async for line in response.aiter_lines():
            if line.startswith(": connected"):
                counter[0] += 1
                if counter[0] >= counter[1]:
                    ready.set()
            elif line.startswith("id: "):
                run.received.setdefault(int(line[4:]), []).append(time.perf_counter())


def commit_event(index: int) -> tuple[int, float]:
    """One event committed as a poll commits it: the app's `new_event`, the ORM, one transaction."""
    from watcher.db import session_scope
    from watcher.diff import Change, ChangeKind
    from watcher.models import utcnow
    from watcher.outbox.events import new_event

    change = Change(ChangeKind.ADDED, HOT_REPOSITORY, f"sse-{index}", digest_of("sse", index))
    with session_scope() as session:
        row = new_event(1, BIG_REGISTRY, "https://hub.registry.example.com", change, utcnow())
        session.add(row)
        session.flush()
        event_id = row.id
    return event_id, time.perf_counter()


async def measure_sse(base: str, token: str, clients: int, events: int, gap: float) -> tuple[list[str], list[str]]:
    """CLIENTS streams; EVENTS commits GAP s apart (with jitter, so the feed's polling phase is sampled
    evenly); every (event, client) latency from commit to the event's `id:` line arriving."""
    run = SseRun()
    ready = asyncio.Event()
    counter = [0, clients]
    limits = httpx.Limits(max_connections=clients + 5, max_keepalive_connections=clients + 5)
    headers = {"Authorization": f"Bearer {token}"}
    timeout = httpx.Timeout(30, read=60)
    async with httpx.AsyncClient(base_url=base, headers=headers, limits=limits, timeout=timeout) as client:
        tasks = [asyncio.create_task(sse_client(client, run, ready, counter)) for _ in range(clients)]
        await asyncio.wait_for(ready.wait(), 60)
        await asyncio.sleep(1.0)  # the feed has read its starting point
        rng = random.Random(3)
        for i in range(events):
            event_id, at = await asyncio.to_thread(commit_event, i)
            run.committed[event_id] = at
            await asyncio.sleep(gap * (0.5 + rng.random()))
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not all(len(run.received.get(i, [])) >= clients for i in run.committed):
            await asyncio.sleep(0.1)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    latencies = [t - at for i, at in run.committed.items() for t in run.received.get(i, [])]
    expected = clients * len(run.committed)
    p50, p95 = percentile(latencies, 50), percentile(latencies, 95)
    ok = p95 <= TARGET_SSE_S and len(latencies) == expected
    lines = [
        f"SSE: {clients} clients x {len(run.committed)} events: {len(latencies)}/{expected} deliveries; "
        f"commit -> received p50 {p50 * 1000:.0f} ms, p95 {p95 * 1000:.0f} ms, max {max(latencies) * 1000:.0f} ms"
        f" (target p95 <= {TARGET_SSE_S:.0f} s: {'OK' if ok else 'MISSED'})"
    ]
    misses = [] if ok else [lines[0]]
    return lines, misses


# ---- query plans ----------------------------------------------------------------------------------
def explain(engine: Engine, call: Callable[[Any], object]) -> list[str]:
    """The plan of every SELECT the read-model call makes, and the time each takes run alone with its rows
    fetched (SQLite computes rows as they are fetched, so the time inside `execute` alone says little):
    the evidence for where a page's time goes, the database or Python."""
    from watcher.db import session_scope

    statements: list[tuple[str, Any]] = []

    def capture(_conn: Any, _cursor: Any, statement: str, parameters: Any, _context: Any, _many: bool) -> None:
        statements.append((statement, parameters))

    with session_scope() as session:
        call(session)  # warm: lazy imports and caches are the first call's alone
    event.listen(engine, "before_cursor_execute", capture)
    started = time.perf_counter()
    try:
        with session_scope() as session:
            call(session)
    finally:
        total = time.perf_counter() - started
        event.remove(engine, "before_cursor_execute", capture)
    prefix = "EXPLAIN (ANALYZE, BUFFERS) " if engine.dialect.name == "postgresql" else "EXPLAIN QUERY PLAN "
    lines: list[str] = []
    in_sql = 0.0
    raw = engine.raw_connection()
    try:
        cursor = raw.cursor()
        for statement, parameters in statements:
            if not statement.lstrip().upper().startswith("SELECT") or "WHERE registries.name = " in statement:
                continue  # the registry lookup by its unique name
            started = time.perf_counter()
            cursor.execute(statement, parameters)
            rows = len(cursor.fetchall())
            alone = time.perf_counter() - started
            in_sql += alone
            cursor.execute(prefix + statement, parameters)
            lines.append(f"  [{alone * 1000:.1f} ms, {rows} rows] " + " ".join(statement.split())[:300])
            lines += ["    " + " | ".join(str(v) for v in row) for row in cursor.fetchall()]
        raw.rollback()
    finally:
        raw.close()
    summary = f"  whole call {total * 1000:.1f} ms; its SELECTs run alone, rows fetched: {in_sql * 1000:.1f} ms"
    return [summary, *lines]


def metrics_collect(_session: Any) -> None:
    from watcher.web.metrics import gather

    gather()


def plans(engine: Engine, events: int) -> list[str]:
    from watcher.read.model import EventFilters, events_page, images_page, registry_statuses
    from watcher.schema import DEFAULT_WORKSPACE_ID

    deep = cursor_for(events // 2)
    middle = cursor_for(datetime(2026, 6, 1, tzinfo=UTC), 10**9)
    ws = DEFAULT_WORKSPACE_ID
    queries: list[tuple[str, Callable[[Any], object]]] = [
        ("events, first page", lambda s: events_page(s, workspace_id=ws)),
        ("events, deep", lambda s: events_page(s, cursor=deep, workspace_id=ws)),
        (
            "events, hot repository",
            lambda s: events_page(s, EventFilters(repository=HOT_REPOSITORY), workspace_id=ws),
        ),
        (
            "events, a repository",
            lambda s: events_page(s, EventFilters(repository=RARE_REPOSITORY), workspace_id=ws),
        ),
        (
            "events, registry+repo (0.01 %)",
            lambda s: events_page(
                s, EventFilters(registry=registry_name(3), repository=RARE_REPOSITORY), workspace_id=ws
            ),
        ),
        ("events, registry", lambda s: events_page(s, EventFilters(registry=registry_name(2)), workspace_id=ws)),
        ("events, tag", lambda s: events_page(s, EventFilters(tag="1.5.5"), workspace_id=ws)),
        ("tags by name, first", lambda s: images_page(s, BIG_REGISTRY, BIG_REPOSITORY, workspace_id=ws)),
        (
            "tags by push, deep",
            lambda s: images_page(s, BIG_REGISTRY, BIG_REPOSITORY, order="pushed_at", cursor=middle, workspace_id=ws),
        ),
        ("registry_statuses", lambda s: registry_statuses(s, workspace_id=ws)),
    ]
    lines = ["-- /metrics", *metrics_breakdown(), "-- /metrics, its SQL", *explain(engine, metrics_collect)]
    for label, call in queries:
        lines.append(f"-- {label}")
        lines += explain(engine, call)
    return lines


def metrics_breakdown() -> list[str]:
    """Where a scrape's time goes: gathering (SQL and Python) against rendering the text format."""
    from watcher.web.metrics import gather, render

    started = time.perf_counter()
    gathered = gather()
    middle = time.perf_counter()
    body = render(gathered)
    whole = time.perf_counter() - started
    samples = sum(1 for line in body.splitlines() if line and not line.startswith("#"))
    return [
        f"  /metrics in process: gathering {(middle - started) * 1000:.0f} ms; gathering + rendering"
        f" {whole * 1000:.0f} ms; {samples:,} samples, {len(body):,} bytes"
    ]


# ---- main -----------------------------------------------------------------------------------------
def machine() -> str:
    load = os.getloadavg()
    return (
        f"{os.cpu_count()} CPUs, Python {platform.python_version()}, load average "
        f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"
    )


def run(args: argparse.Namespace) -> int:
    """Seed, serve, measure; print the tables and the plans; 1 if a target was missed."""
    from watcher.db import get_engine

    print(
        f"read side on {args.db}: {args.events:,} events, {args.polls_per_registry} polls per registry; {machine()}",
        flush=True,
    )
    with installation(args.db) as inst:
        engine = get_engine()
        started = time.perf_counter()
        seed(engine, args.events, args.polls_per_registry)
        print(f"seeding took {time.perf_counter() - started:.1f} s", flush=True)
        token = create_token()
        misses: list[str] = []
        with app_server(inst) as base:
            all_cases = cases(args.events)
            started = time.perf_counter()
            measure_http(base, token, all_cases, args.requests, args.warmup)
            lines, missed = http_table(all_cases)
            print(
                f"\nHTTP, {args.requests} rounds after {args.warmup} warm-up ({time.perf_counter() - started:.0f} s;"
                f" {machine()}):"
            )
            print("\n".join(lines), flush=True)
            misses += missed
            lines, missed = measure_status(inst, args.status_runs)
            print(f"\nwatcher status ({machine()}):\n" + "\n".join(lines), flush=True)
            misses += missed
            lines, missed = asyncio.run(measure_sse(base, token, args.clients, args.sse_events, args.gap))
            print(f"\n{machine()}\n" + "\n".join(lines), flush=True)
            misses += missed
        if args.plans:
            print(f"\nquery plans ({args.db}):\n" + "\n".join(plans(engine, args.events)))
    print("\n" + ("targets missed:\n  " + "\n  ".join(misses) if misses else "all targets met"))
    return 1 if misses else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--db", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--events", type=int, default=1_000_000, help="events in the history")
    parser.add_argument("--polls-per-registry", type=int, default=POLLS_PER_REGISTRY, help="poll runs kept each")
    parser.add_argument("--requests", type=int, default=200, help="measured requests per case")
    parser.add_argument("--warmup", type=int, default=10, help="unmeasured requests per case first")
    parser.add_argument("--status-runs", type=int, default=10, help="`watcher status` processes timed")
    parser.add_argument("--clients", type=int, default=50, help="SSE clients")
    parser.add_argument("--sse-events", type=int, default=30, help="events committed to the SSE clients")
    parser.add_argument("--gap", type=float, default=0.5, help="mean seconds between SSE commits")
    parser.add_argument("--no-plans", dest="plans", action="store_false", help="skip the EXPLAIN output")
    args = parser.parse_args(argv)
    threading.current_thread().name = "read-side"
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
