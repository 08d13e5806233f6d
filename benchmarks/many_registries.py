"""Many small registries polled every minute by `watcher run`: do polls keep up, start on time, and report
pushes within an interval?

One real registry (CNCF Distribution, as the tests run it) holds `--registries` x `--repositories`
repositories of `--tags` tags each. It listens on every address of its port, so it is reachable on
`--registries` distinct loopback addresses (127.42.x.y: Linux routes all of 127.0.0.0/8 to the loopback), and
each watcher registry is its own host, as the deployment-wide per-host limits see it. (`--forwarder` puts a
small TCP forwarder in its own process in front instead, listening on those addresses only, which counts the
requests by path and the connections; it costs a process of its own.) Each watcher registry
watches its own `--repositories` repositories by literal name (no catalog), every `--interval` (1 minute),
all registered at once by one `watcher registry apply --no-verify`. Then `watcher run` (`--workers`
processes, each with its beat) runs on the embedded defaults: SQLite and the embedded Redis in a throw-away
data dir (`--postgres`: a PostgreSQL database of its own instead, dropped afterwards).

Once every registry has its baseline, the background fill has described every digest of those baselines
(`watcher.polling.imagefill`: until then its reads share the pool with the polls, and at 1,000 registries
they are 30,000 digests, ten minutes and more; `--fill-timeout 0` measures while it runs; where the pool has
no room to spare the fill reads nothing, and the wait ends after three minutes without progress), and one more
interval has passed (the steady state: every registry on its grid, nothing left to fill), `--minutes` are
measured while a tag is pushed to a random registry every `--push-every` seconds:

- polls completed a minute (scheduled polls finished in the window);
- schedule lag p50/p95/max: each scheduled poll's `started_at` minus its slot (the registry's last grid point
  at or before it: `watcher.polling.scheduler`), and the `watcher_schedule_lag_seconds` gauge sampled every 2 s,
  with the broker's queue length; the slots of the window that a scheduled poll started for;
- failed polls (every outcome but `ok` in the window);
- the digests the fill described in the window (its reads are in the CPU figures);
- CPU per poll: CPU seconds of the watcher processes (every `watcher run` with its beat and pool; the
  embedded Redis separately) in the window / polls completed; RSS summed over those processes at the end;
- push to event: from a pushed tag's manifest PUT answered to its `added` entry on the stream;
- CPU per poll of the registry and of every PostgreSQL server process, in the same window.

Then the floor, side by side on the same cores and registry (`--floor-seconds`, 60): `--floor-processes`
(2, as many as the worker's pool) processes of the leanest client, one `httpx.Client` per host kept open and
8 threads, make the same steady polls round and round, as fast as they can. Its polls a minute say how many
this machine carries at all (the registry shares the cores), and the watcher's figures are given as ratios to
it, which compare across machines where the seconds do not.

Targets (exit status 1 if one is missed): polls a minute >= 0.99 x registries x (60 / interval), lag p95 <= 5 s,
no failed poll, every push reported within one interval + 10 s.

Run from the repository root (the full size takes ~25 minutes, ten of them the fill; `--registries 100 --minutes 2` ~5):
`.venv/bin/python -m benchmarks.many_registries` (`--postgres` for PostgreSQL).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import os
import random
import re
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, cast

import redis

from benchmarks.poll_speed import blob_refs, process_cpu, push_manifest, repo_name, seed
from benchmarks.read_side import machine, percentile
from benchmarks.small_poll_cpu import MinimalClient
from benchmarks.throwaway import PG_ADMIN_URL
from tests.support.processes import stop_process
from tests.support.registry import RegistryClient, RegistryServer

ROOT = Path(__file__).resolve().parent.parent
LAG_P95_TARGET = 5.0
PUSH_MARGIN = 10.0


# ---- the forwarder: one registry on many loopback hosts (its own process) --------------------------------
def host_of(index: int) -> str:
    """The loopback address of registry `index` (127.42.0.10, 127.42.0.11, ...; never .0 or .255)."""
    return f"127.42.{index // 200}.{index % 200 + 10}"


def forward(upstream: str, hosts: int, port_file: Path) -> None:
    """Accept on `hosts` loopback addresses (one port) and pipe each connection to `upstream` (host:port)."""
    with contextlib.suppress(ImportError):
        import uvloop

        uvloop.install()
    up_host, up_port = upstream.rsplit(":", 1)
    counts: Counter[str] = Counter()
    counts_file = port_file.with_name("forwarder.counts")

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, count: bool = False) -> None:
        try:
            while data := await reader.read(65536):
                if count:
                    counts.update(request_kind(m, p) for m, p in REQUEST_LINE.findall(data))
                writer.write(data)
                await writer.drain()
        except OSError:
            pass
        finally:
            with contextlib.suppress(Exception):
                writer.close()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(up_host, int(up_port))
        except OSError:
            writer.close()
            return
        counts["connections"] += 1
        await asyncio.gather(pipe(reader, up_writer, count=True), pipe(up_reader, writer))

    async def write_counts() -> None:
        while True:
            await asyncio.sleep(1)
            counts_file.with_suffix(".tmp").write_text(json.dumps(counts))
            counts_file.with_suffix(".tmp").replace(counts_file)

    async def serve() -> None:
        first = await asyncio.start_server(handle, host_of(0), 0)
        port = first.sockets[0].getsockname()[1]
        for index in range(1, hosts):
            await asyncio.start_server(handle, host_of(index), port)
        port_file.write_text(str(port))
        await write_counts()

    asyncio.run(serve())


REQUEST_LINE = re.compile(rb"(GET|HEAD|POST|PUT|PATCH|DELETE) (/\S*) HTTP/1\.[01]\r\n")


def request_kind(method: bytes, path: bytes) -> str:
    """A request's method and the shape of its path (`HEAD manifests`, `GET tags/list`, `GET /v2/`)."""
    shape = path.split(b"?", 1)[0]
    for part in (b"/tags/list", b"/manifests/", b"/blobs/", b"/_catalog", b"/referrers/"):
        if part in shape:
            return f"{method.decode()} {part.strip(b'/').decode()}"
    return f"{method.decode()} {shape.decode()[:40]}"


def forwarded_counts(tmp: Path) -> Counter[str]:
    """What the forwarder has counted so far (it writes its counts every second)."""
    path = tmp / "forwarder.counts"
    return Counter(json.loads(path.read_text())) if path.exists() else Counter()


@contextlib.contextmanager
def forwarder(
    registry: RegistryServer, args: argparse.Namespace, tmp: Path
) -> Iterator[tuple[int, subprocess.Popen[bytes] | None]]:
    """The port every registry host reaches the registry on: its own (it listens on every address), or with
    `--forwarder` the forwarder's, which counts requests by path (and costs a process of its own)."""
    if not args.forwarder:
        yield registry.port, None
        return
    port_file = tmp / "forwarder.port"
    argv = [sys.executable, "-m", "benchmarks.many_registries", "--forward", registry.host]
    proc = subprocess.Popen([*argv, "--registries", str(args.registries), "--port-file", str(port_file)], cwd=ROOT)
    try:
        deadline = time.monotonic() + 60
        while not port_file.exists() or not port_file.read_text():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("the loopback forwarder did not start")
            time.sleep(0.1)
        yield int(port_file.read_text()), proc
    finally:
        stop_process(proc)


# ---- the floor: the leanest client polling the same registries on the same cores -----------------------
FLOOR_THREADS = 8


def floor_process(share: list[int], repositories: int, port: int, seconds: float) -> tuple[int, float]:
    """Steady polls of the registries in `share`, round and round for `seconds`, by `small_poll_cpu`'s minimal
    client (the same requests as a watcher's steady poll), one kept per host, all on FLOOR_THREADS threads:
    (polls completed, CPU seconds of this process)."""
    clients: dict[int, MinimalClient] = {}
    polls, started, cpu_before = 0, time.monotonic(), time.process_time()
    with ThreadPoolExecutor(FLOOR_THREADS) as threads:
        while time.monotonic() - started < seconds:
            for index in share:
                client = clients.get(index)
                if client is None:
                    url, repos = f"http://{host_of(index)}:{port}", repositories_of(index, repositories)
                    client = clients[index] = MinimalClient(url, repos, FLOOR_THREADS, shared=threads)
                client.listing()
                polls += 1
                if time.monotonic() - started >= seconds:
                    break
    cpu = time.process_time() - cpu_before
    for client in clients.values():
        client.close()
    return polls, cpu


@dataclass
class Floor:
    polls_a_minute: float
    client_cpu: float  # seconds a poll
    registry_cpu: float  # seconds a poll


def measure_floor(args: argparse.Namespace, port: int, registry: RegistryServer) -> Floor:
    """`--floor-processes` processes of `floor_process`, each with its share of the registries, side by side
    with what the watcher did: how many steady polls this machine's cores carry with the leanest client."""
    shares = [list(range(n, args.registries, args.floor_processes)) for n in range(args.floor_processes)]
    before = other_cpu(registry, None)
    started = time.monotonic()
    one_share = functools.partial(floor_process, repositories=args.repositories, port=port, seconds=args.floor_seconds)
    with ProcessPoolExecutor(args.floor_processes) as processes:
        done = list(processes.map(one_share, shares))
    minutes = (time.monotonic() - started) / 60
    polls = max(1, sum(n for n, _ in done))
    registry_cpu = other_cpu(registry, None)[0] - before[0]
    return Floor(polls / minutes, sum(cpu for _, cpu in done) / polls, registry_cpu / polls)


# ---- the installation ---------------------------------------------------------------------------------
def registry_name(index: int) -> str:
    return f"team-{index:05d}"


def repositories_of(index: int, repositories: int) -> list[str]:
    return [repo_name(index * repositories + r) for r in range(repositories)]


def watcher_env(tmp: Path, pg_url: str | None) -> dict[str, str]:
    """Embedded defaults: only a data dir, a key, and no HTTP side (nothing here reads it)."""
    env = {
        "WATCHER_DATA_DIR": str(tmp / "data"),
        "WATCHER_SECRET_KEY": secrets.token_urlsafe(24),
        "WATCHER_LISTEN": "off",
    }
    if pg_url:
        env["WATCHER_DATABASE_URL"] = pg_url
    return env


def watcher_cli(env: dict[str, str], *args: str) -> None:
    argv = [sys.executable, "-m", "watcher", *args]
    done = subprocess.run(argv, env={**os.environ, **env}, cwd=ROOT, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"watcher {' '.join(args)}: {done.stderr.strip()}")


def register(env: dict[str, str], tmp: Path, args: argparse.Namespace, port: int) -> None:
    """`watcher registry apply --no-verify`, a few hundred registries a file (the files are bounded)."""
    for start in range(0, args.registries, 500):
        entries = [
            {
                "name": registry_name(i),
                "provider": "oci",
                "url": f"http://{host_of(i)}:{port}",
                "interval": f"{args.interval}s",
                "repositories": repositories_of(i, args.repositories),
            }
            for i in range(start, min(args.registries, start + 500))
        ]
        path = tmp / f"registries-{start}.yaml"
        path.write_text(json.dumps({"registries": entries}))  # JSON is YAML
        watcher_cli(env, "registry", "apply", "-f", str(path), "--no-verify")


class Workers:
    """`--workers` x `watcher run`, each logging to the temporary dir."""

    def __init__(self, env: dict[str, str], tmp: Path, count: int, concurrency: int | None) -> None:
        self.redis_pidfile = Path(env["WATCHER_DATA_DIR"]) / "redis.pid"  # the embedded Redis daemonizes
        self.procs: list[subprocess.Popen[bytes]] = []
        for n in range(count):
            argv = [sys.executable, "-m", "watcher", "run", "--loglevel", "WARNING"]
            if concurrency:
                argv += ["--concurrency", str(concurrency)]
            with open(tmp / f"watcher-run-{n}.log", "wb") as log:
                self.procs.append(
                    subprocess.Popen(argv, env={**os.environ, **env}, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
                )

    def processes(self) -> tuple[list[int], list[int]]:
        """The pids of the watcher processes (every worker, its beat and pool) and of the embedded Redis."""
        ours: list[int] = []
        others: list[int] = []
        pids = [p.pid for p in self.procs]
        while pids:
            pid = pids.pop()
            with contextlib.suppress(OSError):
                comm = Path(f"/proc/{pid}/comm").read_text().strip()
                (others if comm.startswith("redis") else ours).append(pid)
                pids += [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
        with contextlib.suppress(OSError, ValueError):
            embedded = int(self.redis_pidfile.read_text().strip())
            if embedded not in others:
                others.append(embedded)
        return ours, others

    def cpu(self) -> tuple[float, float]:
        ours, others = self.processes()
        return sum(_cpu(p) for p in ours), sum(_cpu(p) for p in others)

    def cpu_by_process(self) -> dict[int, tuple[str, float]]:
        """Each watcher process's role (a worker's main process, its pool's, or the command line of another
        child: the beat, the HTTP side) and CPU seconds so far."""
        tops = {p.pid for p in self.procs}
        roles: dict[int, tuple[str, float]] = {}
        for pid in self.processes()[0]:
            with contextlib.suppress(OSError, ValueError):
                parent = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
                line = Path(f"/proc/{pid}/cmdline").read_bytes()
                if pid in tops:
                    role = "worker main"
                elif parent in tops and Path(f"/proc/{parent}/cmdline").read_bytes() == line:
                    role = "pool process"
                else:
                    role = line.replace(b"\0", b" ").decode(errors="replace").strip()[-60:]
                roles[pid] = (role, _cpu(pid))
        return roles

    def rss_mb(self) -> float:
        return sum(_rss_kb(pid) for pid in self.processes()[0]) / 1024

    def alive(self) -> bool:
        return all(p.poll() is None for p in self.procs)

    def stop(self) -> None:
        for proc in self.procs:
            stop_process(proc, timeout=30)  # its beat and HTTP side end with it (`watcher.runtime.parent`)


def _cpu(pid: int) -> float:
    try:
        return process_cpu(pid)
    except (OSError, ValueError, IndexError):
        return 0.0


def _rss_kb(pid: int) -> int:
    with contextlib.suppress(OSError, ValueError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


# ---- measuring ------------------------------------------------------------------------------------------
@dataclass
class Pushes:
    """Tags pushed during the window, and when their `added` entries reached the stream."""

    pushed: dict[tuple[str, str], float] = field(default_factory=dict)
    seen: dict[tuple[str, str], float] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def latencies(self) -> list[float]:
        with self.lock:
            return [self.seen.get(key, float("inf")) - at for key, at in self.pushed.items()]


@contextlib.contextmanager
def stream_reader(client: redis.Redis, stream: str, pushes: Pushes) -> Iterator[None]:
    """A thread blocked in XREAD, noting when each `added` entry arrives. It reads on from the newest entry
    there when it starts, never from `$` again: each XREAD from `$` starts at that moment's newest entry, so
    an entry appended between two reads that found nothing (the first push's, as steady polls add none) was
    never seen."""
    stop = threading.Event()
    newest = cast(list[Any], client.xrevrange(stream, count=1))

    def read() -> None:
        last = newest[0][0] if newest else "0-0"
        while not stop.is_set():
            with contextlib.suppress(redis.RedisError):
                answer = cast(list[Any], client.xread({stream: last}, block=500))
                for _, entries in answer or []:
                    at = time.monotonic()
                    for entry_id, fields in entries:
                        last = entry_id
                        if fields.get("change") == "added":
                            with pushes.lock:
                                pushes.seen.setdefault((fields["repository"], fields["tag"]), at)

    thread = threading.Thread(target=read, name="stream-reader", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(5)


def pusher(registry_url: str, args: argparse.Namespace, pushes: Pushes, stop: threading.Event) -> None:
    """A new tag on a random registry's random repository every `--push-every` seconds."""
    blobs, rng, n = blob_refs(), random.Random(7), 0
    with RegistryClient(registry_url) as client:
        while not stop.wait(args.push_every):
            repo = rng.choice(repositories_of(rng.randrange(args.registries), args.repositories))
            tag = f"pushed-{n}"
            n += 1
            push_manifest(client, repo, tag, blobs, "pushed")
            with pushes.lock:
                pushes.pushed[(repo, tag)] = time.monotonic()


def lag_sampler(client: redis.Redis, samples: list[float], queue: list[int], stop: threading.Event) -> None:
    """`watcher_schedule_lag_seconds` and the broker's queue length, every 2 s."""
    from watcher.db import session_scope
    from watcher.polling import pool
    from watcher.web.metrics import schedule_lag

    while not stop.wait(2):
        with contextlib.suppress(Exception), session_scope() as session:
            samples.append(schedule_lag(session))
            queue.append(pool.queued(client))


def baselined(count: int) -> bool:
    from sqlalchemy import func, select

    from watcher.db import session_scope
    from watcher.models import Registry

    with session_scope() as session:
        return (session.scalar(select(func.count()).where(Registry.baselined.is_(True))) or 0) >= count


def finished_polls() -> int:
    """Registry-wide polls finished so far (any trigger)."""
    from sqlalchemy import func, select

    from watcher.db import session_scope
    from watcher.models import PollRun

    with session_scope() as session:
        return session.scalar(select(func.count()).where(PollRun.finished_at.is_not(None))) or 0


def described() -> tuple[int, int]:
    """Of the distinct digests the registries' tags point at, how many the background fill has described (an
    `images` row), and how many there are: the fill's work left is their difference."""
    from sqlalchemy import func, select

    from watcher import schema
    from watcher.db import session_scope

    tags, images = schema.tags.c, schema.images.c
    with session_scope() as session:
        wanted = session.scalar(select(func.count(func.distinct(tags.digest)))) or 0
        stored = session.scalar(
            select(func.count(func.distinct(tags.digest))).join(schema.images, images.digest == tags.digest)
        )
    return stored or 0, wanted


def filled(counts: tuple[int, int]) -> bool:
    stored, wanted = counts
    return stored >= wanted


@dataclass
class Runs:
    completed: int
    failed: int
    lags: list[float]
    errors: list[str]
    #: slots of the window (up to one interval before its end) and those a scheduled poll started for
    slots: int = 0
    served: int = 0
    unserved: list[str] = field(default_factory=list)


def scheduled_runs(since: datetime, until: datetime, interval: int) -> Runs:
    """Scheduled polls that finished in [since, until), and each one's lag behind its slot."""
    from sqlalchemy import select

    from watcher.db import session_scope
    from watcher.models import PollRun, Registry
    from watcher.polling.scheduler import EPOCH, phase_of

    with session_scope() as session:
        rows = session.execute(
            select(Registry.name, PollRun.started_at, PollRun.finished_at, PollRun.outcome, PollRun.error)
            .join(Registry, Registry.id == PollRun.registry_id)
            .where(PollRun.trigger == "schedule", PollRun.started_at >= since - timedelta(seconds=interval))
        ).all()
        names = list(session.scalars(select(Registry.name)))
    step = timedelta(seconds=interval)
    lags, errors, started_by_slot = [], [], set()
    completed = 0
    for name, started, finished, outcome, error in rows:
        origin = EPOCH + timedelta(seconds=phase_of(name, interval))
        slot = origin + step * ((started - origin) // step)
        started_by_slot.add((name, slot))
        if finished is None or not since <= finished < until:
            continue
        completed += 1
        lags.append((started - slot).total_seconds())
        if outcome != "ok":
            errors.append(f"{name}: {outcome}: {error}")
    runs = Runs(completed, len(errors), lags, errors)
    for name in names:  # every slot from the window's start to one interval before its end was served?
        origin = EPOCH + timedelta(seconds=phase_of(name, interval))
        slot = origin + step * ((since - origin) // step + 1)
        while slot < until - step:
            runs.slots += 1
            if (name, slot) in started_by_slot:
                runs.served += 1
            else:
                runs.unserved.append(f"{name} at {slot:%H:%M:%S}")
            slot += step
    return runs


# ---- the run --------------------------------------------------------------------------------------------
@contextlib.contextmanager
def postgres(enabled: bool) -> Iterator[str | None]:
    if not enabled:
        yield None
        return
    import psycopg

    name = f"watcher_bench_many_{secrets.token_hex(4)}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{PG_ADMIN_URL.rsplit('/', 1)[0]}/{name}"
    finally:
        from watcher.db import get_engine

        get_engine().dispose()
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def wait(condition: Any, seconds: float, what: str, workers: Workers) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if not workers.alive():
            raise SystemExit(f"a `watcher run` exited while waiting for {what}")
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(1)


#: the fill's wait ends once it has described nothing for this long (`wait_for_fill`)
FILL_STALL_SECONDS = 180


def wait_for_fill(seconds: float, workers: Workers) -> tuple[int, int]:
    """The fill's counts (`described`) once it is done, after `seconds`, or once it has described nothing for
    FILL_STALL_SECONDS: it reads only while no poll is late, so a pool with no room to spare starves it, and
    waiting longer would measure nothing else."""
    deadline = time.monotonic() + seconds
    counts, progressed = described(), time.monotonic()
    while not filled(counts) and time.monotonic() < min(deadline, progressed + FILL_STALL_SECONDS):
        if not workers.alive():
            raise SystemExit("a `watcher run` exited while waiting for the image metadata fill")
        time.sleep(1)
        latest = described()
        if latest[0] > counts[0]:
            progressed = time.monotonic()
        counts = latest
    return counts


def run(args: argparse.Namespace) -> int:
    tmp = Path(tempfile.mkdtemp(prefix="watcher-many-"))
    try:
        registry_server = RegistryServer(root=tmp / "registry", every_address=not args.forwarder)
        with registry_server as registry, postgres(args.postgres) as pg_url:
            started = time.monotonic()
            seed(registry.url, args.registries * args.repositories, args.tags, args.seed_workers)
            print(f"seeded {args.registries * args.repositories} repositories in {time.monotonic() - started:.0f} s")
            with forwarder(registry, args, tmp) as (port, forwarder_proc):
                env = watcher_env(tmp, pg_url)
                os.environ.update(env)  # this process reads the same state (database, embedded Redis)
                register(env, tmp, args, port)
                return measure(args, env, tmp, registry, forwarder_proc, port)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def measure(
    args: argparse.Namespace,
    env: dict[str, str],
    tmp: Path,
    registry: RegistryServer,
    forwarder_proc: subprocess.Popen[bytes] | None,
    port: int,
) -> int:
    from watcher import bus
    from watcher.models import utcnow
    from watcher.settings import get_settings

    workers = Workers(env, tmp, args.workers, args.concurrency)
    try:
        started = time.monotonic()
        wait(lambda: baselined(args.registries), 60 + args.registries, "every baseline", workers)
        warm_cpu, warm_polls = workers.cpu()[0], finished_polls()
        print(
            f"every registry has its baseline after {time.monotonic() - started:.0f} s: {warm_polls} polls, "
            f"{1000 * warm_cpu / max(1, warm_polls):.1f} ms CPU a poll (watcher processes, start-up included)"
        )
        if args.fill_timeout > 0:  # the steady state: every baseline digest described, nothing left to fill
            started = time.monotonic()
            stored, wanted = counts = wait_for_fill(args.fill_timeout, workers)
            if filled(counts):
                print(f"every baseline digest described after {time.monotonic() - started:.0f} s more")
            else:
                print(
                    f"the fill stopped short after {time.monotonic() - started:.0f} s ({stored} of {wanted} digests "
                    "described): measuring while it waits for room in the pool"
                )
            warm_cpu, warm_polls = workers.cpu()[0], finished_polls()
        time.sleep(args.interval)  # one more interval: every registry on its own grid
        steady_cpu, steady_polls = workers.cpu()[0] - warm_cpu, finished_polls() - warm_polls
        print(
            f"the interval after it: {steady_polls} polls, {1000 * steady_cpu / max(1, steady_polls):.1f} ms CPU a poll"
        )
        client = redis.Redis(unix_socket_path=str(bus.socket_path(get_settings())), decode_responses=True)
        pushes, stop = Pushes(), threading.Event()
        lag_samples: list[float] = []
        queue_samples: list[int] = []
        with stream_reader(client, get_settings().events_stream, pushes):
            threads = [
                threading.Thread(target=pusher, args=(registry.url, args, pushes, stop), daemon=True),
                threading.Thread(target=lag_sampler, args=(client, lag_samples, queue_samples, stop), daemon=True),
            ]
            since, cpu_before, by_process_before = utcnow(), workers.cpu(), workers.cpu_by_process()
            others_before = other_cpu(registry, forwarder_proc)
            requests_before = forwarded_counts(tmp)
            polls_before, described_before = finished_polls(), described()
            for thread in threads:
                thread.start()
            time.sleep(args.minutes * 60)
            until, cpu_after, rss = utcnow(), workers.cpu(), workers.rss_mb()
            print_by_process(by_process_before, workers.cpu_by_process(), finished_polls() - polls_before)
            print_fill(described_before, described())
            others = tuple(a - b for a, b in zip(other_cpu(registry, forwarder_proc), others_before, strict=True))
            time.sleep(1.5)  # the forwarder's next write
            requests = forwarded_counts(tmp) - requests_before
            stop.set()
            pushed_last = max(pushes.pushed.values(), default=time.monotonic())
            deadline = pushed_last + args.interval + PUSH_MARGIN + 5
            while time.monotonic() < deadline and any(x == float("inf") for x in pushes.latencies()):
                time.sleep(1)
        for thread in threads:
            thread.join(30)
    finally:
        workers.stop()
    runs = scheduled_runs(since, until, args.interval)
    floor = measure_floor(args, port, registry) if args.floor_seconds > 0 else None
    return report(args, runs, cpu_after, cpu_before, rss, others, lag_samples, queue_samples, pushes, requests, floor)


def print_by_process(before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]], polls: int) -> None:
    """The window's CPU a poll of each watcher process, by role."""
    shares = [
        (role, 1000 * (cpu - before[pid][1]) / max(1, polls)) for pid, (role, cpu) in after.items() if pid in before
    ]
    print("CPU a poll by process, ms: " + ", ".join(f"{role} {ms:.1f}" for role, ms in sorted(shares)))


def print_fill(before: tuple[int, int], after: tuple[int, int]) -> None:
    """What the background fill described in the window: its reads share the pool with the polls."""
    print(
        f"image metadata fill: {after[0] - before[0]} digests described in the window; "
        f"{before[0]} of {before[1]} described at its start, {after[0]} of {after[1]} at its end"
    )


def other_cpu(registry: RegistryServer, forwarder_proc: subprocess.Popen[bytes] | None) -> tuple[float, float, float]:
    """CPU seconds so far of the registry, the forwarder (if any) and every PostgreSQL server process."""
    proc = registry._proc
    postgres = [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit() and _comm(p) == "postgres"]
    return (
        _cpu(proc.pid) if proc is not None else 0.0,
        _cpu(forwarder_proc.pid) if forwarder_proc is not None else 0.0,
        sum(_cpu(pid) for pid in postgres),
    )


def _comm(proc: Path) -> str:
    with contextlib.suppress(OSError):
        return (proc / "comm").read_text().strip()
    return ""


def report(
    args: argparse.Namespace,
    runs: Runs,
    cpu_after: tuple[float, float],
    cpu_before: tuple[float, float],
    rss: float,
    others: tuple[float, ...],
    lag_samples: list[float],
    queue_samples: list[int],
    pushes: Pushes,
    requests: Counter[str],
    floor: Floor | None,
) -> int:
    per_minute = runs.completed / args.minutes
    due = args.registries * 60 / args.interval
    watcher_cpu = cpu_after[0] - cpu_before[0]
    redis_cpu = cpu_after[1] - cpu_before[1]
    lags = runs.lags or [float("inf")]
    latencies = pushes.latencies()
    p95 = percentile(lags, 95)
    slowest_push = max(latencies, default=0.0)
    print(f"machine: {machine()}")
    print(
        f"{args.registries} registries x {args.repositories} repositories x {args.tags} tags, every "
        f"{args.interval} s, {args.workers} x `watcher run`"
        f"{f' --concurrency {args.concurrency}' if args.concurrency else ''}, "
        f"{'PostgreSQL' if args.postgres else 'SQLite'} + embedded Redis, {args.minutes} min measured"
    )
    print(f"polls completed a minute   {per_minute:8.1f}  (due: {due:.0f})")
    print(
        f"schedule lag (runs) s      p50 {percentile(lags, 50):.2f}  p95 {p95:.2f}  max {max(lags):.2f}"
        f"  (gauge sampled: p95 {percentile(lag_samples or [0.0], 95):.1f}, max {max(lag_samples, default=0.0):.1f})"
    )
    minutes = [lag_samples[i : i + 30] for i in range(0, len(lag_samples), 30)]  # sampled every 2 s
    print("gauge max, minute by minute " + " ".join(f"{max(m):.1f}" for m in minutes))
    print(f"broker queue length        max {max(queue_samples, default=0)}, last {(queue_samples or [0])[-1]}")
    print(f"slots served               {runs.served:8d} of {runs.slots}  {' '.join(runs.unserved[:5])}")
    print(f"failed polls               {runs.failed:8d}")
    polls = max(1, runs.completed)
    watcher_ms = 1000 * watcher_cpu / polls
    registry_ms, forwarder_ms, postgres_ms = (1000 * cpu / polls for cpu in others)
    print(
        f"CPU per poll, ms           {watcher_ms:8.1f}  (watcher processes; embedded Redis "
        f"{1000 * redis_cpu / polls:.1f}; registry {registry_ms:.1f}, forwarder {forwarder_ms:.1f}, "
        f"PostgreSQL {postgres_ms:.1f})"
    )
    print(f"RSS, watcher processes     {rss:8.0f} MB")
    print("requests per poll          " + ", ".join(f"{kind} {n / polls:.2f}" for kind, n in requests.most_common()))
    if latencies:
        print(
            f"push to event s            p50 {statistics.median(latencies):.1f}  max {slowest_push:.1f}"
            f"  ({len(latencies)} pushes)"
        )
        unreported = [f"{repo}:{tag}" for repo, tag in pushes.pushed if (repo, tag) not in pushes.seen]
        if unreported:  # `pushed-N`: the (N+1)th push
            print("  unreported: " + ", ".join(unreported))
    if floor is not None:
        print(
            f"floor (leanest client)     {floor.polls_a_minute:8.1f} polls a minute at full speed, "
            f"{1000 * floor.client_cpu:.1f} ms CPU a poll (registry {1000 * floor.registry_cpu:.1f}); "
            f"{args.floor_processes} processes x {FLOOR_THREADS} threads, {args.floor_seconds:g} s"
        )
        print(
            f"watcher / floor            polls a minute {per_minute / min(due, floor.polls_a_minute):.2f} "
            f"of min(due, floor); CPU a poll {watcher_ms / (1000 * floor.client_cpu):.2f}x the floor client's"
        )
    for error in runs.errors[:5]:
        print(f"  failed: {error}")
    missed = []
    if per_minute < 0.99 * due:
        missed.append(f"polls a minute {per_minute:.0f} < {0.99 * due:.0f}")
    if p95 > LAG_P95_TARGET:
        missed.append(f"lag p95 {p95:.1f} s > {LAG_P95_TARGET:.0f} s")
    if runs.failed:
        missed.append(f"{runs.failed} failed polls")
    if slowest_push > args.interval + PUSH_MARGIN:
        missed.append(f"a push reported after {slowest_push:.0f} s > {args.interval + PUSH_MARGIN:.0f} s")
    print("targets: " + ("all met" if not missed else "MISSED: " + "; ".join(missed)))
    return 1 if missed else 0


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--registries", type=int, default=1000)
    parser.add_argument("--repositories", type=int, default=10)
    parser.add_argument("--tags", type=int, default=3)
    parser.add_argument("--interval", type=int, default=60, help="seconds")
    parser.add_argument("--minutes", type=float, default=3, help="measured, after the warm-up")
    parser.add_argument("--workers", type=int, default=1, help="`watcher run` processes")
    parser.add_argument("--concurrency", type=int, help="of each `watcher run` (default: its own)")
    parser.add_argument("--postgres", action="store_true", help="PostgreSQL (WATCHER_BENCH_PG) instead of SQLite")
    parser.add_argument("--push-every", type=float, default=15, help="seconds between pushes in the window")
    parser.add_argument("--seed-workers", type=int, default=16)
    parser.add_argument("--floor-seconds", type=float, default=60, help="the leanest client's run (0: none)")
    parser.add_argument(
        "--fill-timeout",
        type=float,
        default=1800,
        help="seconds to wait, after the baselines, until the background fill has described every digest; past"
        f" them, or after {FILL_STALL_SECONDS} s without progress, the run measures while it runs (0: at once)",
    )
    parser.add_argument("--floor-processes", type=int, default=2, help="as many as the worker's pool")
    parser.add_argument(
        "--forwarder", action="store_true", help="reach the registry through a forwarder that counts requests by path"
    )
    parser.add_argument("--forward", metavar="HOST:PORT", help=argparse.SUPPRESS)
    parser.add_argument("--port-file", type=Path, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if args.forward:
        forward(args.forward, args.registries, args.port_file)
        return 0
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
