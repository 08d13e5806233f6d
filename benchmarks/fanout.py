"""How much faster a steady poll of one big registry gets when a second worker process helps (fan-out).

Starts a fast loopback ECR-compatible API in its own process (`DescribeRepositories` and `DescribeImages`,
JSON 1.1, 1,000 per page, every answer prepared before the first request so the source costs next to no
CPU), and a throw-away watcher installation on it: a temporary data dir, a database of its own (PostgreSQL
by default, dropped afterwards), a unique Redis stream key prefix (its keys deleted afterwards), and
`WATCHER_FANOUT_REPOSITORIES` set to `--chunk`. It registers the API as an `ecr` registry polled hourly,
starts worker A (`watcher run --concurrency 1`), and waits for the baseline poll. Then, `--runs` times:
one steady poll with worker A alone, then worker B (another `watcher run --concurrency 1`, as another host
would be) is started, one steady poll with both, and B is stopped. A steady poll is dispatched by moving the
registry's next slot to now, as the scheduler's tick would find it; its time is the poll run's own
(`started_at` to `finished_at`: claim, catalog, every chunk, close), so starting workers does not count.
Every steady poll must end `ok` with no event, and B must have listed chunks of each two-worker poll.

Target (exit status 1 if missed): the median two-worker poll takes at most 0.6 times the median one-worker
poll. On a machine whose cores other work shares, the figure is noisy: each pair's ratio is shown too.

Run from the repository root: `.venv/bin/python -m benchmarks.fanout --repos 400 --tags 500`.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import re
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import psycopg
import redis
from sqlalchemy import create_engine, select, update
from sqlalchemy.engine import Engine

from benchmarks.poll_speed import process_cpu
from tests.support.processes import stop_process
from watcher.models import PollRun, Registry, utcnow

ROOT = Path(__file__).resolve().parent.parent
ACCOUNT = "123456789012"
URL = f"https://{ACCOUNT}.dkr.ecr.us-east-1.amazonaws.com"
PAGE = 1000
TARGET = 0.6
PG_ADMIN_URL = os.environ.get("WATCHER_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("WATCHER_BENCH_REDIS", "redis://127.0.0.1:6379/0")


# ---- the loopback ECR API (its own process) ------------------------------------------------------------
def answers(repos: int, tags: int) -> tuple[dict[str, bytes], dict[tuple[str, str], bytes]]:
    """Every answer, by next token: DescribeRepositories pages, and DescribeImages pages of each repository."""
    names = [f"bench/r{i:04d}" for i in range(repos)]
    repo_pages: dict[str, bytes] = {}
    for start in range(0, repos, PAGE):
        body: dict[str, Any] = {"repositories": [{"repositoryName": n} for n in names[start : start + PAGE]]}
        if start + PAGE < repos:
            body["nextToken"] = f"r{start + PAGE}"
        repo_pages["" if start == 0 else f"r{start}"] = json.dumps(body).encode()
    image_pages: dict[tuple[str, str], bytes] = {}
    for r, name in enumerate(names):
        for start in range(0, tags, PAGE):
            images = [
                {
                    "imageDigest": f"sha256:{r:08x}{t:056x}",
                    "imageTags": [f"t{t:05d}"],
                    "imagePushedAt": 1.714564800123e9 + t,
                }
                for t in range(start, min(tags, start + PAGE))
            ]
            body = {"imageDetails": images}
            if start + PAGE < tags:
                body["nextToken"] = f"i{start + PAGE}"
            image_pages[(name, "" if start == 0 else f"i{start}")] = json.dumps(body).encode()
    return repo_pages, image_pages


def serve(repos: int, tags: int, port_file: Path) -> None:
    repo_pages, image_pages = answers(repos, tags)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:
            return

        def do_POST(self) -> None:
            request = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
            target = self.headers.get("X-Amz-Target", "")
            token = request.get("nextToken", "")
            if target.endswith(".DescribeRepositories"):
                body = repo_pages[token]
            elif target.endswith(".DescribeImages"):
                body = image_pages[(request["repositoryName"], token)]
            else:
                body = b'{"__type": "UnknownOperationException"}'
            self.send_response(200)
            self.send_header("Content-Type", "application/x-amz-json-1.1")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    port_file.write_text(str(server.server_address[1]))
    server.serve_forever()


@contextlib.contextmanager
def ecr_api(repos: int, tags: int, tmp: Path) -> Iterator[str]:
    port_file = tmp / "ecr.port"
    argv = [sys.executable, "-m", "benchmarks.fanout", "--serve", "--repos", str(repos), "--tags", str(tags)]
    proc = subprocess.Popen([*argv, "--port-file", str(port_file)], cwd=ROOT)
    try:
        deadline = time.monotonic() + 300
        while not port_file.exists() or not port_file.read_text():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("the loopback ECR API did not start")
            time.sleep(0.1)
        yield f"http://127.0.0.1:{port_file.read_text()}"
    finally:
        stop_process(proc)


# ---- the installation and its workers ------------------------------------------------------------------
@contextlib.contextmanager
def installation(tmp: Path, db: str, endpoint: str, chunk: int) -> Iterator[dict[str, str]]:
    """The environment of a throw-away installation; its database and Redis keys are gone afterwards."""
    stream = f"watcher-bench-fanout:{secrets.token_hex(4)}:events"
    env = {k: v for k, v in os.environ.items() if not k.startswith("WATCHER_")} | {
        "WATCHER_DATA_DIR": str(tmp / "data"),
        "WATCHER_REDIS_URL": REDIS_URL,
        "WATCHER_EVENTS_STREAM": stream,
        "WATCHER_SECRET_KEY": secrets.token_urlsafe(24),
        "WATCHER_LISTEN": "off",
        "WATCHER_FANOUT_REPOSITORIES": str(chunk),
        "AWS_ENDPOINT_URL_ECR": endpoint,
        "AWS_EC2_METADATA_DISABLED": "true",
        "PYTHONPATH": str(ROOT),
    }
    pg_name = f"watcher_bench_fanout_{secrets.token_hex(4)}"
    if db == "postgresql":
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{pg_name}"')
        env["WATCHER_DATABASE_URL"] = f"{PG_ADMIN_URL.rsplit('/', 1)[0]}/{pg_name}"
    else:
        env["WATCHER_DATABASE_URL"] = f"sqlite:///{tmp / 'watcher.db'}"
    try:
        yield env
    finally:
        client = redis.Redis.from_url(REDIS_URL)
        for key in client.scan_iter(f"{stream}*"):
            client.delete(key)
        if db == "postgresql":
            with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{pg_name}" WITH (FORCE)')


def watcher(env: dict[str, str], *args: str) -> None:
    done = subprocess.run([sys.executable, "-m", "watcher", *args], env=env, cwd=ROOT, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"watcher {' '.join(args)}: {done.stderr.strip()}")


class Worker:
    """One `watcher run --concurrency 1`: one process listing, as one more host would add."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.log = log
        with open(log, "wb") as out:
            argv = [sys.executable, "-m", "watcher", "run", "--concurrency", "1", "--loglevel", "INFO"]
            self.proc = subprocess.Popen(argv, env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while " ready." not in log.read_text():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"a worker did not start: see {log}")
            time.sleep(0.1)

    def chunks_of(self, run_id: int) -> int:
        """Chunks of poll run `run_id` this worker listed, as its log says (as a helper, or as the poll)."""
        text = self.log.read_text()
        helped = re.findall(rf"(\d+) chunks? of poll run {run_id} listed here", text)
        return sum(map(int, helped))

    def cpu(self) -> float:
        """CPU seconds used so far by the worker's processes (its main process, beat and pool)."""
        pids, seen = [self.proc.pid], 0.0
        while pids:
            pid = pids.pop()
            with contextlib.suppress(OSError, ValueError):
                seen += process_cpu(pid)
                pids += [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
        return seen

    def stop(self) -> None:
        stop_process(self.proc, timeout=30)


@dataclasses.dataclass
class Pair:
    """One steady poll with worker A alone and one with A and B: seconds, and each worker's CPU seconds."""

    one: float
    two: float
    cpu_one: float
    cpu_a: float
    cpu_b: float

    @property
    def ratio(self) -> float:
        return self.two / self.one

    @property
    def cpu_ratio(self) -> float:
        """What the ratio would be with a free core for each worker: the busier one's share of the work."""
        return max(self.cpu_a, self.cpu_b) / self.cpu_one


def steady_poll(engine: Engine, registry_id: int, after: int) -> PollRun:
    """Dispatch one poll as the tick would, and wait for its run to finish."""
    with engine.begin() as conn:
        conn.execute(update(Registry).where(Registry.id == registry_id).values(next_poll_at=utcnow()))
    deadline = time.monotonic() + 1800
    while time.monotonic() < deadline:
        with engine.connect() as conn:
            run = conn.execute(
                select(PollRun).where(PollRun.registry_id == registry_id, PollRun.id > after).order_by(PollRun.id)
            ).first()
        if run is not None and run.outcome != "running":
            return run  # type: ignore[return-value]
        time.sleep(0.2)
    raise SystemExit("a steady poll did not finish in 30 minutes")


def timed(engine: Engine, registry_id: int, after: int, a: Worker, b: Worker | None) -> tuple[PollRun, float, float]:
    """A steady poll, and the CPU seconds workers A and B used meanwhile."""
    before = (a.cpu(), b.cpu() if b else 0.0)
    run = steady_poll(engine, registry_id, after)
    return run, a.cpu() - before[0], (b.cpu() - before[1]) if b else 0.0


def seconds_of(run: PollRun) -> float:
    assert run.finished_at is not None
    return (run.finished_at - run.started_at).total_seconds()


def measure(args: argparse.Namespace, tmp: Path, endpoint: str) -> int:
    with installation(tmp, args.db, endpoint, args.chunk) as env:
        watcher(
            env,
            "registry",
            "add",
            "bench",
            "--provider",
            "ecr",
            "--url",
            URL,
            "--access-key",
            "AKIDBENCH",
            "--secret-key",
            "bench",
            "--interval",
            "1h",
        )
        engine = create_engine(env["WATCHER_DATABASE_URL"])
        with engine.connect() as conn:
            registry_id = conn.execute(select(Registry.id)).scalar_one()
        a = Worker(env, tmp / "a.log")
        try:
            started = time.monotonic()
            baseline = steady_poll(engine, registry_id, 0)
            print(f"baseline: {baseline.outcome}, {baseline.tags} tags in {time.monotonic() - started:.1f} s")
            last, pairs = baseline.id, []
            for n in range(args.runs):  # odd pairs start with two workers: drift in the machine's load evens out
                if n % 2:
                    b = Worker(env, tmp / f"b{n}.log")
                    two, cpu_a, cpu_b = timed(engine, registry_id, last, a, b)
                    b.stop()
                    one, cpu_one, _ = timed(engine, registry_id, two.id, a, None)
                else:
                    one, cpu_one, _ = timed(engine, registry_id, last, a, None)
                    b = Worker(env, tmp / f"b{n}.log")
                    two, cpu_a, cpu_b = timed(engine, registry_id, one.id, a, b)
                    b.stop()
                last = max(one.id, two.id)
                for run in (one, two):
                    if run.outcome != "ok" or run.events or run.tags != args.repos * args.tags:
                        raise SystemExit(f"poll run {run.id}: {run.outcome}, {run.tags} tags, {run.events} events")
                helped = b.chunks_of(two.id) or a.chunks_of(two.id)  # whichever was not the poll's own
                if not helped:
                    raise SystemExit(f"poll run {two.id}: no second worker listed a chunk")
                pairs.append(Pair(seconds_of(one), seconds_of(two), cpu_one, cpu_a, cpu_b))
                p = pairs[-1]
                print(
                    f"pair {n + 1}: 1 worker {p.one:.2f} s ({p.cpu_one:.1f} CPU s), 2 workers {p.two:.2f} s "
                    f"({p.cpu_a:.1f} + {p.cpu_b:.1f} CPU s; {helped} chunks by the helper)"
                )
        finally:
            a.stop()
            engine.dispose()
    return report(args, pairs)


def report(args: argparse.Namespace, pairs: list[Pair]) -> int:
    ones, twos = [p.one for p in pairs], [p.two for p in pairs]
    ratio = statistics.median(twos) / statistics.median(ones)
    each = sorted(p.ratio for p in pairs)
    cpu = sorted(p.cpu_ratio for p in pairs)
    chunks = -(-args.repos // args.chunk)
    print(
        f"\n{args.repos} repositories x {args.tags} tags ({args.repos * args.tags:,} tags), {args.db}, "
        f"{chunks} chunks of {args.chunk}, {os.cpu_count()} CPUs"
    )
    print(f"1 worker : median {statistics.median(ones):.2f} s (min {min(ones):.2f}, max {max(ones):.2f})")
    print(f"2 workers: median {statistics.median(twos):.2f} s (min {min(twos):.2f}, max {max(twos):.2f})")
    print(f"2 workers / 1 worker: {ratio:.2f} (target <= {TARGET}); per pair {', '.join(f'{r:.2f}' for r in each)}")
    print(
        f"busier worker's CPU / 1 worker's CPU (the ratio with a free core each): median "
        f"{statistics.median(cpu):.2f}; per pair {', '.join(f'{r:.2f}' for r in cpu)}"
    )
    return 0 if ratio <= TARGET else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--repos", type=int, default=400)
    parser.add_argument("--tags", type=int, default=500, help="tags per repository")
    parser.add_argument("--chunk", type=int, default=50, help="WATCHER_FANOUT_REPOSITORIES")
    parser.add_argument("--runs", type=int, default=3, help="pairs of steady polls (1 worker, 2 workers)")
    parser.add_argument("--db", choices=("sqlite", "postgresql"), default="postgresql")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port-file", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        serve(args.repos, args.tags, args.port_file)
        return 0
    with (
        tempfile.TemporaryDirectory(prefix="watcher-bench-fanout-") as tmp,
        ecr_api(args.repos, args.tags, Path(tmp)) as url,
    ):
        return measure(args, Path(tmp), url)


if __name__ == "__main__":
    sys.exit(main())
