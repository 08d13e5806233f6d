"""How long a steady poll takes against a registry that is tens of milliseconds away, and what it writes.

Starts the real registry (CNCF Distribution, as the tests do), seeds REPOS x TAGS images into it, puts
`benchmarks.delay_proxy` in front of it (every request delayed by DELAY ms), registers the proxy as an
`oci` registry in a throw-away watcher installation (temporary data dir and SQLite database, a unique
Redis stream key, all removed afterwards) and records the baseline. Then, alternating, it times RUNS steady
polls (`watcher.polling.poll.poll`, nothing changed) and RUNS listings by a minimal 8-thread httpx client that
makes exactly the same requests (catalog pages, each repository's tag list, a HEAD per tag with the same
Accept header) through the same proxy. It counts the database rows every steady poll writes, and, last,
changes one tag and counts the rows that poll writes.

Targets (exit status 1 if one is missed): the median steady poll takes at most TARGET (1.3) times the
baseline client's median; a steady poll writes no snapshot or event rows (only its own poll record and the
registry's lease); both clients make the same listing requests, as counted by the proxy (requests
only watcher makes, such as its one-per-poll Harbor probe, are shown and count in watcher's time); and
changing one tag writes exactly one tag row, one event row and its repository's row (fingerprint and
revision; the poll's event counters besides).

With `--command`, each timed steady poll is `watcher poll` in a new process, as an operator runs it: its
start, imports and schema check count in watcher's time (and its CPU, as a child's); its writes are then
checked by the table row counts only.

Run from the repository root: `.venv/bin/python -m benchmarks.poll_speed --repos 100 --tags 10`.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib.util
import json
import os
import platform
import re
import resource
import secrets
import shlex
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import httpx
import redis
from click.testing import CliRunner
from sqlalchemy import Engine, event, func, select

from tests.support.processes import stop_process
from tests.support.registry import OCI_MANIFEST, RegistryClient, RegistryServer, _image_blobs
from watcher.cli.main import main as watcher_cli
from watcher.db import get_engine, session_scope
from watcher.models import Event, PollRun, Registry, Repository, Tag
from watcher.polling.poll import PollResult, poll
from watcher.polling.snapshot import load_snapshot
from watcher.registry.oci import MANIFEST_TYPES, PAGE_SIZE
from watcher.settings import get_settings

ROOT = Path(__file__).resolve().parent.parent
NAME = "bench"
BOOKKEEPING = frozenset({"poll_runs", "registries", "counters"})  # counters: the poll's metrics
SNAPSHOT = ("repositories", "tags", "events")
_DML = re.compile(r"^\s*(INSERT\s+INTO|UPDATE|DELETE\s+FROM)\s+\"?(\w+)\"?", re.IGNORECASE)

Digests = dict[str, dict[str, str]]


# ---- the registry and its content -----------------------------------------------------------------
def seed(registry_url: str, repos: int, tags: int, workers: int) -> Digests:
    """REPOS repositories of TAGS tags each, every tag its own digest, all sharing one config and layer."""
    first = repo_name(0)
    with RegistryClient(registry_url) as client:
        blobs = [(client.upload_blob(first, blob), len(blob)) for blob in shared_blobs()]
    local = threading.local()
    clients: list[RegistryClient] = []

    def client_of_thread() -> RegistryClient:
        if not hasattr(local, "client"):
            local.client = RegistryClient(registry_url)
            clients.append(local.client)
        client: RegistryClient = local.client
        return client

    def push_repository(index: int) -> tuple[str, dict[str, str]]:
        client, repo = client_of_thread(), repo_name(index)
        if index:
            for digest, _ in blobs:
                mount(client, repo, digest, first)
        return repo, {tag_name(t): push_manifest(client, repo, tag_name(t), blobs, "v1") for t in range(tags)}

    try:
        with ThreadPoolExecutor(workers) as pool:
            return dict(pool.map(push_repository, range(repos)))
    finally:
        for client in clients:
            client.close()


def shared_blobs() -> tuple[bytes, bytes]:
    """The one config and layer every benchmark image is made of."""
    return _image_blobs("watcher-benchmark", "linux/amd64")


def blob_refs() -> list[tuple[str, int]]:
    return [("sha256:" + hashlib.sha256(blob).hexdigest(), len(blob)) for blob in shared_blobs()]


def repo_name(index: int) -> str:
    return f"bench/app-{index:05d}"


def tag_name(index: int) -> str:
    return f"1.0.{index}"


def mount(client: RegistryClient, repo: str, digest: str, source: str) -> None:
    """Cross-repository blob mount: one request instead of an upload."""
    response = client.request("POST", f"/v2/{repo}/blobs/uploads/?mount={digest}&from={source}")
    if response.status_code != 201:
        raise RuntimeError(f"mounting {digest} into {repo}: HTTP {response.status_code} {response.text[:200]}")


def push_manifest(client: RegistryClient, repo: str, tag: str, blobs: list[tuple[str, int]], build: str) -> str:
    """An OCI manifest over the shared blobs; the annotation makes each tag (and build) its own digest."""
    (config, config_size), (layer, layer_size) = blobs
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config, "size": config_size},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": layer, "size": layer_size}],
        "annotations": {"org.watcher.benchmark": f"{repo}:{tag}:{build}"},
    }
    return client.put_manifest(repo, tag, json.dumps(manifest).encode(), OCI_MANIFEST)


@contextlib.contextmanager
def delay_proxy(upstream: str, delay_ms: float) -> Iterator[tuple[str, int]]:
    """`benchmarks.delay_proxy` in its own process (so it never competes for this one's GIL)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.delay_proxy", "--upstream", upstream, "--delay-ms", str(delay_ms)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        if not line.startswith("listening "):
            raise RuntimeError(f"delay proxy did not start (said {line!r})")
        yield line.removeprefix("listening "), proc.pid
    finally:
        stop_process(proc)


# ---- a throw-away watcher installation ------------------------------------------------------------
@contextlib.contextmanager
def watcher_installation(tmp: Path, redis_url: str) -> Iterator[Engine]:
    """WATCHER_* pointing into `tmp` and a unique stream key; restored and cleaned up afterwards."""
    stream = f"watcher-bench:{secrets.token_hex(4)}:events"
    values = {
        "WATCHER_DATA_DIR": str(tmp / "data"),
        "WATCHER_DATABASE_URL": f"sqlite:///{tmp / 'watcher.db'}",
        "WATCHER_REDIS_URL": redis_url,
        "WATCHER_EVENTS_STREAM": stream,
        "WATCHER_SECRET_KEY": secrets.token_urlsafe(24),
    }
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    get_settings.cache_clear()
    get_engine.cache_clear()
    try:
        yield get_engine()
    finally:
        get_engine().dispose()
        get_engine.cache_clear()
        get_settings.cache_clear()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        with contextlib.suppress(redis.RedisError):
            client = redis.Redis.from_url(redis_url)
            for key in client.scan_iter(f"{stream}*"):
                client.delete(key)
            client.close()


def register(proxy_url: str, concurrency: int) -> None:
    args = ["registry", "add", NAME, "--provider", "oci", "--url", proxy_url, "--max-concurrency", str(concurrency)]
    result = CliRunner().invoke(watcher_cli, args)
    if result.exit_code != 0:
        raise RuntimeError(f"registry add failed: {result.output}{result.stderr}")


@dataclass
class Writes:
    """Rows written, by table, counted statement by statement from SQLite's own change counter."""

    rows: Counter[str] = field(default_factory=Counter)
    statements: Counter[str] = field(default_factory=Counter)

    def snapshot_rows(self) -> int:
        return sum(n for table, n in self.rows.items() if table not in BOOKKEEPING)

    def describe(self) -> str:
        tables = sorted(set(self.statements) | {*SNAPSHOT})
        return ", ".join(f"{t} {self.rows[t]} rows/{self.statements[t]} stmts" for t in tables)


@contextlib.contextmanager
def counting_writes(engine: Engine) -> Iterator[Writes]:
    writes = Writes()

    def before(conn: Any, cursor: Any, statement: str, params: Any, context: Any, executemany: bool) -> None:
        conn.info["bench_changes"] = conn.connection.dbapi_connection.total_changes

    def after(conn: Any, cursor: Any, statement: str, params: Any, context: Any, executemany: bool) -> None:
        match = _DML.match(statement)
        if match:
            table = match.group(2).lower()
            writes.statements[table] += 1
            writes.rows[table] += conn.connection.dbapi_connection.total_changes - conn.info.pop("bench_changes")

    event.listen(engine, "before_cursor_execute", before)
    event.listen(engine, "after_cursor_execute", after)
    try:
        yield writes
    finally:
        event.remove(engine, "before_cursor_execute", before)
        event.remove(engine, "after_cursor_execute", after)


def table_counts(engine: Engine) -> dict[str, int]:
    with session_scope(engine) as session:
        return {
            model.__table__.name: int(session.scalar(select(func.count()).select_from(model)) or 0)
            for model in (Registry, Repository, Tag, Event, PollRun)
        }


def stored_digests(engine: Engine) -> Digests:
    with session_scope(engine) as session:
        registry_id = session.scalar(select(Registry.id).where(Registry.name == NAME))
        listing, _ = load_snapshot(session, int(registry_id or 0))
    return {repo: {tag: state.digest for tag, state in tags.items()} for repo, tags in listing.items()}


# ---- the yardstick: a minimal 8-thread httpx client -----------------------------------------------
class BaselineClient:
    """The same requests as a watcher poll, from THREADS threads sharing one httpx.Client of THREADS connections."""

    def __init__(self, base_url: str, threads: int) -> None:
        self.base_url = base_url
        self.threads = threads
        self.accept = ", ".join(MANIFEST_TYPES)

    def listing(self) -> Digests:
        pool_limits = httpx.Limits(max_connections=self.threads, max_keepalive_connections=self.threads)
        with httpx.Client(base_url=self.base_url, limits=pool_limits) as http:
            return self._list(http)

    def _list(self, http: httpx.Client) -> Digests:
        def pages(path: str, key: str) -> list[str]:
            items: list[str] = []
            url: str | None = f"{path}?n={PAGE_SIZE}"
            while url is not None:
                response = http.get(url)
                response.raise_for_status()
                items += response.json().get(key) or []
                link = response.links.get("next")
                url = urljoin(self.base_url + "/", link["url"]) if link else None
            return items

        def digest(repo: str, tag: str) -> str:
            response = http.head(f"/v2/{repo}/manifests/{tag}", headers={"Accept": self.accept})
            response.raise_for_status()
            return response.headers["docker-content-digest"]

        with ThreadPoolExecutor(self.threads) as pool:
            repos = pool.submit(pages, "/v2/_catalog", "repositories").result()
            tag_lists = {pool.submit(pages, f"/v2/{r}/tags/list", "tags"): r for r in repos}
            heads: dict[Future[str], tuple[str, str]] = {}
            for done in as_completed(tag_lists):
                repo = tag_lists[done]
                heads.update({pool.submit(digest, repo, tag): (repo, tag) for tag in done.result()})
            result: Digests = {}
            for head, (repo, tag) in heads.items():
                result.setdefault(repo, {})[tag] = head.result()
        return result


# ---- measuring --------------------------------------------------------------------------------------
@dataclass
class Rig:
    """What the measurements run against: the proxy (and how to ask it), and the processes behind it."""

    proxy_url: str
    registry_url: str
    helper_pids: tuple[int, ...]  # the proxy and the registry: their CPU is part of each poll's cost

    def proxy_stats(self, reset: bool = False) -> dict[str, Any]:
        """What the proxy forwarded since the last reset (see `benchmarks.delay_proxy`)."""
        if reset:
            return dict(httpx.post(f"{self.proxy_url}/_proxy/reset").json())
        return dict(httpx.get(f"{self.proxy_url}/_proxy/stats").json())

    def helper_cpu(self) -> float:
        return sum(process_cpu(pid) for pid in self.helper_pids)


def process_cpu(pid: int) -> float:
    """User + system CPU seconds a process has used so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Run:
    seconds: float
    cpu: float  # this process
    helper_cpu: float  # proxy and registry
    requests: Counter[str]
    in_flight: float  # requests in the proxy at a time, on average over the run
    lead_in: float  # seconds from the start to the first request
    tail: float  # seconds from the last response to the end


@dataclass
class Series:
    runs: list[Run] = field(default_factory=list)

    @property
    def seconds(self) -> list[float]:
        return [r.seconds for r in self.runs]

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    @property
    def requests(self) -> Counter[str]:
        return self.runs[-1].requests

    def median_of(self, what: Callable[[Run], float]) -> float:
        return statistics.median(what(r) for r in self.runs)


def timed(action: Callable[[], Any], rig: Rig) -> tuple[Any, Run]:
    """The action's result, and its wall time, CPU time and requests forwarded by the proxy."""
    rig.proxy_stats(reset=True)
    helpers0 = rig.helper_cpu()
    cpu0, t0 = time.process_time() + children_cpu(), time.monotonic()
    result = action()
    end = time.monotonic()
    wall, cpu = end - t0, time.process_time() + children_cpu() - cpu0
    stats = rig.proxy_stats()
    run = Run(
        seconds=wall,
        cpu=cpu,
        helper_cpu=rig.helper_cpu() - helpers0,
        requests=Counter(stats["by_kind"]),
        in_flight=stats["busy_seconds"] / wall,
        lead_in=stats["first_start"] - t0,
        tail=end - stats["last_end"],
    )
    return result, run


def children_cpu() -> float:
    """CPU of the child processes waited for so far (`--command`'s polls; the proxy and registry are not)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def poll_command(python: str = sys.executable) -> None:
    """`watcher poll` as an operator runs it: a new process, its start, imports and schema check included
    (`python`: the interpreter of another install, such as a production one without the test tools)."""
    done = subprocess.run([python, "-m", "watcher", "poll", NAME], cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"watcher poll failed: {done.stderr.strip()}")


@dataclass
class Outcome:
    watcher: Series
    baseline: Series
    steady_writes: list[Writes]
    counts_before: dict[str, int]
    counts_after: dict[str, int]
    change_writes: Writes
    change_events: int
    first_poll: Run
    failures: list[str]


def measure(args: argparse.Namespace, rig: Rig, engine: Engine, expected: Digests) -> Outcome:
    failures: list[str] = []
    register(rig.proxy_url, args.concurrency)
    first, first_run = timed(lambda: poll(NAME), rig)
    if not first.baseline or first.tags != args.repos * args.tags:
        failures.append(f"baseline poll saw {first.repositories} repositories, {first.tags} tags")
    if stored_digests(engine) != expected:
        failures.append("the stored snapshot differs from what was pushed")
    client = BaselineClient(rig.proxy_url, args.concurrency)
    if client.listing() != expected:  # a warm-up, and a check that it lists the same registry
        failures.append("the baseline client listed something else than what was pushed")

    watcher, baseline, writes = Series(), Series(), []
    counts_before = table_counts(engine)
    for _ in range(args.runs):
        with counting_writes(engine) as written:
            result, run = timed((lambda: poll_command(args.python)) if args.command else lambda: poll(NAME), rig)
        writes.append(written)  # (none seen with --command: the poll's own process writes)
        watcher.runs.append(run)
        if result is not None and (result.events or result.requests != run.requests.total()):
            failures.append(f"steady poll: {len(result.events)} events, {result.requests} requests counted")
        baseline.runs.append(timed(client.listing, rig)[1])
    counts_after = table_counts(engine)

    change_writes, change_events = one_change(rig.registry_url, engine, args)
    return Outcome(
        watcher, baseline, writes, counts_before, counts_after, change_writes, change_events, first_run, failures
    )


def one_change(registry_url: str, engine: Engine, args: argparse.Namespace) -> tuple[Writes, int]:
    """Point one tag at a new digest, poll, and count what that poll writes."""
    repo, tag = repo_name(args.repos // 2), tag_name(0)
    with RegistryClient(registry_url) as client:
        push_manifest(client, repo, tag, blob_refs(), "v2")
    with counting_writes(engine) as writes:
        result: PollResult = poll(NAME)
    return writes, len(result.events)


# ---- reporting ----------------------------------------------------------------------------------------
def report(args: argparse.Namespace, outcome: Outcome, seed_seconds: float, command: str) -> list[str]:
    """Print the figures; return the targets missed."""
    failures = list(outcome.failures)
    w, b = outcome.watcher, outcome.baseline
    print(
        f"\nsteady poll of {args.repos} repositories x {args.tags} tags through a {args.delay_ms:g} ms proxy, "
        f"{args.concurrency} requests in flight, {args.runs} runs of each client, alternating"
    )
    first = outcome.first_poll
    print(
        f"seeding took {seed_seconds:.1f} s; the first poll (records the baseline, {args.repos * args.tags} tag rows) "
        f"{first.seconds:.2f} s\n"
    )
    header = (
        f"{'client':<20}{'median s':>9}{'min s':>7}{'max s':>7}{'requests':>9}{'req/s':>6}{'in flight':>10}"
        f"{'before/after s':>15}{'cpu s':>6}{'proxy+reg cpu':>14}"
    )
    print(header)
    print("-" * len(header))
    for label, series in (("watcher poll", w), (f"httpx, {args.concurrency} threads", b)):
        total = series.requests.total()
        print(
            f"{label:<20}{series.median:>9.2f}{min(series.seconds):>7.2f}{max(series.seconds):>7.2f}"
            f"{total:>9}{total / series.median:>6.0f}{series.median_of(lambda r: r.in_flight):>10.1f}"
            f"{f'{series.median_of(lambda r: r.lead_in):.2f}/{series.median_of(lambda r: r.tail):.2f}':>15}"
            f"{series.median_of(lambda r: r.cpu):>6.2f}{series.median_of(lambda r: r.helper_cpu):>14.2f}"
        )
    floor = b.requests.total() / args.concurrency * args.delay_ms / 1000
    print(
        f"(floor: {b.requests.total()} requests / {args.concurrency} in flight x {args.delay_ms:g} ms = {floor:.2f} s)"
    )
    print("requests by kind: watcher " + _kinds(w.requests) + "; baseline " + _kinds(b.requests))

    ratio = w.median / b.median
    verdict = "OK" if ratio <= args.target else "MISSED"
    print(
        f"\nratio watcher/baseline, medians: {ratio:.2f} (target <= {args.target:g}: {verdict}); "
        f"minimums: {min(w.seconds) / min(b.seconds):.2f}"
    )
    if ratio > args.target:
        failures.append(f"a steady poll took {ratio:.2f}x the baseline client (target {args.target:g}x)")
    listing_kinds = ("GET catalog", "GET tags/list", "HEAD manifests")
    if any(w.requests[k] != b.requests[k] for k in listing_kinds) or b.requests.total() != sum(
        b.requests[k] for k in listing_kinds
    ):
        failures.append(f"the clients made different listing requests: {_kinds(w.requests)} vs {_kinds(b.requests)}")
    failures += report_writes(args, outcome)
    print(f"\nreproduce: {command}")
    print(
        f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}, Python {sys.version.split()[0]}, "
        f"{platform.system()} {platform.machine()}, sniffio {'installed' if has_sniffio() else 'MISSING (see README)'}"
    )
    sys.stdout.flush()
    for failure in failures:
        print(f"MISSED: {failure}", file=sys.stderr)
    return failures


def has_sniffio() -> bool:
    """httpcore asks for sniffio on every request; without it each ask is a failed import (see README)."""
    return importlib.util.find_spec("sniffio") is not None


def _kinds(requests: Counter[str]) -> str:
    return ", ".join(f"{n} {kind}" for kind, n in sorted(requests.items()))


def report_writes(args: argparse.Namespace, outcome: Outcome) -> list[str]:
    failures = []
    snapshot_rows = max(x.snapshot_rows() for x in outcome.steady_writes)
    print(f"\nDB writes of a steady poll: {outcome.steady_writes[-1].describe()}")
    before, after = outcome.counts_before, outcome.counts_after
    print(
        f"table rows before -> after the {args.runs} steady polls: "
        + ", ".join(f"{t} {before[t]}->{after[t]}" for t in before)
    )
    ok = snapshot_rows == 0 and all(before[t] == after[t] for t in SNAPSHOT)
    print(f"unchanged repositories write no rows, only the poll's own record: {'OK' if ok else 'MISSED'}")
    if not ok:
        failures.append(f"a steady poll wrote {snapshot_rows} snapshot/event rows")
    print(f"one tag changed: {outcome.change_events} event; DB writes: {outcome.change_writes.describe()}")
    changed = {table: outcome.change_writes.rows.get(table, 0) for table in SNAPSHOT}
    if outcome.change_events != 1 or changed != {"repositories": 1, "tags": 1, "events": 1}:
        failures.append("changing one tag should write one tag row, one event row and its repository's row")
    return failures


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--repos", type=int, default=100, help="repositories to seed (default 100)")
    parser.add_argument("--tags", type=int, default=10, help="tags per repository (default 10)")
    parser.add_argument("--delay-ms", type=float, default=20.0, help="delay the proxy adds per request (default 20)")
    parser.add_argument("--runs", type=int, default=5, help="timed runs of each client (default 5)")
    parser.add_argument("--concurrency", type=int, default=8, help="requests in flight, both clients (default 8)")
    parser.add_argument("--target", type=float, default=1.3, help="allowed watcher/baseline ratio (default 1.3)")
    parser.add_argument("--seed-workers", type=int, default=16, help="threads pushing the images (default 16)")
    parser.add_argument(
        "--command", action="store_true", help="time each steady poll as a `watcher poll` process, start included"
    )
    parser.add_argument(
        "--python",
        default=sys.executable,
        help="with --command: the interpreter `watcher poll` runs with, this checkout's code on its path "
        "(e.g. a production venv: `pip install .` without the test tools)",
    )
    parser.add_argument("--redis-url", default=os.environ.get("WATCHER_TEST_REDIS", "redis://127.0.0.1:6379/0"))
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    command = ".venv/bin/python -m benchmarks.poll_speed " + shlex.join(sys.argv[1:] if argv is None else argv)
    with tempfile.TemporaryDirectory(prefix="watcher-bench-") as tmp_name:
        tmp = Path(tmp_name)
        with RegistryServer(root=tmp / "registry") as registry:
            t0 = time.perf_counter()
            expected = seed(registry.url, args.repos, args.tags, args.seed_workers)
            seed_seconds = time.perf_counter() - t0
            print(f"seeded {args.repos} x {args.tags} images in {seed_seconds:.1f} s", flush=True)
            with (
                delay_proxy(registry.url, args.delay_ms) as (proxy_url, proxy_pid),
                watcher_installation(tmp, args.redis_url) as engine,
            ):
                assert registry._proc is not None
                rig = Rig(proxy_url, registry.url, (proxy_pid, registry._proc.pid))
                outcome = measure(args, rig, engine, expected)
    return 1 if report(args, outcome, seed_seconds, command) else 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
    sys.exit(130)
