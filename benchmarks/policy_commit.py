"""What policies cost the transaction that commits a repository (issue 16, "Speed"), on SQLite or
PostgreSQL, every figure beside its floor measured in the same run.

Two throw-away installations, seeded alike: a registry `bench` with `app`, a repository of TAGS (10,000)
tags of the shapes `benchmarks.policy_select` makes (their images' creation times stored, as image metadata
would), and `svc`, one of SVC_TAGS (1,000). Installation **P** also holds policies: the ten mixed strategies
of `policy_select` on `app`, and UNRELATED (1,000) policies on other repositories (half of `bench`, half of
another registry); installation **0** holds none. Then:

1. `watcher.policies.evaluation.reevaluate` of `app`'s ten policies in P, in a real transaction as a poll's
   commit calls it (the rows locked and read, the creation times read for the newest-build ones, each
   selection made, the rows updated), process CPU, best of RUNS: **warm** (the tags' sort keys kept from the
   last selection, as in a worker that selected in that repository before: a change brings a few new tags)
   and **cold** (every key computed), with nothing said of the change (every tag ranked: what creating or
   editing a policy costs); then **after 1 moved tag** (a tag no policy selects), with `app`'s rows before
   the change handed over as `saving._select` does, so that a policy the change cannot move ranks nothing
   (`strategies.reselect`). Target: after 1 moved tag, warm ≤ TARGET ms (100). Its floor, measured just
   before: the ten `select` calls alone over the same tags (`policy_select`'s figure), warm.
2. The commit of one moved tag of `app` (`watcher.polling.saving.save`: the whole transaction, tags, events
   and selections), in P and in 0 alternately, RUNS times each: CPU and wall, median, and P ÷ 0 — what the
   ten policies add to the commit they ride on.
3. The commit of one moved tag of `svc`, which no policy watches, in P and in 0 alternately (60 times
   each: it is a commit of a few ms, whose median needs more runs to settle): P ÷ 0 must be
   about 1.00 (target ≤ `--unrelated-target`, 1.05): a thousand policies elsewhere cost the commit nothing
   but one indexed query that finds no row.

CPU is this process's (`time.process_time`): on PostgreSQL the server's own work shows in the wall time only.
Exits 1 when a target is missed.

Run from the repository root: `.venv/bin/python -m benchmarks.policy_commit --db sqlite` (and `--db
postgresql`: WATCHER_BENCH_PG, default postgresql://postgres@127.0.0.1:5432/postgres).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, insert

from benchmarks import throwaway
from benchmarks.policy_select import POLICIES, best_of, forget, make_tags
from watcher.policies import select

SVC_TAGS = 1000
UNRELATED = 1000


@dataclass
class Side:
    """One installation: its engine, and what a poll of `bench` commits against (a `saving.Target`)."""

    name: str
    engine: Engine
    target: Any
    tags: dict[str, dict[str, Any]]


@contextlib.contextmanager
def installations(db: str) -> Iterator[tuple[str, str]]:
    """Two throw-away states; this process's settings are the first's (the engines name their URLs)."""
    with throwaway.state(db, "policy-p") as with_policies, throwaway.state(db, "policy-0") as without:
        os.environ.update(with_policies.env)
        from watcher.settings import get_settings

        get_settings.cache_clear()
        yield with_policies.url, without.url


def seed(name: str, url: str, tags: int, policies: bool) -> Side:
    """The registry, its two repositories (a baseline commit each), the images, and the policies."""
    from watcher import schema
    from watcher.db import get_engine, session_scope
    from watcher.diff import TagState
    from watcher.policies.store import PolicySpec, save
    from watcher.polling.saving import Listed, Target
    from watcher.polling.saving import save as commit
    from watcher.polling.snapshot import fingerprint
    from watcher.registrations import store
    from watcher.registrations.scope import Scope
    from watcher.registrations.spec import RegistrySpec

    engine = get_engine(url)
    with session_scope(engine) as session:
        row, _ = store.save(session, RegistrySpec("bench", "oci", "https://registry.example"), admitted=True)
        store.save(session, RegistrySpec("other", "oci", "https://other.example"), admitted=True)
        target = Target.of(row, row.url, Scope.from_options({}), emit_new=True)
    candidates = make_tags(tags, seed=16)
    app = {c.tag: TagState(c.digest, c.pushed_at) for c in candidates}
    svc = {f"build-{i:05d}": TagState(f"sha256:{i + 10**6:064x}", None) for i in range(SVC_TAGS)}
    commit(engine, target, [Listed("app", app, fingerprint(app), None), Listed("svc", svc, fingerprint(svc), None)])
    now = datetime.now(UTC)
    with session_scope(engine) as session:
        images: list[dict[str, Any]] = [
            {"digest": c.digest, "kind": "image", "created": c.created, "fetched_at": now} for c in candidates
        ]
        session.execute(insert(schema.images), images)
    if policies:
        for n, policy in enumerate(POLICIES.values()):
            with session_scope(engine) as session:
                save(session, PolicySpec(f"p{n:02d}", "bench", "app", policy), workspace_id=target.workspace_id)
        with session_scope(engine) as session:
            registries = {r.name: r.id for r in session.execute(schema.registries.select())}
            rows = [
                {
                    "workspace_id": target.workspace_id,
                    "name": f"unrelated-{n:04d}",
                    "registry_id": registries["bench" if n % 2 else "other"],
                    "repository": f"team/service-{n:04d}",
                    "strategy": "semver",
                    "argument": "^1",
                    "created_at": now,
                    "updated_at": now,
                }
                for n in range(UNRELATED)
            ]
            session.execute(insert(schema.policies), rows)
    return Side(name, engine, target, {"app": dict(app), "svc": dict(svc)})


def commit_one(side: Side, repository: str, n: int) -> tuple[float, float]:
    """Move one tag of `repository` to a new digest and commit it as a poll does: (CPU s, wall s)."""
    from watcher.db import session_scope
    from watcher.diff import TagState
    from watcher.polling.saving import Listed
    from watcher.polling.saving import save as commit
    from watcher.polling.snapshot import fingerprint, stored_repositories

    tags = side.tags[repository]
    names = sorted(tags)
    moved = names[(n * 7919) % len(names)]
    tags[moved] = TagState(f"sha256:{n + 10**9:064x}", tags[moved].pushed_at)
    with session_scope(side.engine) as session:
        stored = stored_repositories(session, side.target.registry_id)[repository]
    listed = Listed(repository, dict(tags), fingerprint(tags), stored)
    wall, cpu = time.perf_counter(), time.process_time()
    saved = commit(side.engine, side.target, [listed])
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    assert not saved[0].conflict and any(e.change == "updated" for e in saved[0].events), saved
    return cpu, wall


def reevaluate_ms(
    side: Side, runs: int, before: Callable[[], None] | None = None, rows: dict[str, Any] | None = None
) -> tuple[float, int]:
    """The least CPU of `reevaluate` over `app`'s tags in a transaction, in ms; how many policies it read.
    `rows`: `app`'s rows before a change, handed over as a poll's commit does (`saving._select`)."""
    from watcher.db import session_scope
    from watcher.policies.evaluation import reevaluate
    from watcher.schema import utcnow

    best, count = float("inf"), 0
    for _ in range(runs):
        if before is not None:
            before()
        with session_scope(side.engine) as session:
            started = time.process_time()
            reevaluate(session, side.target, {"app": side.tags["app"]}, utcnow(), before=rows)
            best = min(best, time.process_time() - started)
            count = session.execute(policies_of_app(side)).scalar_one()
    return best * 1000, count


def one_moved(side: Side) -> dict[str, Any]:
    """`app`'s rows as they were before one tag that no policy selects moved to its digest now (a 1-tag
    change, as `commit_one` makes, in the form `saving._select` hands it over)."""
    from sqlalchemy import select

    from watcher import schema
    from watcher.db import session_scope

    with session_scope(side.engine) as session:
        selected = set(session.execute(select(schema.policies.c.selected_tag)).scalars())
    tags = side.tags["app"]
    rows = {tag: (n, state.digest, state.pushed_at) for n, (tag, state) in enumerate(tags.items())}
    moved = next(tag for tag in sorted(tags) if tag not in selected)
    rows[moved] = (rows[moved][0], f"sha256:{'f' * 64}", None)
    return {"app": rows}


def policies_of_app(side: Side) -> Any:
    from sqlalchemy import func, select

    from watcher import schema

    table = schema.policies.c
    return select(func.count()).where(table.registry_id == side.target.registry_id, table.repository == "app")


def alternate(sides: tuple[Side, Side], repository: str, runs: int) -> dict[str, list[tuple[float, float]]]:
    """`runs` commits of one moved tag on each side, alternating (which side goes first alternates too)."""
    found: dict[str, list[tuple[float, float]]] = {side.name: [] for side in sides}
    for n in range(runs + 1):
        for side in sides if n % 2 else reversed(sides):
            figure = commit_one(side, repository, n)
            if n:  # the first round warms both sides up
                found[side.name].append(figure)
    return found


def ratio_line(label: str, found: dict[str, list[tuple[float, float]]]) -> float:
    cpu = {name: statistics.median(c for c, _ in runs) * 1000 for name, runs in found.items()}
    wall = {name: statistics.median(w for _, w in runs) * 1000 for name, runs in found.items()}
    ratio = cpu["P"] / cpu["0"]
    print(
        f"  {label:44} CPU {cpu['P']:7.2f} vs {cpu['0']:7.2f} ms = {ratio:4.2f}x   "
        f"wall {wall['P']:7.2f} vs {wall['0']:7.2f} ms = {wall['P'] / wall['0']:4.2f}x"
    )
    return ratio


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--tags", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--unrelated-runs", type=int, default=60, help="commits of `svc` on each side")
    parser.add_argument("--target", type=float, default=100.0, help="ms of CPU to re-evaluate ten policies, warm")
    parser.add_argument("--unrelated-target", type=float, default=1.05)
    opts = parser.parse_args(argv)
    with installations(opts.db) as (url_p, url_0):
        sides = (seed("P", url_p, opts.tags, policies=True), seed("0", url_0, opts.tags, policies=False))
        print(
            f"{opts.db}: `app` {opts.tags:,} tags, `svc` {SVC_TAGS:,}; P: {len(POLICIES)} policies on `app` + "
            f"{UNRELATED:,} elsewhere, 0: none; Python {platform.python_version()}, load {os.getloadavg()[0]:.1f}"
        )
        candidates = make_tags(opts.tags, seed=16)
        alone = best_of(opts.runs, lambda: [select(policy, candidates) for policy in POLICIES.values()])
        warm, count = reevaluate_ms(sides[0], opts.runs)
        cold, _ = reevaluate_ms(sides[0], opts.runs, before=forget)
        print(f"  reevaluate `app`'s {count} policies: warm {warm:.1f} ms CPU, cold {cold:.1f} ms", end="")
        print(f" (target: warm <= {opts.target:.0f}); the ten selections alone {alone:.1f} ms: {warm / alone:.2f}x")
        rows = one_moved(sides[0])
        moved, _ = reevaluate_ms(sides[0], opts.runs, rows=rows)
        moved_cold, _ = reevaluate_ms(sides[0], opts.runs, before=forget, rows=rows)
        print(
            f"  … after 1 moved tag, as the commit calls it: warm {moved:.1f} ms CPU, cold {moved_cold:.1f} ms "
            f"(target: warm <= {opts.target:.0f}); {moved / alone:.2f}x the ten selections alone"
        )
        ratio_line(f"commit 1 moved tag of `app` (P: {count} policies)", alternate(sides, "app", opts.runs))
        unrelated = ratio_line(
            "commit 1 moved tag of `svc` (no policy on it)", alternate(sides, "svc", opts.unrelated_runs)
        )
        for side in sides:
            side.engine.dispose()
    failed = []
    if moved > opts.target:
        failed.append(f"re-evaluating the ten policies after a change took {moved:.1f} ms, over {opts.target:.0f}")
    if unrelated > opts.unrelated_target:
        failed.append(f"unrelated policies cost the commit {unrelated:.2f}x, over {opts.unrelated_target:.2f}x")
    for line in failed:
        print("MISSED:", line)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
