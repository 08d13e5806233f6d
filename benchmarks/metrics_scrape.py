"""How long a `/metrics` scrape takes on a fleet of many small registries (issue 13, section 5).

Seeds a throw-away installation (SQLite in a temporary dir, or with `--postgres` a PostgreSQL database of
its own, dropped afterwards) through the app's own migrations, in bulk: N registries, each with 10
repositories x 3 tags, a poll history (registry-wide polls every 5 minutes, every fifth followed by a
webhook's poll of one repository, every tenth registry's newest poll failed), and the counters such a fleet
accumulates, made by the app's own increment builders (`watcher.read.pollmetrics`, `watcher.hooks.stats`'
metric): polls by outcome, the duration histogram, requests by code, events by change, webhooks by format
and outcome.

Then it serves the real app (`watcher serve`, its own process) and scrapes `/metrics` over HTTP with one
keep-alive client, round by round beside `/healthz` on the same server (the app's own overhead: the floor)
and beside prometheus_client rendering the same samples in this process (the library's cost alone), then
reads the server process's CPU time over a run of each alone (on a shared machine the wall times
mostly measure the other processes; the CPU a scrape costs does not).
Each scrape is parsed once with prometheus_client's parser and checked for the fleet's registries.

Target: p95 <= 200 ms at 1,000 registries. Exit status 1 if missed.

Run from the repository root: `.venv/bin/python -m benchmarks.metrics_scrape [--registries 1000] [--postgres]`.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from benchmarks import read_side
from benchmarks.read_side import METRICS_AUTH, Row, bulk_insert, installation, percentile, served

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
REPOSITORIES, TAGS = 10, 3  # per registry: issue 13's "many small registries"
TARGET_P95_MS = 200.0


def name_of(index: int) -> str:
    return f"team-{index:04d}"


# ---- seeding --------------------------------------------------------------------------------------
def registry_rows(count: int) -> Iterator[Row]:
    """read_side's registries at one-minute intervals, each with a webhook a few minutes ago."""
    for i, row in enumerate(read_side.registry_rows(count, name_of, interval=60, age_days=30), 1):
        yield (*row, NOW - timedelta(minutes=i % 7))


REGISTRY_COLUMNS = (*read_side.REGISTRY_COLUMNS, "last_webhook_at")


def repository_rows(count: int) -> Iterator[Row]:
    for reg in range(1, count + 1):
        for r in range(REPOSITORIES):
            yield (reg - 1) * REPOSITORIES + r + 1, reg, f"apps/app-{r}", NOW - timedelta(days=30)


def tag_rows(count: int) -> Iterator[Row]:
    tag_id = 0
    for repo in range(1, count * REPOSITORIES + 1):
        for t in range(TAGS):
            tag_id += 1
            yield tag_id, repo, f"v{t}", f"sha256:{repo:032x}{t:032x}", NOW - timedelta(days=t)


def poll_rows(count: int, polls: int) -> Iterator[Row]:
    """POLLS registry-wide polls a registry, 5 minutes apart, oldest first; after every fifth a webhook's poll
    of one repository; every tenth registry's newest registry-wide poll failed."""
    run_id = 0
    for p in range(polls):
        for reg in range(1, count + 1):
            run_id += 1
            started = NOW - timedelta(minutes=5 * (polls - p))
            failed = p == polls - 1 and reg % 10 == 0
            error = "GET https://example/v2/: HTTP 503" if failed else ""
            ended = started + timedelta(seconds=0.5 + (reg % 40) / 10)
            counts = (REPOSITORIES, REPOSITORIES * TAGS, 0, 42, 0)
            yield (run_id, reg, started, ended, "failed" if failed else "ok", error, *counts, "schedule", None)
            if p % 5 == 4:
                run_id += 1
                at = started + timedelta(seconds=30)
                counts = (1, TAGS, 1, 4, 0)
                yield (run_id, reg, at, at + timedelta(seconds=0.2), "ok", "", *counts, "webhook", '["apps/app-0"]')


POLL_COLUMNS = (*read_side.POLL_COLUMNS, "trigger", "listed_repositories")


def counter_rows(count: int, polls: int) -> Iterator[Row]:
    """The fleet's counters, built by the app's own increment builders and summed per series."""
    from watcher.hooks import stats as hookstats
    from watcher.read import pollmetrics
    from watcher.read.counters import Increment, labels_key

    totals: dict[tuple[str, str], float] = defaultdict(float)
    for reg in range(1, count + 1):
        name = name_of(reg)
        increments = pollmetrics.finished(name, "oci", "ok", 1.0 + reg % 40 / 10, Counter({"200": 40, "401": 2}))
        increments += pollmetrics.finished(name, "oci", "failed", 0.3, Counter({"503": 1, "error": 1}))
        increments += pollmetrics.committed(name, ["added", "updated", "removed"])
        increments += [
            Increment(hookstats.METRIC, {"registry": name, "format": "distribution", "outcome": o})
            for o in ("accepted", "ignored")
        ]
        for inc in increments:
            scale = polls if inc.metric != pollmetrics.EVENTS else 7
            totals[inc.metric, labels_key(inc.labels)] += inc.amount * scale
    for (metric, labels), value in sorted(totals.items()):
        yield metric, labels, value


def seed(engine: Any, count: int, polls: int) -> None:
    plan: list[tuple[str, tuple[str, ...], Iterator[Row]]] = [
        ("registries", REGISTRY_COLUMNS, registry_rows(count)),
        ("repositories", ("id", "registry_id", "name", "first_seen_at"), repository_rows(count)),
        ("tags", ("id", "repository_id", "name", "digest", "pushed_at"), tag_rows(count)),
        ("poll_runs", POLL_COLUMNS, poll_rows(count, polls)),
        ("counters", ("metric", "labels", "value"), counter_rows(count, polls)),
    ]
    for table, columns, rows in plan:
        started = time.perf_counter()
        seeded = bulk_insert(engine, table, columns, rows)
        print(f"  seeded {seeded:>9,} {table:<12} in {time.perf_counter() - started:6.1f} s", flush=True)
    if engine.dialect.name == "postgresql":  # what autovacuum does soon after a bulk load
        from sqlalchemy import text

        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("VACUUM ANALYZE"))


# ---- measuring ------------------------------------------------------------------------------------
def check(body: str, count: int) -> int:
    """The scrape parses, and shows every registry; its number of samples."""
    from prometheus_client.parser import text_string_to_metric_families

    samples = 0
    registries: set[str] = set()
    for family in text_string_to_metric_families(body):
        for sample in family.samples:
            samples += 1
            if sample.name == "watcher_registry_up":
                registries.add(sample.labels["registry"])
    if len(registries) != count:
        raise RuntimeError(f"/metrics shows {len(registries)} registries, expected {count}")
    return samples


@dataclass
class Rounds:
    """Wall times, round by round: a scrape, `/healthz` on the same server, and prometheus_client rendering
    the scrape's samples in this process; so load from elsewhere falls on all three alike."""

    metrics: list[float] = field(default_factory=list)
    healthz: list[float] = field(default_factory=list)
    rendering: list[float] = field(default_factory=list)
    body: str = ""


def scrape_rounds(base: str, rounds: int, warmup: int) -> Rounds:
    measured = Rounds()
    with httpx.Client(base_url=base, headers=METRICS_AUTH, timeout=60) as client:
        measured.body = get(client, "/metrics").text
        render = rendering_floor(measured.body)
        for round_ in range(warmup + rounds):
            times = []
            for call in (lambda: get(client, "/metrics"), lambda: get(client, "/healthz"), render):
                started = time.perf_counter()
                call()
                times.append(time.perf_counter() - started)
            if round_ >= warmup:
                for samples, elapsed in zip(
                    (measured.metrics, measured.healthz, measured.rendering), times, strict=True
                ):
                    samples.append(elapsed)
    return measured


def get(client: httpx.Client, path: str) -> httpx.Response:
    response = client.get(path)
    if response.status_code != 200:
        raise RuntimeError(f"{path}: HTTP {response.status_code} {response.text[:300]}")
    return response


def server_cpu(base: str, pid: int, path: str, requests: int) -> float:
    """The server's CPU seconds per request of `path`, over REQUESTS in a row: what a scrape costs the
    process whatever else the machine is doing (wall times on a shared machine mostly measure the others)."""
    import psutil

    process = psutil.Process(pid)
    with httpx.Client(base_url=base, headers=METRICS_AUTH, timeout=60) as client:
        get(client, path)
        before = process.cpu_times()
        for _ in range(requests):
            get(client, path)
        after = process.cpu_times()
    return (after.user + after.system - before.user - before.system) / requests


def rendering_floor(body: str) -> Callable[[], bytes]:
    """prometheus_client rendering the scrape's families (the same names, labels and values), rebuilt as
    constant families in a plain registry: the library's cost for that many samples, with no gathering."""
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    families = list(text_string_to_metric_families(body))

    class Constant:
        def collect(self) -> list[Any]:
            return families

    registry = CollectorRegistry(auto_describe=False)
    registry.register(Constant())
    return lambda: generate_latest(registry)


def machine() -> str:
    load = os.getloadavg()
    return f"{os.cpu_count()} CPUs, Python {platform.python_version()}, load {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"


def run(args: argparse.Namespace) -> int:
    from watcher.db import get_engine

    db = "postgresql" if args.postgres else "sqlite"
    print(f"/metrics on {db}: {args.registries:,} registries, {args.polls} polls each; {machine()}", flush=True)
    with installation(db) as inst:
        seed(get_engine(), args.registries, args.polls)
        with served(inst) as (base, proc):
            measured = scrape_rounds(base, args.rounds, args.warmup)
            load = machine()
            cpu = {path: server_cpu(base, proc.pid, path, args.cpu_requests) for path in ("/metrics", "/healthz")}
    samples = check(measured.body, args.registries)
    rows = [
        ("GET /metrics", measured.metrics, cpu["/metrics"]),
        ("GET /healthz (floor, same server)", measured.healthz, cpu["/healthz"]),
        ("prometheus_client render (floor)", measured.rendering, None),
    ]
    size = len(measured.body)
    print(f"\n{args.rounds} rounds after {args.warmup} warm-up; {samples:,} samples, {size:,} bytes; {load}")
    print(f"{'':<36} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8} {'server CPU ms':>14}")
    for label, times, cpu_seconds in rows:
        p50, p95 = percentile(times, 50) * 1000, percentile(times, 95) * 1000
        cpu_text = "-" if cpu_seconds is None else f"{cpu_seconds * 1000:.1f}"
        print(f"{label:<36} {p50:>8.1f} {p95:>8.1f} {max(times) * 1000:>8.1f} {cpu_text:>14}")
    metrics = measured.metrics
    p95 = percentile(metrics, 95) * 1000
    met = p95 <= TARGET_P95_MS
    print(f"/metrics p95 {p95:.1f} ms: target <= {TARGET_P95_MS:.0f} ms {'met' if met else 'MISSED'}")
    return 0 if met else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--registries", type=int, default=1000)
    parser.add_argument("--polls", type=int, default=100, help="registry-wide polls in each registry's history")
    parser.add_argument("--postgres", action="store_true", help="PostgreSQL (WATCHER_BENCH_PG) instead of SQLite")
    parser.add_argument("--rounds", type=int, default=60, help="measured scrapes")
    parser.add_argument("--warmup", type=int, default=5, help="unmeasured scrapes first")
    parser.add_argument("--cpu-requests", type=int, default=30, help="requests of each path for the server's CPU")
    args = parser.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        return run(args)
    return 130


if __name__ == "__main__":
    sys.exit(main())
