"""Isolation costs nothing measurable (issue 15): the API's events and tags pages of one workspace among 10,
each with 100,000 events, against the same pages of a deployment with that one workspace alone.

Two throw-away installations (`benchmarks.read_side.installation`), seeded in bulk the same way: `single`
holds one workspace, `shared` holds WORKSPACES workspaces that are copies of it — the same registry names
(10 registries with the history, `hub` with a 10,000-tag repository and 90 of 100 tags), the same
repository and tag names, EVENTS events each, their ids interleaved as teams active at the same time write
them. Both apps run (`watcher serve`, each its own process); one client asks each page of both, round by
round, alternating which goes first, so load from elsewhere hits both alike. The shared deployment is read
with a reader token of its workspace 5 (the middle of the id space).

Target: each page's p95 in the shared deployment within 1.1x of the single one's (the p50 ratio is shown
too: on a noisy machine it is the steadier). Exit status 1 if a p95 ratio is over.

Run from the repository root: `.venv/bin/python -m benchmarks.read_workspaces --db sqlite` (or `postgresql`).
"""

from __future__ import annotations

import argparse
import contextlib
import random
import statistics
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import Engine, text

from benchmarks.read_side import (
    BIG_REGISTRY,
    BIG_REPOSITORY,
    BIG_TAGS,
    EVENT_COLUMNS,
    EVENT_REGISTRIES,
    HOT_REPOSITORY,
    NOW,
    RARE_REPOSITORY,
    REGISTRY_COLUMNS,
    Installation,
    Row,
    bulk_insert,
    cursor_for,
    digest_of,
    event_rows,
    installation,
    machine,
    percentile,
    registry_name,
    served,
)

WORKSPACES = 10
EVENTS = 100_000  # per workspace
READ_WORKSPACE = 5  # the shared deployment's workspace that is read
OTHER_REPOSITORIES, OTHER_TAGS = 90, 100  # the big registry's other repositories, each workspace's
TARGET_RATIO = 1.1


# ---- seeding --------------------------------------------------------------------------------------
def workspace_name(number: int) -> str:
    return "default" if number == 1 else f"team-{number:02d}"


def registry_id(workspace: int, index: int) -> int:
    return (workspace - 1) * EVENT_REGISTRIES + index


def registry_rows(workspaces: int) -> Iterator[Row]:
    """Each workspace's EVENT_REGISTRIES registries, named alike in every workspace."""
    for w in range(1, workspaces + 1):
        for i in range(1, EVENT_REGISTRIES + 1):
            name = registry_name(i)
            yield (
                registry_id(w, i),
                name,
                "oci",
                f"https://{name}.registry.example.com",
                "",
                "{}",
                300,
                False,
                True,
                NOW + timedelta(seconds=i),
                NOW - timedelta(days=90),
                w,
            )


def repository_rows(workspaces: int) -> list[Row]:
    """Each workspace's big registry: BIG_REPOSITORY (10,000 tags) and OTHER_REPOSITORIES of OTHER_TAGS."""
    rows: list[Row] = []
    for w in range(1, workspaces + 1):
        hub = registry_id(w, 1)
        rows.append((len(rows) + 1, hub, BIG_REPOSITORY, NOW - timedelta(days=90)))
        rows += [
            (len(rows) + 1 + r, hub, f"team-{r % 30:02d}/service-{r:04d}", NOW - timedelta(days=60))
            for r in range(OTHER_REPOSITORIES)
        ]
    return rows


def tag_rows(repositories: list[Row]) -> Iterator[Row]:
    """The same tags in every workspace's copy (one random sequence per workspace, the same seed)."""
    tag_id = 0
    rng = random.Random(7)
    for repo_id, _registry, name, _seen in repositories:
        if name == BIG_REPOSITORY:
            rng = random.Random(7)
        for t in range(BIG_TAGS if name == BIG_REPOSITORY else OTHER_TAGS):
            tag_id += 1
            pushed = None if rng.random() < 0.1 else NOW - timedelta(seconds=rng.randrange(365 * 86400))
            yield tag_id, repo_id, f"1.{t // 100}.{t % 100}", digest_of(name, t), pushed


def copy_events(engine: Engine, workspaces: int) -> None:
    """`events_template` copied into every workspace, in the database and in id order (a Python row each
    would make seeding a million events take many minutes): the workspaces' events interleaved, as teams
    that write at the same time would, each with its own registries and event ids. The history's indexes
    are built after the load (in both deployments alike: the pages are compared on equal indexes)."""
    from watcher.schema import events

    columns = [c for c in EVENT_COLUMNS if c not in ("id", "event_id", "registry_id")]
    listed = ", ".join(columns)
    indexes = sorted(events.indexes, key=lambda index: str(index.name))
    with engine.begin() as conn:
        for index in indexes:
            index.drop(conn)
        conn.execute(
            text(
                f"INSERT INTO events (id, event_id, registry_id, workspace_id, {listed}) "
                f"SELECT (t.id - 1) * {workspaces} + w.id, t.event_id || '-' || w.id, "
                f"t.registry_id + (w.id - 1) * {EVENT_REGISTRIES}, w.id, {', '.join(f't.{c}' for c in columns)} "
                "FROM events_template t CROSS JOIN workspaces w ORDER BY 1"
            )
        )
        conn.execute(text("DROP TABLE events_template"))
        for index in indexes:
            index.create(conn)
        if engine.dialect.name == "postgresql":
            conn.execute(text("SELECT setval(pg_get_serial_sequence('events', 'id'), (SELECT max(id) FROM events))"))


def seed(engine: Engine, workspaces: int, events: int) -> None:
    bulk_insert(
        engine,
        "workspaces",
        ("id", "name", "created_at"),
        [(w, workspace_name(w), NOW - timedelta(days=100)) for w in range(2, workspaces + 1)],
    )
    with engine.begin() as conn:  # the columns of the events, without their constraints
        conn.execute(text("CREATE TABLE events_template AS SELECT * FROM events WHERE 1 = 0"))
    repositories = repository_rows(workspaces)
    plan: list[tuple[str, tuple[str, ...], Any]] = [
        ("registries", (*REGISTRY_COLUMNS, "workspace_id"), registry_rows(workspaces)),
        ("repositories", ("id", "registry_id", "name", "first_seen_at"), repositories),
        ("tags", ("id", "repository_id", "name", "digest", "pushed_at"), tag_rows(repositories)),
        ("events_template", EVENT_COLUMNS, event_rows(events, unpublished=0)),
    ]
    for table, columns, rows in plan:
        started = time.perf_counter()
        count = bulk_insert(engine, table, columns, rows)
        print(f"  seeded {count:>9,} {table:<15} in {time.perf_counter() - started:6.1f} s", flush=True)
    started = time.perf_counter()
    copy_events(engine, workspaces)
    print(f"  the history copied to {workspaces} workspace(s) in {time.perf_counter() - started:6.1f} s", flush=True)
    if engine.dialect.name == "postgresql":  # what autovacuum does soon after a bulk load
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("VACUUM ANALYZE"))
    else:
        with engine.begin() as conn:
            conn.execute(text("ANALYZE"))


def reader_token(workspace_id: int) -> str:
    """A reader token of the workspace (set on its row: the token commands' workspace is not what is measured)."""
    from watcher.db import session_scope
    from watcher.registrations import tokens
    from watcher.schema import api_tokens

    with session_scope() as session:
        token = tokens.create(session, "bench", "reader")
        session.execute(api_tokens.update().where(api_tokens.c.name == "bench").values(workspace_id=workspace_id))
    return token


# ---- measuring ------------------------------------------------------------------------------------
@dataclass
class Pair:
    """One page asked of both deployments: its path in each (a deep cursor is an id, and ids differ)."""

    label: str
    single: str
    shared: str
    samples: dict[str, list[float]] = field(default_factory=lambda: {"single": [], "shared": []})


def pairs(events: int, workspaces: int) -> list[Pair]:
    """read_side's events and tags pages; the deep events cursor is half-way down each history."""
    tags = f"/api/v1/registries/{BIG_REGISTRY}/repositories/{BIG_REPOSITORY}/tags"
    middle = datetime(2026, 6, 1, tzinfo=UTC)
    same = [
        ("/healthz (floor)", "/healthz"),
        ("events, first page", "/api/v1/events?limit=100"),
        ("events, hot repository (5 %)", f"/api/v1/events?limit=100&repository={HOT_REPOSITORY}"),
        ("events, a repository (0.1 %)", f"/api/v1/events?limit=100&repository={RARE_REPOSITORY}"),
        (
            "events, registry+repo (0.01 %)",
            f"/api/v1/events?limit=100&registry={registry_name(3)}&repository={RARE_REPOSITORY}",
        ),
        ("events, registry (10 %)", f"/api/v1/events?limit=100&registry={registry_name(2)}"),
        ("events, tag", "/api/v1/events?limit=100&tag=1.5.5"),
        ("tags by name, first", f"{tags}?limit=100"),
        ("tags by name, deep", f"{tags}?limit=100&cursor={cursor_for(BIG_REPOSITORY, '1.50.0')}"),
        ("tags by push, first", f"{tags}?limit=100&order=pushed_at"),
        ("tags by push, deep", f"{tags}?limit=100&order=pushed_at&cursor={cursor_for(middle, 10**9)}"),
    ]
    found = [Pair(label, path, path) for label, path in same]
    deep_single = cursor_for(events // 2)
    deep_shared = cursor_for((events // 2 - 1) * workspaces + READ_WORKSPACE)  # the same event of its history
    found.insert(
        2,
        Pair(
            "events, deep (half-way)",
            f"/api/v1/events?limit=100&cursor={deep_single}",
            f"/api/v1/events?limit=100&cursor={deep_shared}",
        ),
    )
    return found


def measure(bases: dict[str, str], tokens: dict[str, str], all_pairs: list[Pair], rounds: int, warmup: int) -> None:
    clients = {
        kind: httpx.Client(base_url=bases[kind], headers={"Authorization": f"Bearer {tokens[kind]}"}, timeout=60)
        for kind in bases
    }
    with contextlib.ExitStack() as stack:
        for client in clients.values():
            stack.enter_context(client)
        for pair in all_pairs:  # both answer alike (the same history, the same tags), and are warm
            bodies = {kind: get(clients[kind], getattr(pair, kind)) for kind in clients}
            for _ in range(warmup):
                for kind in clients:
                    get(clients[kind], getattr(pair, kind))
            if pair.single != "/healthz" and same_items(bodies["single"]) != same_items(bodies["shared"]):
                raise RuntimeError(f"{pair.label}: the two deployments' pages differ")
        for round_ in range(rounds):
            order = ("single", "shared") if round_ % 2 == 0 else ("shared", "single")
            for pair in all_pairs:
                for kind in order:
                    started = time.perf_counter()
                    get(clients[kind], getattr(pair, kind))
                    pair.samples[kind].append(time.perf_counter() - started)


def get(client: httpx.Client, path: str) -> Any:
    response = client.get(path)
    if response.status_code != 200:
        raise RuntimeError(f"{path}: HTTP {response.status_code} {response.text[:300]}")
    return response.json()


def same_items(body: Any) -> list[Any]:
    """A page's items without what differs between the copies (ids, event ids, digests, CloudEvents)."""
    return [
        {k: v for k, v in item.items() if k in ("repository", "tag", "change", "registry", "pushed_at")}
        for item in body["items"]
    ]


def table(all_pairs: list[Pair]) -> tuple[list[str], list[str]]:
    lines = [
        f"{'page':<32} {'n':>4} {'single p50':>10} {'shared p50':>10} {'ratio':>6} "
        f"{'single p95':>10} {'shared p95':>10} {'ratio':>6}  target (p95 ratio)"
    ]
    misses = []
    for pair in all_pairs:
        single, shared = pair.samples["single"], pair.samples["shared"]
        p50s, p50m = percentile(single, 50) * 1000, percentile(shared, 50) * 1000
        p95s, p95m = percentile(single, 95) * 1000, percentile(shared, 95) * 1000
        judged = not pair.label.startswith("/healthz")
        verdict = "-"
        if judged:
            ok = p95m <= TARGET_RATIO * p95s
            verdict = f"<= {TARGET_RATIO}x: {'OK' if ok else 'MISSED'}"
            if not ok:
                misses.append(f"{pair.label}: p95 {p95m:.1f} ms vs {p95s:.1f} ms ({p95m / p95s:.2f}x)")
        lines.append(
            f"{pair.label:<32} {len(single):>4} {p50s:>10.1f} {p50m:>10.1f} {p50m / p50s:>6.2f} "
            f"{p95s:>10.1f} {p95m:>10.1f} {p95m / p95s:>6.2f}  {verdict}"
        )
    medians = [
        percentile(p.samples["shared"], 50) / percentile(p.samples["single"], 50)
        for p in all_pairs
        if not p.label.startswith("/healthz")
    ]
    lines.append(f"(median of the pages' p50 ratios: {statistics.median(medians):.2f})")
    return lines, misses


# ---- main -----------------------------------------------------------------------------------------
@contextlib.contextmanager
def deployment(db: str, workspaces: int, events: int, read: int) -> Iterator[tuple[Installation, str, str]]:
    """A seeded installation served: its base URL and a reader token of workspace `read`."""
    from watcher.db import get_engine

    with installation(db) as inst:
        started = time.perf_counter()
        seed(get_engine(), workspaces, events)
        print(f"  {workspaces} workspace(s) seeded in {time.perf_counter() - started:.1f} s", flush=True)
        token = reader_token(read)
        with served(inst) as (base, _proc):
            yield inst, base, token


def run(args: argparse.Namespace) -> int:
    print(
        f"read pages, 1 workspace vs {args.workspaces} on {args.db}: {args.events:,} events per workspace; {machine()}",
        flush=True,
    )
    with contextlib.ExitStack() as stack:
        print("single:", flush=True)
        _, single_base, single_token = stack.enter_context(deployment(args.db, 1, args.events, 1))
        print("shared:", flush=True)
        _, shared_base, shared_token = stack.enter_context(
            deployment(args.db, args.workspaces, args.events, READ_WORKSPACE)
        )
        all_pairs = pairs(args.events, args.workspaces)
        started = time.perf_counter()
        measure(
            {"single": single_base, "shared": shared_base},
            {"single": single_token, "shared": shared_token},
            all_pairs,
            args.requests,
            args.warmup,
        )
        lines, misses = table(all_pairs)
        print(
            f"\nHTTP, {args.requests} rounds after {args.warmup} warm-up ({time.perf_counter() - started:.0f} s;"
            f" {machine()}):"
        )
        print("\n".join(lines), flush=True)
    print("\n" + ("targets missed:\n  " + "\n  ".join(misses) if misses else "all targets met"))
    return 1 if misses else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--db", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--workspaces", type=int, default=WORKSPACES, help="workspaces in the shared deployment")
    parser.add_argument("--events", type=int, default=EVENTS, help="events in each workspace's history")
    parser.add_argument("--requests", type=int, default=100, help="measured requests per page and deployment")
    parser.add_argument("--warmup", type=int, default=5, help="unmeasured requests per page first")
    args = parser.parse_args(argv)
    if args.workspaces < READ_WORKSPACE:
        parser.error(f"--workspaces must be at least {READ_WORKSPACE}: workspace {READ_WORKSPACE} is the one read")
    threading.current_thread().name = "read-workspaces"
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
