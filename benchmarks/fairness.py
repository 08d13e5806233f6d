"""A fair share of the worker pool: a team with a few registries is polled on time while another team's
registries saturate the pool (issue 15, "Speed and fairness").

One real registry (CNCF Distribution, as the tests run it) holds one repository of one tag per watcher
registry, behind `benchmarks.delay_proxy` (every request held `--delay-ms`, 200). Each watcher registry
watches its own repository by literal name, every minute. Workspaces, in one installation on the embedded
defaults (SQLite and the embedded Redis in a throw-away data dir; `--postgres`: a PostgreSQL database of
its own) with one `watcher run` on its default concurrency:

- `small`: `--small` (3) registries;
- `big`: `--big` (300) registries, enough to saturate the pool — and `--small` more registries exactly like
  `small`'s (*probes*): what `small` would see if its registries were in `big`'s workspace, that is,
  without workspaces taking turns (a single workspace, the dispatch order before issue 15). Measured in
  the same run, under the same load.

Once the worker's pool is up, first `small` and the probes alone for `--floor` seconds (the floor: the lag
of a pool with nothing else to do); then `big` is registered (as one `registry apply` would: first polls
spread over the minute), `--warmup` seconds pass while its baselines run and its backlog builds, and
`--minutes` are measured.

Schedule lag of a scheduled poll: its start (`poll_runs.started_at`) minus the slot it was dispatched for.
The slot is read from the registry's row, sampled every 0.5 s (`due_since` once dispatched, `next_poll_at`
while due and not dispatched), so a lag longer than the interval is not wrapped; a poll dispatched and
started between two samples served the last grid point before its start. Reported per group (p50, p95,
max), with scheduled polls completed a minute against the registries due a minute (the pool is saturated
when it completes fewer), and the broker queue's length.

Target (exit status 1 if missed): `small`'s lag p95 <= 5 s while `big` is saturated.

Run from the repository root (~6 minutes): `.venv/bin/python -m benchmarks.fairness` (`--postgres` for
PostgreSQL).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import redis

from benchmarks.many_registries import Workers, postgres, wait, watcher_env
from benchmarks.poll_speed import delay_proxy, repo_name, seed
from benchmarks.read_side import machine, percentile
from tests.support.registry import RegistryServer

SMALL_P95_TARGET = 5.0
SAMPLE_SECONDS = 0.5


@dataclass(frozen=True)
class Group:
    """Registries reported together: their workspace, names and repositories."""

    label: str
    workspace: str
    names: list[str]
    first_repo: int

    def registry_keys(self) -> list[str]:
        from watcher.registrations.keys import registry_key

        return [registry_key(self.workspace, name) for name in self.names]


def groups(args: argparse.Namespace) -> tuple[Group, Group, Group]:
    small = Group("small (its own workspace)", "small", [f"app-{i}" for i in range(args.small)], 0)
    probes = Group("probes (small's, inside big)", "big", [f"probe-{i}" for i in range(args.small)], args.small)
    big = Group("big", "big", [f"team-{i:04d}" for i in range(args.big)], 2 * args.small)
    return small, probes, big


def create_workspaces(*names: str) -> None:
    """The workspaces, as an operator's `watcher workspace create` will make them."""
    from sqlalchemy import insert

    from watcher.db import session_scope
    from watcher.schema import workspaces

    with session_scope() as session:
        for name in names:
            session.execute(insert(workspaces).values(name=name))


def register(group: Group, url: str, interval: int) -> None:
    """The group's registries, saved together (first polls at their slots, as one `registry apply`)."""
    from watcher.db import session_scope
    from watcher.registrations import store
    from watcher.registrations.spec import RegistrySpec

    with session_scope() as session:
        for i, name in enumerate(group.names):
            spec = RegistrySpec(
                name,
                "oci",
                url,
                options={"repositories": [repo_name(group.first_repo + i)]},
                interval_seconds=interval,
                workspace=group.workspace,
            )
            store.save(session, spec, together=True)


# ---- measuring ------------------------------------------------------------------------------------------
@dataclass
class Samples:
    """Each registry's pending slot (dispatched or due, not started) as sampled, and the queue's length."""

    pending: dict[int, list[tuple[datetime, datetime | None]]] = field(default_factory=dict)
    queue: list[int] = field(default_factory=list)
    #: registries due and not dispatched (left due for lack of room), at each sample
    backlog: list[int] = field(default_factory=list)
    #: the pool's pace (mean seconds a poll), at each sample
    pace: list[float] = field(default_factory=list)


def sampler(client: redis.Redis, samples: Samples, stop: threading.Event) -> None:
    from sqlalchemy import select

    from watcher.db import session_scope
    from watcher.models import Registry, utcnow
    from watcher.polling import pool

    while not stop.wait(SAMPLE_SECONDS):
        with contextlib.suppress(Exception):
            with session_scope() as session:
                at = utcnow()
                rows = session.execute(
                    select(Registry.id, Registry.due_since, Registry.next_poll_at, Registry.lease_until)
                ).all()
            backlog = 0
            for registry_id, due_since, next_poll_at, lease_until in rows:
                free = lease_until is None or lease_until < at
                pending = due_since or (next_poll_at if next_poll_at <= at and free else None)
                backlog += due_since is None and pending is not None
                samples.pending.setdefault(registry_id, []).append((at, pending))
            samples.backlog.append(backlog)
            samples.queue.append(pool.queued(client))
            paces = [float(value.split()[0]) for value in client.hvals(pool.pace_key())]
            samples.pace.append(sum(paces) / len(paces) if paces else 0.0)


@dataclass
class Lags:
    lags: list[float]
    completed: int


def lags_of(group: Group, samples: Samples, since: datetime, until: datetime, interval: int) -> Lags:
    """The group's scheduled polls started in [since, until): each one's lag behind the slot it served."""
    from sqlalchemy import select

    from watcher.db import session_scope
    from watcher.models import PollRun
    from watcher.polling.scheduler import EPOCH, phase_of
    from watcher.registrations import store

    lags: list[float] = []
    completed = 0
    step = timedelta(seconds=interval)
    with session_scope() as session:
        for key in group.registry_keys():
            registry_id = store.find(session, key).id
            runs = session.execute(
                select(PollRun.started_at, PollRun.finished_at).where(
                    PollRun.registry_id == registry_id,
                    PollRun.trigger == "schedule",
                    PollRun.started_at >= since,
                    PollRun.started_at < until,
                )
            ).all()
            seen = samples.pending.get(registry_id, [])
            origin = EPOCH + timedelta(seconds=phase_of(key, interval))
            for started, finished in runs:
                completed += finished is not None
                before = [pending for at, pending in seen if at <= started]
                slot = before[-1] if before and before[-1] is not None else None
                if slot is None:  # dispatched and started between two samples
                    slot = origin + step * ((started - origin) // step)
                lags.append((started - slot).total_seconds())
    return Lags(lags, completed)


def mean(values: list[int] | list[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def line(label: str, registries: int, lags: Lags, minutes: float, interval: int) -> str:
    values = lags.lags or [float("nan")]
    due = registries * 60 / interval
    return (
        f"{label:<30} {registries:>5}  {lags.completed / minutes:>7.1f} ({due:>5.0f})  "
        f"{percentile(values, 50):>6.2f} {percentile(values, 95):>6.2f} {max(values):>6.2f}  {len(lags.lags):>5}"
    )


# ---- the run --------------------------------------------------------------------------------------------
def run(args: argparse.Namespace) -> int:
    tmp = Path(tempfile.mkdtemp(prefix="watcher-fairness-"))
    small, probes, big = groups(args)
    try:
        with RegistryServer(root=tmp / "registry") as registry, postgres(args.postgres) as pg_url:
            started = time.monotonic()
            seed(registry.url, args.big + 2 * args.small, 1, args.seed_workers)
            print(f"seeded {args.big + 2 * args.small} repositories in {time.monotonic() - started:.0f} s")
            with delay_proxy(registry.url, args.delay_ms) as (proxy_url, _):
                env = watcher_env(tmp, pg_url)
                os.environ.update(env)  # this process reads and writes the same state
                create_workspaces("small", "big")
                register(small, proxy_url, args.interval)
                register(probes, proxy_url, args.interval)
                return measure(args, env, tmp, proxy_url, (small, probes, big))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def measure(args: argparse.Namespace, env: dict[str, str], tmp: Path, url: str, all_groups: tuple[Group, ...]) -> int:
    from watcher import bus
    from watcher.models import utcnow
    from watcher.settings import get_settings

    small, probes, big = all_groups
    workers = Workers(env, tmp, 1, args.concurrency)
    samples, stop = Samples(), threading.Event()
    try:
        wait(lambda: bus.socket_path(get_settings()).exists(), 60, "the embedded Redis", workers)
        client = redis.Redis(unix_socket_path=str(bus.socket_path(get_settings())), decode_responses=True)
        from watcher.polling import pool

        wait(lambda: bool(client.hlen(pool.workers_key())), 120, "the worker's pool", workers)
        thread = threading.Thread(target=sampler, args=(client, samples, stop), daemon=True)
        thread.start()
        floor_since = utcnow()  # the worker is up: its start-up is not the floor's lag
        time.sleep(args.floor)
        floor_until = utcnow()
        register(big, url, args.interval)
        print(f"{args.big} registries of big registered; {args.warmup} s of warm-up, then {args.minutes} min measured")
        time.sleep(args.warmup)
        since = utcnow()
        time.sleep(args.minutes * 60)
        until = utcnow()
        alive = workers.alive()
    finally:
        stop.set()
        workers.stop()
    if not alive:
        raise SystemExit(f"`watcher run` exited during the run: see {tmp}")
    floor_minutes = (floor_until - floor_since).total_seconds() / 60
    measured = {g.label: lags_of(g, samples, since, until, args.interval) for g in all_groups}
    floor = {g.label: lags_of(g, samples, floor_since, floor_until, args.interval) for g in (small, probes)}
    print(f"machine: {machine()}")
    print(
        f"every {args.interval} s, one repository of one tag each, through a {args.delay_ms:g} ms proxy; "
        "one `watcher run`"
        f"{f' --concurrency {args.concurrency}' if args.concurrency else ' (default concurrency)'}; "
        f"{'PostgreSQL' if args.postgres else 'SQLite'} + embedded Redis"
    )
    header = f"{'':<30} {'regs':>5}  {'polls/min (due)':>15}  {'lag p50':>6} {'p95':>6} {'max':>6}  {'polls':>5}"
    print(f"\nfloor: small and the probes alone, {floor_minutes * 60:.0f} s\n{header}")
    for g in (small, probes):
        print(line(g.label, len(g.names), floor[g.label], floor_minutes, args.interval))
    print(f"\nbig saturating the pool, {args.minutes} min measured\n{header}")
    for g in all_groups:
        print(line(g.label, len(g.names), measured[g.label], args.minutes, args.interval))
    last = int(args.minutes * 60 / SAMPLE_SECONDS)
    queue, backlog, pace = samples.queue[-last:], samples.backlog[-last:], samples.pace[-last:]
    print(f"broker queue length in the window: max {max(queue, default=0)}, mean {mean(queue):.1f}")
    print(f"a poll took (the pool's pace, mean of the samples) {mean(pace):.2f} s")
    completed = sum(lags.completed for lags in measured.values())
    due = (args.big + 2 * args.small) * args.minutes * 60 / args.interval
    saturated = mean(backlog) >= 1
    print(
        f"pool {'saturated' if saturated else 'NOT saturated'}: {completed} scheduled polls of {due:.0f} due; "
        f"registries left due for lack of room: mean {mean(backlog):.1f}, max {max(backlog, default=0)}"
    )
    p95 = percentile(measured[small.label].lags or [float("inf")], 95)
    missed = []
    if p95 > SMALL_P95_TARGET:
        missed.append(f"small's lag p95 {p95:.2f} s > {SMALL_P95_TARGET:.0f} s")
    if not saturated:
        missed.append("big did not saturate the pool (raise --big or --delay-ms)")
    print("target: " + ("met" if not missed else "MISSED: " + "; ".join(missed)))
    return 1 if missed else 0


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--big", type=int, default=300, help="registries of workspace big")
    parser.add_argument("--small", type=int, default=3, help="registries of workspace small (and probes in big)")
    parser.add_argument("--interval", type=int, default=60, help="seconds")
    parser.add_argument("--delay-ms", type=float, default=200.0, help="the proxy's delay per request")
    parser.add_argument("--floor", type=float, default=60, help="seconds with small and the probes alone")
    parser.add_argument("--warmup", type=float, default=60, help="seconds after big is registered")
    parser.add_argument("--minutes", type=float, default=2.5, help="measured")
    parser.add_argument("--concurrency", type=int, help="of `watcher run` (default: its own)")
    parser.add_argument("--postgres", action="store_true", help="PostgreSQL (WATCHER_BENCH_PG) instead of SQLite")
    parser.add_argument("--seed-workers", type=int, default=16)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    return run(parse(argv))


if __name__ == "__main__":
    sys.exit(main())
