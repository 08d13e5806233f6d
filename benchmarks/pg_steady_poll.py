"""What a steady poll (nothing changed) costs PostgreSQL: statements, transactions, rows written, and the
server's CPU, against the same measurement of other checkouts of watcher in the same run.

One real registry (CNCF Distribution) holds `--registries` x 10 repositories x 3 tags; each watcher registry
watches its own 10 by literal name, every minute, in one PostgreSQL database. Every registry takes its
baseline, then each checkout (this one, and each `--tree NAME=PATH`, e.g. an export of `main`) runs in a process of its
own, in turns, `--rounds` times: every registry polled once more as `watcher run`'s pool would, in batches
of `--batch` (a tick's share at 1,000 registries a minute: its slot falls due, the tick
`scheduler.claim_due` claims it, then `poll.poll` polls it, one after the other in one process). Nothing
changes in the registry, so every poll is steady.

Per steady poll (tick's claim included) it reports, from the client: statements sent (an executemany
counts once), the pool's pre-ping `SELECT 1`s, commits; from the server (`pg_stat_database` of the database,
read once every backend of the run has exited): transactions committed and rolled back, rows inserted,
updated and deleted; the CPU of the run's backends (`/proc`: every backend of the database the run
opened); and this process's own CPU (`time.process_time`: listing, the engine, SQLAlchemy). `--trace`
prints one steady poll's SQL, transaction by transaction.

Run from the repository root (~1-2 minutes at 100 registries):

    git archive main | tar -x -C /tmp/watcher-before
    .venv/bin/python -m benchmarks.pg_steady_poll --tree before=/tmp/watcher-before
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
REPOSITORIES = 10
TAGS = 3
STATS = ("xact_commit", "xact_rollback", "tup_inserted", "tup_updated", "tup_deleted")


def registry_name(index: int) -> str:
    return f"team-{index:05d}"


# ---- the parent: a registry, a database, the registrations, then each checkout in turns ------------------
def run(args: argparse.Namespace) -> int:
    from benchmarks.many_registries import repositories_of, watcher_cli
    from benchmarks.poll_speed import seed
    from benchmarks.read_side import machine
    from benchmarks.throwaway import state
    from tests.support.registry import RegistryServer

    tmp = Path(tempfile.mkdtemp(prefix="watcher-pg-steady-"))
    try:
        with RegistryServer(root=tmp / "registry") as registry, state("postgresql", "pg-steady") as st:
            seed(registry.url, args.registries * REPOSITORIES, TAGS, 16)
            entries = [
                {
                    "name": registry_name(i),
                    "provider": "oci",
                    "url": registry.url,
                    "interval": "60s",
                    "repositories": repositories_of(i, REPOSITORIES),
                }
                for i in range(args.registries)
            ]
            path = tmp / "registries.yaml"
            path.write_text(json.dumps({"registries": entries}))
            env = {**st.env, "WATCHER_LISTEN": "off"}
            watcher_cli(env, "registry", "apply", "-f", str(path), "--no-verify")
            if args.history:
                seed_history(st.url, args.history)
            trees = {"this": ROOT} | {name: Path(path).resolve() for name, path in (t.split("=", 1) for t in args.tree)}
            results: dict[str, list[dict[str, float]]] = {name: [] for name in trees}
            for turn in range(args.rounds):
                for name, tree in trees.items() if turn % 2 == 0 else reversed(trees.items()):
                    results[name].append(child(tree, env, args, trace=args.trace and turn == 0))
            print(f"machine: {machine()}")
            print(
                f"{args.registries} registries x {REPOSITORIES} repositories x {TAGS} tags, PostgreSQL, "
                f"{args.rounds} turns of every registry polled steady once (batches of {args.batch}), "
                f"{args.history:g} h of poll history seeded"
            )
            report(results)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


def seed_history(url: str, hours: float) -> None:
    """Every registry's poll history: one finished run a minute for `hours` before now (a deployment that
    has run a while; the default `WATCHER_POLL_HISTORY_DAYS` keeps 30 days of it)."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO poll_runs (registry_id, started_at, finished_at, outcome, error, repositories, tags, events,"
            " requests, ignored, trigger) SELECT r.id, now() at time zone 'utc' - g * interval '1 minute',"
            " now() at time zone 'utc' - g * interval '1 minute', 'ok', '', 10, 30, 0, 11, 0, 'schedule'"
            " FROM registries r, generate_series(%s, 1, -1) g ORDER BY g DESC, r.id",
            (int(hours * 60),),
        )
        conn.execute("ANALYZE poll_runs")


def child(tree: Path, env: dict[str, str], args: argparse.Namespace, *, trace: bool) -> dict[str, float]:
    """One turn of `tree`'s code in a process of its own (its `watcher` first on the path)."""
    argv = [sys.executable, str(Path(__file__).resolve()), "--child", "--registries", str(args.registries)]
    argv += ["--batch", str(args.batch)] + (["--trace"] if trace else [])
    environ = {**os.environ, **env, "PYTHONPATH": os.pathsep.join([str(tree), str(ROOT)])}
    done = subprocess.run(argv, env=environ, cwd=tmp_cwd(), capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"{tree}: {done.stderr.strip()[-2000:]}")
    lines = done.stdout.strip().splitlines()
    if trace:
        print(f"---- one steady poll's SQL, {tree} ----")
        print("\n".join(lines[:-1]))
    return dict(json.loads(lines[-1]))


def tmp_cwd() -> str:
    return tempfile.gettempdir()  # not the repository root: `watcher` must come from PYTHONPATH


def report(results: dict[str, list[dict[str, float]]]) -> None:
    rows = [
        ("statements sent", "statements"),
        ("pre-ping SELECT 1", "pings"),
        ("commits (client)", "commits"),
        ("transactions (server)", "xacts"),
        ("rows inserted", "tup_inserted"),
        ("rows updated", "tup_updated"),
        ("rows deleted", "tup_deleted"),
        ("PostgreSQL backends' CPU ms", "server_ms"),
        ("WAL writer CPU ms (whole server)", "wal_ms"),
        ("watcher process CPU ms", "client_ms"),
    ]
    names = list(results)
    others = names[1:]
    print(
        f"{'per steady poll (median of turns)':36}"
        + "".join(f"{n:>12}" for n in names)
        + "".join(f"{'this/' + n:>14}" for n in others)
    )
    for label, key in rows:
        values = [statistics.median(turn[key] for turn in results[n]) for n in names]
        ratios = "".join(f"{values[0] / v:14.2f}" if v else f"{'-':>14}" for v in values[1:])
        print(f"{label:36}" + "".join(f"{v:12.2f}" for v in values) + ratios)
    print("watcher from: " + ", ".join(f"{n} {results[n][0]['tree']}" for n in names if results[n]))


# ---- the child: one checkout's steady polls, counted --------------------------------------------------
def steady(args: argparse.Namespace) -> None:
    import psycopg
    from sqlalchemy import event

    import watcher
    from benchmarks.poll_speed import process_cpu
    from watcher.db import get_engine
    from watcher.models import utcnow
    from watcher.polling import scheduler
    from watcher.polling.poll import poll

    engine = get_engine()
    url = engine.url.render_as_string(hide_password=False).replace("postgresql+psycopg://", "postgresql://")
    database = engine.url.database
    keys = [registry_name(i) for i in range(args.registries)]
    admin = psycopg.connect(url, autocommit=True)  # the batches' set-up: its one transaction each is taken off
    with admin.cursor() as cur:
        cur.execute("SELECT id, name FROM registries")
        ids = {name: registry_id for registry_id, name in cur.fetchall()}

    def due_now(batch: list[str]) -> None:
        admin.execute(
            "UPDATE registries SET next_poll_at = %s WHERE id = ANY(%s)",
            (utcnow() - timedelta(seconds=1), [ids[k] for k in batch]),
        )

    def turn() -> int:
        polls = 0
        for start in range(0, len(keys), args.batch):
            batch = keys[start : start + args.batch]
            due_now(batch)
            for key in scheduler.claim_due(engine, utcnow()):
                poll(key, trigger="schedule")
                polls += 1
        return polls

    with admin.cursor() as cur:  # baselines (the first checkout's turn), or nothing
        cur.execute("SELECT name FROM registries WHERE NOT baselined")
        for (key,) in cur.fetchall():
            poll(key, trigger="schedule")
    turn()  # warm: imports, caches, connections
    engine.dispose()
    before = server_stats(admin, database)
    counts = {"statements": 0, "pings": 0, "commits": 0, "setup": 0}
    tracing: list[str] = []

    @event.listens_for(engine, "before_cursor_execute")
    def _statement(conn: Any, cursor: Any, statement: str, params: Any, context: Any, many: bool) -> None:
        counts["statements"] += 1
        if tracing:
            tracing.append("  " + " ".join(statement.split())[:150] + ("  [executemany]" if many else ""))

    @event.listens_for(engine, "commit")
    def _commit(conn: Any) -> None:
        counts["commits"] += 1
        if tracing:
            tracing.append("  COMMIT")

    ping = engine.dialect.do_ping

    def counted_ping(dbapi_connection: Any) -> bool:
        counts["pings"] += 1
        if tracing:
            tracing.append("  SELECT 1  [pool pre-ping]")
        return bool(ping(dbapi_connection))

    engine.dialect.do_ping = counted_ping  # type: ignore[method-assign]
    cpu, wal_before = time.process_time(), walwriter_cpu(admin)
    polls = turn()
    client_cpu = time.process_time() - cpu
    backends = backend_pids(admin, database)
    server_cpu = sum(process_cpu(pid) for pid in backends)
    wal_cpu = walwriter_cpu(admin) - wal_before
    if args.trace:
        tracing.append("(start)")
        due_now([keys[0]])
        claimed = scheduler.claim_due(engine, utcnow())  # (others whose slot came are claimed too)
        poll(claimed[0], trigger="schedule")
        print("\n".join(tracing[1:]))
    engine.dispose()
    setup_transactions = -(-len(keys) // args.batch) + (1 if args.trace else 0)
    after = server_stats(admin, database, exclude=backends)
    admin.close()
    stats = {k: after[k] - before[k] for k in STATS}
    stats["xact_commit"] -= setup_transactions
    stats["tup_updated"] -= len(keys) + (1 if args.trace else 0)
    per = {k: v / polls for k, v in counts.items()}
    per |= {k: stats[k] / polls for k in STATS}
    per["xacts"] = (stats["xact_commit"] + stats["xact_rollback"]) / polls
    per |= {"server_ms": 1000 * server_cpu / polls, "client_ms": 1000 * client_cpu / polls, "polls": polls}
    per["wal_ms"] = 1000 * wal_cpu / polls
    print(json.dumps(per | {"tree": str(Path(watcher.__file__).parent.parent)}))


def walwriter_cpu(admin: Any) -> float:
    """The WAL writer's CPU so far (the server's, for every database: other work on it counts too)."""
    from benchmarks.poll_speed import process_cpu

    with admin.cursor() as cur:
        cur.execute("SELECT pid FROM pg_stat_activity WHERE backend_type = 'walwriter'")
        return sum(process_cpu(pid) for (pid,) in cur.fetchall())


def backend_pids(admin: Any, database: str | None) -> list[int]:
    with admin.cursor() as cur:
        cur.execute("SELECT pid FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()", (database,))
        return [pid for (pid,) in cur.fetchall()]


def server_stats(admin: Any, database: str | None, exclude: list[int] = ()) -> dict[str, int]:  # type: ignore[assignment]
    """The database's counters once every other backend has exited (a backend flushes its counts then)."""
    deadline = time.monotonic() + 30
    while backend_pids(admin, database) and time.monotonic() < deadline:
        time.sleep(0.1)
    with admin.cursor() as cur:
        cur.execute("SELECT pg_stat_force_next_flush()")
        cur.execute("SELECT pg_stat_clear_snapshot()")
        cur.execute(f"SELECT {', '.join(STATS)} FROM pg_stat_database WHERE datname = %s", (database,))
        row = cur.fetchone()
    assert row is not None
    return dict(zip(STATS, (int(v) for v in row), strict=True))


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--registries", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3, help="turns of each checkout")
    parser.add_argument("--batch", type=int, default=17, help="registries a tick claims (1,000 a minute: ~17)")
    parser.add_argument(
        "--tree", action="append", default=[], metavar="NAME=PATH", help="another checkout to measure side by side"
    )
    parser.add_argument("--trace", action="store_true", help="print one steady poll's SQL")
    parser.add_argument("--history", type=float, default=0, help="hours of one-minute runs seeded per registry")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if args.child:
        steady(args)
        return 0
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
