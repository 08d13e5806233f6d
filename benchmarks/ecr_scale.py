"""A big ECR registry, polled: watcher's baseline, steady and 1 %-changed polls against a minimal boto3 client
reading the same pages (the floor), side by side, with each poll's peak memory and the database's size.

`benchmarks.ecr_fake` serves REPOS x TAGS tags (1,000 images a page, generated on the fly) in its own
process. A throw-away watcher installation (a temporary data dir; SQLite there, or a PostgreSQL database
created for the run and dropped after) registers it as an `ecr` registry (`--max-concurrency 8
--rate-limit 10000`). Then, each in a fresh process of its own, alternating: the **floor** (boto3's ECR
client, defaults but for 8 pooled connections, 8 threads: DescribeRepositories pages, then each
repository's DescribeImages pages into a tag -> (digest, push time) dict, as any consumer must) and
watcher's poll (`watcher.polling.poll.poll`, or with `--command` the whole `watcher poll` command, process
start and publishing to Redis included). First the baseline, then RUNS steady polls, then RUNS polls each
after the fake moved 1 % of the tags (every repository has some) to new digests.

A poll's time is measured inside its process, after its imports, like the floor's; with `--command` both
are whole processes instead, from spawn to exit (interpreter start and imports included on both sides: boto3
for the floor; for watcher also its settings, schema check, Redis and publishing). Each poll is divided by
the mean of the floor runs just before and after it. Peak RSS and CPU come from the kernel's accounting of
that one process (`os.wait4`). Exits 1 if a poll failed, read another number of tags than there are, a
steady poll emitted anything, or a changed poll's events are not exactly the tags moved (with `--command`
from `watcher poll --json`). `--source DIR` polls with another checkout's code (say, `git archive` of an
older commit unpacked in DIR), for a before/after with the same floor.

Run from the repository root: `.venv/bin/python -m benchmarks.ecr_scale --repos 100 --tags 1000 --db sqlite`
(`--db postgresql` needs a server: WATCHER_BENCH_PG, default postgresql://postgres@127.0.0.1:5432/postgres).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks import throwaway

ROOT = Path(__file__).resolve().parent.parent
ACCOUNT = "123456789012"
REGION = "us-east-1"
NAME = "bench"
PERIOD = 100  # one tag in PERIOD moves per changed poll: 1 %


# ---- the two clients, each run in a process of its own (`--role`) --------------------------------
def floor_role(endpoint: str, concurrency: int) -> dict[str, Any]:
    """The minimal client: every page read and kept as tag -> (digest, push time), 8 threads."""
    from concurrent.futures import ThreadPoolExecutor

    import boto3
    from botocore.config import Config

    started, cpu = time.perf_counter(), time.process_time()
    client = boto3.client(
        "ecr",
        endpoint_url=endpoint,
        region_name=REGION,
        aws_access_key_id="AKIDBENCH",
        aws_secret_access_key="bench",
        config=Config(max_pool_connections=concurrency),
    )
    names: list[str] = []
    token = None
    while True:
        page = client.describe_repositories(maxResults=1000, **({"nextToken": token} if token else {}))
        names += [repo["repositoryName"] for repo in page["repositories"]]
        token = page.get("nextToken")
        if not token:
            break

    def images(name: str) -> int:
        tags: dict[str, tuple[str, Any]] = {}
        token = None
        while True:
            params: dict[str, Any] = {"repositoryName": name, "maxResults": 1000, "filter": {"tagStatus": "TAGGED"}}
            page = client.describe_images(**params, **({"nextToken": token} if token else {}))
            for image in page["imageDetails"]:
                for tag in image.get("imageTags", ()):
                    tags[tag] = (image["imageDigest"], image.get("imagePushedAt"))
            token = page.get("nextToken")
            if not token:
                return len(tags)

    with ThreadPoolExecutor(concurrency) as pool:
        tags = sum(pool.map(images, names))
    return {"seconds": time.perf_counter() - started, "cpu": time.process_time() - cpu, "tags": tags}


def poll_role() -> dict[str, Any]:
    """watcher's poll of the registry, in this process, after its imports."""
    import watcher.pollers.ecr  # (boto3: imported before the clock starts, as the floor's is)
    from watcher.db import get_engine
    from watcher.polling.poll import poll

    get_engine()
    if os.environ.get("BENCH_GC") == "default":  # an experiment: the poll without `watcher.runtime.heap.settle`
        import watcher.runtime.heap

        watcher.runtime.heap.settle = lambda: None
    rss_ready = _status_kb("VmRSS")
    started, cpu = time.perf_counter(), time.process_time()
    result = poll(NAME)
    return {
        "seconds": time.perf_counter() - started,
        "cpu": time.process_time() - cpu,
        "tags": result.tags,
        "events": len(result.events),
        "kinds": sorted({event.change for event in result.events}),
        "rss_ready_kb": rss_ready,
    }


def _status_kb(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


# ---- the driver ------------------------------------------------------------------------------------
@dataclass
class Run:
    """One process: what it said, and the kernel's accounting of it."""

    kind: str
    seconds: float
    cpu: float
    maxrss_mb: float
    out: dict[str, Any] = field(default_factory=dict)
    ratio: float = 0.0


def run_child(kind: str, argv: list[str], env: dict[str, str], wall: bool = False, cwd: Path = ROOT) -> Run:
    """Run one child to its end, with its own report (the last stdout line that is JSON); its time is the
    report's `seconds` (after its imports), or with `wall` the whole process's, from spawn to exit."""
    started = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    (text, status, usage), errors = _communicate(proc)
    seconds = time.perf_counter() - started
    if status != 0:
        raise SystemExit(f"{kind} failed ({status}): {errors.decode()[-2000:]}")
    lines = [line for line in text.decode().splitlines() if line.startswith("{")]
    report = json.loads(lines[-1]) if lines else {}
    cpu = usage.ru_utime + usage.ru_stime
    if wall:  # its CPU is the whole process's too; `watcher poll --json`'s events as the poll role counts them
        listed = report.get("events", [])
        report.update(cpu=cpu, events=len(listed), kinds=sorted({event["change"] for event in listed}))
    return Run(kind, seconds if wall else report["seconds"], cpu, usage.ru_maxrss / 1024, report)


def _communicate(proc: subprocess.Popen[bytes]) -> tuple[tuple[bytes, int, Any], bytes]:
    """stdout, exit status and rusage of the one child (os.wait4), and its stderr."""
    import threading

    chunks: dict[str, bytes] = {}

    def drain(name: str, stream: Any) -> None:
        chunks[name] = stream.read()

    readers = [threading.Thread(target=drain, args=(n, s)) for n, s in (("out", proc.stdout), ("err", proc.stderr))]
    for reader in readers:
        reader.start()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    for reader in readers:
        reader.join()
    return (chunks["out"], proc.returncode, usage), chunks["err"]


@dataclass
class Installation:
    env: dict[str, str]
    db: str
    url: str
    tmp: Path


@contextlib.contextmanager
def installation(db: str, endpoint: str) -> Iterator[Installation]:
    """A throw-away state (`benchmarks.throwaway`), and the environment of every child: WATCHER_* for it,
    boto3 pointed at the fake and kept away from this machine's AWS configuration."""
    with throwaway.state(db, "ecr-bench") as state:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("WATCHER_", "AWS_"))}
        env.update(state.env)
        env.update(
            {
                "PYTHONPATH": str(ROOT),
                "AWS_ENDPOINT_URL_ECR": endpoint,
                "AWS_EC2_METADATA_DISABLED": "true",
                "AWS_CONFIG_FILE": str(state.tmp / "aws-config"),
                "AWS_SHARED_CREDENTIALS_FILE": str(state.tmp / "aws-credentials"),
            }
        )
        yield Installation(env, db, state.url, state.tmp)


@contextlib.contextmanager
def fake_api(repos: int, tags: int) -> Iterator[str]:
    from tests.support.processes import stop_process
    from tests.support.registry import free_port

    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.ecr_fake", "--port", str(port), "--repos", str(repos), "--tags", str(tags)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        if proc.stdout.readline().strip() != b"ready":
            raise SystemExit("the fake ECR API did not start")
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_process(proc)


def control(endpoint: str, **change: int) -> None:
    import httpx

    httpx.post(f"{endpoint}/_control", json=change).raise_for_status()


def database_bytes(inst: Installation) -> dict[str, int]:
    """The snapshot's and the history's size on disk: per table (PostgreSQL, with indexes), or the file."""
    from sqlalchemy import create_engine, text

    if inst.db == "sqlite":
        path = Path(inst.url.removeprefix("sqlite:///"))
        engine = create_engine(inst.url)
        with engine.connect() as conn:
            conn.execute(text("PRAGMA wal_checkpoint(TRUNCATE)"))
            try:  # per table where this SQLite has the dbstat table
                rows = conn.execute(text("SELECT name, SUM(pgsize) FROM dbstat GROUP BY name")).all()
                sizes = {str(name): int(size) for name, size in rows}
            except Exception:
                sizes = {}
        engine.dispose()
        tables = {"tags": ("tags", "ix_tags", "sqlite_autoindex_tags"), "events": ("events", "ix_events")}
        found = {t: sum(v for k, v in sizes.items() if k.startswith(prefixes)) for t, prefixes in tables.items()}
        return {"total": path.stat().st_size, **found}
    engine = create_engine(inst.url.replace("postgresql://", "postgresql+psycopg://", 1))
    with engine.connect() as conn:
        total = conn.execute(text("SELECT pg_database_size(current_database())")).scalar_one()
        tags = conn.execute(text("SELECT pg_total_relation_size('tags')")).scalar_one()
        events = conn.execute(text("SELECT pg_total_relation_size('events')")).scalar_one()
    engine.dispose()
    return {"total": int(total), "tags": int(tags), "events": int(events)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repos", type=int, default=100)
    parser.add_argument("--tags", type=int, default=1000, help="tags per repository")
    parser.add_argument("--db", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--runs", type=int, default=3, help="steady polls, and 1 %%-changed polls (default 3)")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument(
        "--command", action="store_true", help="time `watcher poll` and the floor as whole processes, start included"
    )
    parser.add_argument("--source", type=Path, help="poll with this checkout's code instead of this one's")
    parser.add_argument("--py-spy", metavar="DIR", help="record each poll with py-spy into DIR (collapsed stacks)")
    parser.add_argument("--role", choices=("floor", "poll"), help=argparse.SUPPRESS)
    parser.add_argument("--endpoint", help=argparse.SUPPRESS)
    opts = parser.parse_args(argv)
    if opts.role == "floor":
        print(json.dumps(floor_role(opts.endpoint, opts.concurrency)))
        return 0
    if opts.role == "poll":
        print(json.dumps(poll_role()))
        return 0
    return drive(opts)


def drive(opts: argparse.Namespace) -> int:
    total = opts.repos * opts.tags
    with fake_api(opts.repos, opts.tags) as endpoint, installation(opts.db, endpoint) as inst:
        py = [sys.executable, "-m", "benchmarks.ecr_scale"]
        floor_argv = [*py, "--role", "floor", "--endpoint", endpoint, "--concurrency", str(opts.concurrency)]
        command = [sys.executable, "-m", "watcher", "poll", NAME, "--json"]
        poll_argv = command if opts.command else [*py, "--role", "poll"]
        poll_env, poll_cwd = inst.env, ROOT
        if opts.source:  # the poll runs that checkout's watcher (and, in-process, its poll role): `-m` puts
            poll_cwd = opts.source.resolve()  # the working directory first on the path
            poll_env = {**inst.env, "PYTHONPATH": f"{poll_cwd}{os.pathsep}{ROOT}"}
        add = [sys.executable, "-m", "watcher", "registry", "add", NAME, "--provider", "ecr"]
        add += ["--url", f"https://{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com", "--access-key", "AKIDBENCH"]
        add += ["--secret-key", "bench", "--max-concurrency", str(opts.concurrency), "--rate-limit", "10000"]
        add += ["--poll-timeout", "24h", "--no-verify"]
        subprocess.run(add, env=inst.env, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
        print(
            f"{opts.repos:,} repositories x {opts.tags:,} tags = {total:,} tags, {opts.db}, "
            f"{'whole processes: `watcher poll`' if opts.command else 'watcher.polling.poll.poll'}"
            f"{f' from {opts.source}' if opts.source else ''}, Python "
            f"{platform.python_version()}, load {os.getloadavg()[0]:.1f}",
            flush=True,
        )
        runs: list[Run] = [run_child("floor", floor_argv, inst.env, wall=opts.command)]
        plan = ["baseline"] + ["steady"] * opts.runs + ["1% changed"] * opts.runs
        sizes: dict[str, dict[str, int]] = {}
        generation = 0
        for kind in plan:
            if kind == "1% changed":
                generation += 1
                control(endpoint, generation=generation, period=PERIOD)
            argv = poll_argv
            if opts.py_spy:
                out = Path(opts.py_spy) / f"{len(runs):02d}-{kind.replace('% ', '')}.txt"
                argv = [
                    shutil.which("py-spy") or "py-spy",
                    "record",
                    "-r",
                    "100",
                    "-f",
                    "raw",
                    "-o",
                    str(out),
                    "--",
                    *poll_argv,
                ]
            poll = run_child(kind, argv, poll_env, wall=opts.command, cwd=poll_cwd)
            runs.append(poll)
            runs.append(run_child("floor", floor_argv, inst.env, wall=opts.command))
            if kind == "baseline":
                sizes["after baseline"] = database_bytes(inst)
            print(f"  {kind:11} {poll.seconds:7.2f} s  floor {runs[-1].seconds:6.2f} s", flush=True)
        sizes["after all"] = database_bytes(inst)
        failures = check(runs, total)
        report(runs, sizes, total)
    for line in failures:
        print("FAILED:", line)
    return 1 if failures else 0


def check(runs: list[Run], total: int) -> list[str]:
    """Every floor and poll read every tag; steady polls emit nothing, changed ones exactly the moved tags."""
    failures = []
    for one in runs:
        if one.out.get("tags") != total:
            failures.append(f"{one.kind} read {one.out.get('tags')} tags, not {total}")
        if one.kind in ("baseline", "steady") and one.out.get("events"):
            failures.append(f"a {one.kind} poll emitted {one.out['events']} events")
        if one.kind == "1% changed" and (one.out["events"] != total // PERIOD or one.out["kinds"] != ["updated"]):
            failures.append(f"a changed poll emitted {one.out['events']} {one.out['kinds']}, not {total // PERIOD}")
    return failures


def report(runs: list[Run], sizes: dict[str, dict[str, int]], total: int) -> None:
    for i, one in enumerate(runs):
        if one.kind != "floor":
            one.ratio = one.seconds / statistics.mean([runs[i - 1].seconds, runs[i + 1].seconds])
    floors = [one for one in runs if one.kind == "floor"]
    head = f"{'process':12} {'runs':>4} {'median s':>9} {'min s':>7} {'max s':>7} {'÷ floor':>8} {'range':>11}"
    print("\n" + head, end="")
    print(f" {'cpu s':>7} {'cpu µs/tag':>10} {'peak RSS MB':>11}")  # cpu: after the imports (or whole processes)
    for kind in ("floor", "baseline", "steady", "1% changed"):
        group = [one for one in runs if one.kind == kind]
        seconds = [one.seconds for one in group]
        ratios = [one.ratio for one in group]
        ratio = " " * 20
        if kind != "floor":
            ratio = f"{statistics.median(ratios):8.2f} {min(ratios):5.2f}-{max(ratios):5.2f}"
        cpu = statistics.median(one.out.get("cpu", one.cpu) for one in group)
        rss = max(one.maxrss_mb for one in group)
        print(
            f"{kind:12} {len(group):4} {statistics.median(seconds):9.2f} {min(seconds):7.2f} {max(seconds):7.2f} "
            f"{ratio} {cpu:7.2f} {cpu / total * 1e6:10.1f} {rss:11.0f}"
        )
    ready = [one.out["rss_ready_kb"] / 1024 for one in runs if "rss_ready_kb" in one.out]
    if ready:
        print(
            f"(a poll process's RSS after its imports, before polling: {statistics.median(ready):.0f} MB; floor "
            f"processes' peak: {max(f.maxrss_mb for f in floors):.0f} MB)"
        )
    for when, size in sizes.items():
        per_tag = f", tags table {size['tags'] / total:.0f} B/tag" if size.get("tags") else ""
        events = f", events table {size['events'] / 1e6:.1f} MB" if size.get("events") else ""
        print(f"database {when}: {size['total'] / 1e6:.1f} MB ({size['total'] / total:.0f} B/tag){per_tag}{events}")


if __name__ == "__main__":
    sys.exit(main())
