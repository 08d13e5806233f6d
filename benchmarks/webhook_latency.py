"""How soon a push reaches the event stream through the registry's webhook, and what a burst of
notifications costs.

A throw-away installation (temporary data dir, SQLite or PostgreSQL, a unique Redis stream key; all removed
afterwards) watches the real registry (CNCF Distribution, as the tests run it) with a 1-hour interval, so no
scheduled poll helps. The registry's `notifications` are the ones `watcher registry webhook` prints, pointing
at a real `watcher run` (the HTTP server and the Celery worker with beat, as production runs them), plus a
second endpoint: the floor, a tiny HTTP server in this process that, told of a manifest push, lists the
repository's tags with one httpx GET.

1. Latency: PUSHES `skopeo copy`s of distinct tags (a new image each, round-robin over REPOS repositories),
   one at a time. For each: from `skopeo copy` finished to the `added` entry on the stream (read by a
   thread blocked in XREAD), and, side by side, to the floor's listing showing the tag.
   Targets: p50 <= 300 ms, p95 <= 1 s.
2. Burst: NOTIFICATIONS Distribution envelopes (a manifest push each) over the same repositories, sent
   CONCURRENCY at a time, between two bursts of as many `GET /healthz` (the floor) sent the same way, and
   with a `GET /healthz` after every 10 notifications (the floor at the same moments: the worker's listings
   and whatever else the machine runs weigh on both alike).
   The repository listings the burst causes are counted in the registry's own access log.
   Targets: at most 20 listings (2 per repository), the receiver's p95 <= 50 ms.

Exit status 1 if a target is missed. Run from the repository root:
`.venv/bin/python -m benchmarks.webhook_latency --pushes 100` (add `--db postgresql` for PostgreSQL).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import http.client
import json
import os
import re
import shlex
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, cast

import httpx
import redis
import yaml
from click.testing import CliRunner

from benchmarks.read_side import Installation, installation, machine, percentile, wait_until_healthy
from benchmarks.throwaway import REDIS_URL
from tests.support.processes import stop_process
from tests.support.registry import OCI_MANIFEST, RegistryServer, _image_blobs, free_port

NAME = "bench"
ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
V1 = "application/vnd.docker.distribution.events.v1+json"
TARGET_P50_S, TARGET_P95_S = 0.3, 1.0
TARGET_LISTINGS_PER_REPO = 2
TARGET_ANSWER_P95_S = 0.05
#: during the burst, a `GET /healthz` follows every this many notifications (the floor at the same moments)
INTERLEAVED = 10
WAIT_SECONDS = 30.0
_TAGS_LIST = re.compile(r'"GET /v2/(\S+)/tags/list\S* HTTP')


# ---- what is pushed ---------------------------------------------------------------------------------
def repo_name(index: int) -> str:
    return f"bench/app-{index:02d}"


def tag_name(index: int) -> str:
    return f"1.0.{index}"


def oci_layout(path: Path, tags: Sequence[str]) -> Path:
    """An OCI image layout holding one tiny image per tag, each its own config and layer (a new build),
    for `skopeo copy oci:PATH:TAG`."""
    blobs = path / "blobs" / "sha256"
    blobs.mkdir(parents=True)

    def blob(data: bytes) -> dict[str, Any]:
        digest = hashlib.sha256(data).hexdigest()
        (blobs / digest).write_bytes(data)
        return {"digest": f"sha256:{digest}", "size": len(data)}

    manifests = []
    for tag in tags:
        config, layer = _image_blobs(f"webhook-bench-{tag}-{uuid.uuid4().hex}", "linux/amd64")
        manifest = {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", **blob(config)},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", **blob(layer)}],
        }
        ref = blob(json.dumps(manifest).encode())
        manifests.append({"mediaType": OCI_MANIFEST, **ref, "annotations": {"org.opencontainers.image.ref.name": tag}})
    (path / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    (path / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": manifests}))
    return path


def skopeo_copy(layout: Path, host: str, repo: str, tag: str) -> None:
    argv = ["skopeo", "--insecure-policy", "copy", "--quiet", "--dest-tls-verify=false"]
    argv += [f"oci:{layout}:{tag}", f"docker://{host}/{repo}:{tag}"]
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"skopeo copy {repo}:{tag} failed: {done.stderr.strip()[:500]}")


# ---- the registry, with its access log on ------------------------------------------------------------
class LoggedRegistry(RegistryServer):
    """The test registry with its access log written (to `log_path`), where the listings are counted."""

    def config(self) -> dict[str, Any]:
        cfg = super().config()
        cfg["log"]["accesslog"] = {"disabled": False}
        return cfg

    def log_size(self) -> int:
        return self.log_path.stat().st_size

    def listings_since(self, offset: int) -> dict[str, int]:
        """`GET /v2/REPO/tags/list` requests logged after `offset` bytes, by repository."""
        with self.log_path.open("rb") as log:
            log.seek(offset)
            text = log.read().decode(errors="replace")
        counts: dict[str, int] = {}
        for match in _TAGS_LIST.finditer(text):
            counts[match.group(1)] = counts.get(match.group(1), 0) + 1
        return counts


# ---- the floor: told of a push, lists the tags with one GET -------------------------------------------
class Arrivals:
    """When each (repository, tag) was first seen by one observer, on the monotonic clock."""

    def __init__(self) -> None:
        self.seen: dict[tuple[str, str], float] = {}
        self.early: list[str] = []  # notified before the registry listed the tag
        self._changed = threading.Condition()

    def add(self, repo: str, tag: str, at: float) -> None:
        with self._changed:
            self.seen.setdefault((repo, tag), at)
            self._changed.notify_all()

    def wait(self, repo: str, tag: str, timeout: float) -> float | None:
        with self._changed:
            self._changed.wait_for(lambda: (repo, tag) in self.seen, timeout)
            return self.seen.get((repo, tag))


@contextlib.contextmanager
def notification_endpoint(handle: Callable[[dict[str, Any], float], None]) -> Iterator[str]:
    """A bare notification endpoint in this process: answers at once, then hands each event and when its
    notification arrived (monotonic) to `handle`; yields its URL."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            at = time.monotonic()
            body = self.rfile.read(int(self.headers.get("content-length") or 0))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()
            for event in json.loads(body).get("events") or []:
                handle(event, at)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, name="floor", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


@contextlib.contextmanager
def floor_listener(registry_url: str) -> Iterator[tuple[str, Arrivals, Arrivals]]:
    """A bare notification endpoint that lists each pushed manifest's repository with one GET; records when
    each manifest push was notified, and when the tag showed in the listing."""
    notified, arrivals = Arrivals(), Arrivals()
    http = httpx.Client(base_url=registry_url, timeout=10)

    def listing(repo: str) -> list[str]:
        for attempt in range(2):  # a kept-alive connection the registry just closed fails once
            try:
                tags: list[str] = http.get(f"/v2/{repo}/tags/list").json().get("tags") or []
                return tags
            except httpx.TransportError as exc:
                print(f"floor: listing {repo}: {exc!r}" + (", retrying" if not attempt else ""), file=sys.stderr)
        return []

    def handle(event: dict[str, Any], at: float) -> None:
        target = event.get("target") or {}
        if event.get("action") == "push" and target.get("tag") and target.get("mediaType") == OCI_MANIFEST:
            repo, tag = target["repository"], target["tag"]
            notified.add(repo, tag, at)
            for attempt in range(50):  # Distribution notifies before it links the tag: the race, counted
                if tag in listing(repo):
                    arrivals.add(repo, tag, time.monotonic())
                    break
                if not attempt:
                    arrivals.early.append(f"{repo}:{tag}")
                time.sleep(0.002)

    try:
        with notification_endpoint(handle) as url:
            yield url, notified, arrivals
    finally:
        http.close()


@contextlib.contextmanager
def stream_reader(stream: str, change: str = "added") -> Iterator[Arrivals]:
    """A thread blocked in XREAD on the stream, recording when each entry of `change` arrives."""
    arrivals = Arrivals()
    client = redis.Redis.from_url(REDIS_URL, decode_responses=True)
    stop = threading.Event()
    last: str = client.xinfo_stream(stream)["last-generated-id"] if client.exists(stream) else "0-0"

    def read() -> None:
        nonlocal last
        while not stop.is_set():
            answer = cast(list[tuple[str, list[tuple[str, dict[str, str]]]]], client.xread({stream: last}, block=500))
            for _, entries in answer or []:
                at = time.monotonic()
                for entry_id, fields in entries:
                    last = entry_id
                    if fields.get("change") == change:
                        arrivals.add(fields["repository"], fields["tag"], at)

    thread = threading.Thread(target=read, name="stream-reader", daemon=True)
    thread.start()
    try:
        yield arrivals
    finally:
        stop.set()
        thread.join(5)
        client.close()


# ---- watcher ----------------------------------------------------------------------------------------
def cli(*args: str) -> str:
    from watcher.cli.main import main as watcher_cli

    result = CliRunner().invoke(watcher_cli, list(args))
    if result.exit_code != 0:
        raise RuntimeError(f"watcher {shlex.join(args)} failed: {result.output}{result.stderr}")
    return result.output


def watcher_notifications() -> dict[str, Any]:
    """The `notifications` section `watcher registry webhook` prints, exactly as a user would paste it."""
    printed = cli("registry", "webhook", NAME).split("On the registry's side (distribution):\n", 1)[1]
    section: dict[str, Any] = yaml.safe_load(printed)["notifications"]
    return section


@contextlib.contextmanager
def watcher_run(inst: Installation, listen: str, concurrency: int | None) -> Iterator[subprocess.Popen[bytes]]:
    """`watcher run` (Celery worker, embedded beat, `watcher serve` beside it) until `/healthz` answers."""
    argv = [str(VENV_BIN / "watcher"), "run", "--loglevel", "WARNING"]
    if concurrency:
        argv += ["--concurrency", str(concurrency)]
    log = (inst.tmp / "watcher-run.log").open("wb")
    proc = subprocess.Popen(argv, cwd=inst.tmp, env={**os.environ, **inst.env}, stdout=log, stderr=subprocess.STDOUT)
    try:
        try:
            wait_until_healthy(f"http://{listen}", proc, 60, "watcher run did not start")
        except RuntimeError as exc:
            raise RuntimeError(f"{exc}:\n{(inst.tmp / 'watcher-run.log').read_text()[-3000:]}") from None
        time.sleep(2)  # the worker's pool and beat come up after the HTTP side
        yield proc
    finally:
        stop_process(proc, timeout=20)
        log.close()


def celery_idle(inst: Installation) -> bool:
    """No poll waits on the broker and no repository is marked queued."""
    client = redis.Redis.from_url(REDIS_URL)
    try:
        waiting = client.llen(f"{inst.stream}:celery:celery")
        marks = next(iter(client.scan_iter(f"{inst.stream}:repository-poll:*", count=1000)), None)
        return waiting == 0 and marks is None
    finally:
        client.close()


# ---- 1: latency -------------------------------------------------------------------------------------
@dataclass
class Latency:
    """Seconds from `skopeo copy` finished (and from the notification's arrival) to each observer."""

    watcher: list[float] = field(default_factory=list)
    floor: list[float] = field(default_factory=list)
    notified: list[float] = field(default_factory=list)  # the notification reached the floor's endpoint
    early: int = 0  # pushes whose tag the floor's first listing did not show yet
    copy: list[float] = field(default_factory=list)
    lost: list[str] = field(default_factory=list)


def measure_latency(
    args: argparse.Namespace,
    layout: Path,
    registry: LoggedRegistry,
    stream: Arrivals,
    floor: tuple[Arrivals, Arrivals],
) -> Latency:
    notified, listed = floor
    result = Latency()
    for index in range(args.warmup + args.pushes):
        repo, tag = repo_name(index % args.repos), tag_name(index)
        started = time.monotonic()
        skopeo_copy(layout, registry.host, repo, tag)
        done = time.monotonic()
        seen_stream = stream.wait(repo, tag, WAIT_SECONDS)
        seen_floor = listed.wait(repo, tag, WAIT_SECONDS)
        seen_notified = notified.wait(repo, tag, 0)
        if index < args.warmup:
            continue
        result.copy.append(done - started)
        if seen_stream is None or seen_floor is None or seen_notified is None:
            result.lost.append(f"{repo}:{tag} (stream {seen_stream is not None}, floor {seen_floor is not None})")
            continue
        result.watcher.append(seen_stream - done)
        result.floor.append(seen_floor - done)
        result.notified.append(seen_notified - done)
        if args.gap:
            time.sleep(args.gap)
    result.early = sum(1 for ref in listed.early if int(ref.rsplit(".", 1)[1]) >= args.warmup)
    return result


def latency_lines(result: Latency) -> tuple[list[str], list[str]]:
    misses: list[str] = []
    since_notified = {
        "watcher": [w - n for w, n in zip(result.watcher, result.notified, strict=True)],
        "floor": [f - n for f, n in zip(result.floor, result.notified, strict=True)],
    }
    lines = [f"{'ms':<52}{'n':>5}{'p50':>7}{'p95':>7}{'max':>7}{'min':>7}"]
    for label, values in (
        ("skopeo copy finished -> entry on the stream (watcher)", result.watcher),
        ("skopeo copy finished -> the floor's listing shows it", result.floor),
        ("skopeo copy finished -> the notification arrives", result.notified),
        ("notification arrives -> entry on the stream", since_notified["watcher"]),
        ("notification arrives -> the floor's listing", since_notified["floor"]),
    ):
        if values:
            lines.append(
                f"{label:<52}{len(values):>5}{percentile(values, 50) * 1000:>7.0f}{percentile(values, 95) * 1000:>7.0f}"
                f"{max(values) * 1000:>7.0f}{min(values) * 1000:>7.0f}"
            )
    lines.append(f"(a `skopeo copy` took {statistics.median(result.copy) * 1000:.0f} ms p50, from start to exit)")
    lines.append(
        f"notified before the tag was listed (the floor's first GET missed it, a later one found it): "
        f"{result.early} of {len(result.notified)}"
    )
    if result.lost:
        misses.append(f"{len(result.lost)} pushes not seen within {WAIT_SECONDS:.0f} s: {', '.join(result.lost[:5])}")
    if result.watcher and result.floor:
        w50, w95 = (percentile(since_notified["watcher"], q) for q in (50, 95))
        f50, f95 = (percentile(since_notified["floor"], q) for q in (50, 95))
        lines.append(
            f"from the notification, watcher/floor: p50 {w50 / f50:.0f}x, p95 {w95 / f95:.0f}x "
            f"(watcher's extra: p50 {(w50 - f50) * 1000:.0f} ms, p95 {(w95 - f95) * 1000:.0f} ms)"
        )
        for what, q, target in (("p50", 50, TARGET_P50_S), ("p95", 95, TARGET_P95_S)):
            value = percentile(result.watcher, q)
            verdict = "OK" if value <= target else "MISSED"
            lines.append(f"push to stream {what} {value * 1000:.0f} ms (target <= {target * 1000:.0f} ms): {verdict}")
            if value > target:
                misses.append(f"push-to-stream {what} {value * 1000:.0f} ms > {target * 1000:.0f} ms")
    return lines, misses


# ---- 2: burst ---------------------------------------------------------------------------------------
@dataclass
class Burst:
    hook: list[float] = field(default_factory=list)
    healthz: list[float] = field(default_factory=list)
    #: `GET /healthz` sent among the notifications (one after every INTERLEAVED of them): the same moments
    during: list[float] = field(default_factory=list)
    queued: int = 0
    seconds: float = 0.0
    listings: dict[str, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    #: CPU seconds of the `watcher serve` process during the notifications, and during the two floor bursts
    cpu_hook: float = float("nan")
    cpu_floor: float = float("nan")


def serve_pid(run_pid: int) -> int | None:
    """The `watcher serve` child of `watcher run`."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            cmdline = (stat.parent / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if int(fields[1]) == run_pid and b"serve" in cmdline:
            return int(stat.parent.name)
    return None


def cpu_seconds(pid: int | None) -> float:
    """User + system CPU seconds of one process (NaN when it is not known)."""
    if pid is None:
        return float("nan")
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def envelope(registry_host: str, repo: str, tag: str) -> bytes:
    """A Distribution notification of one manifest push, as the registry sends it."""
    digest = "sha256:" + hashlib.sha256(f"{repo}:{tag}".encode()).hexdigest()
    event = {
        "id": str(uuid.uuid4()),
        "timestamp": "2026-12-01T12:00:00.000000000Z",
        "action": "push",
        "target": {
            "mediaType": OCI_MANIFEST,
            "size": 500,
            "digest": digest,
            "length": 500,
            "repository": repo,
            "url": f"http://{registry_host}/v2/{repo}/manifests/{digest}",
            "tag": tag,
        },
        "request": {"id": str(uuid.uuid4()), "addr": "127.0.0.1:5000", "host": registry_host, "method": "PUT"},
        "actor": {},
        "source": {"addr": registry_host, "instanceID": str(uuid.uuid4())},
    }
    return json.dumps({"events": [event]}).encode()


def measure_burst(
    args: argparse.Namespace,
    inst: Installation,
    listen: str,
    hook: dict[str, Any],
    registry: LoggedRegistry,
    server: int | None = None,
) -> Burst:
    """The floor's burst, the notifications' burst, the floor's again: each CONCURRENCY threads with a kept-alive
    connection each (stdlib `http.client`: the lightest client, so that it takes little of the CPU the server
    needs). The listings are counted from the notifications' first request until the polls they queued ran.
    The server's (pid `server`) CPU time is read around each, a figure the machine's load does not move."""
    burst = Burst()
    bodies = [envelope(registry.host, repo_name(i % args.repos), tag_name(i % args.pushes)) for i in range(args.burst)]
    headers = {"Content-Type": V1, **{k: v[0] for k, v in hook["headers"].items()}}
    path = httpx.URL(hook["url"]).path
    host, port = listen.rsplit(":", 1)
    local = threading.local()
    lock = threading.Lock()

    def send(method: str, target: str, body: bytes | None) -> tuple[float, int, bytes]:
        if not hasattr(local, "conn"):
            local.conn = http.client.HTTPConnection(host, int(port), timeout=30)
        started = time.perf_counter()
        local.conn.request(method, target, body=body, headers=headers if body is not None else {})
        response = local.conn.getresponse()
        data = response.read()
        return time.perf_counter() - started, response.status, data

    def floor_one(_: int, into: list[float] = burst.healthz) -> None:
        elapsed, status, data = send("GET", "/healthz", None)
        with lock:
            into.append(elapsed)
            if status != 200:
                burst.errors.append(f"/healthz: HTTP {status} {data[:200]!r}")

    def hook_one(index: int) -> None:
        if index % INTERLEAVED == INTERLEAVED - 1:
            floor_one(index, burst.during)
        elapsed, status, data = send("POST", path, bodies[index])
        with lock:
            burst.hook.append(elapsed)
            if status != 202:
                burst.errors.append(f"{path}: HTTP {status} {data[:200]!r}")
            else:
                burst.queued += int(json.loads(data)["queued"])

    deadline = time.monotonic() + WAIT_SECONDS
    while not celery_idle(inst) and time.monotonic() < deadline:
        time.sleep(0.2)
    with ThreadPoolExecutor(args.concurrency) as pool:
        list(pool.map(floor_one, range(args.concurrency * 5)))  # warm-up: connections opened, not measured
        burst.healthz.clear()
        cpu = [cpu_seconds(server)]
        list(pool.map(floor_one, range(args.burst)))
        cpu.append(cpu_seconds(server))
        offset = registry.log_size()
        started = time.monotonic()
        list(pool.map(hook_one, range(args.burst)))
        burst.seconds = time.monotonic() - started
        cpu.append(cpu_seconds(server))
        list(pool.map(floor_one, range(args.burst)))
        cpu.append(cpu_seconds(server))
        burst.cpu_hook = cpu[2] - cpu[1]
        burst.cpu_floor = cpu[1] - cpu[0] + cpu[3] - cpu[2]
    settle(inst, registry, offset)
    burst.listings = registry.listings_since(offset)
    return burst


def settle(inst: Installation, registry: LoggedRegistry, offset: int) -> None:
    """Until the queued polls ran: nothing queued, and no new listing in the log for 3 s."""
    deadline = time.monotonic() + 120
    last, quiet_since = -1, time.monotonic()
    while time.monotonic() < deadline:
        count = sum(registry.listings_since(offset).values())
        if count != last:
            last, quiet_since = count, time.monotonic()
        if celery_idle(inst) and time.monotonic() - quiet_since >= 3:
            return
        time.sleep(0.3)


def burst_lines(args: argparse.Namespace, burst: Burst) -> tuple[list[str], list[str]]:
    misses = [f"burst: {len(burst.errors)} requests failed: {burst.errors[0]}"] if burst.errors else []
    lines = [f"{'request':<34}{'n':>6}{'p50 ms':>9}{'p95 ms':>9}{'max ms':>9}{'p95/floor':>10}"]
    floor95 = percentile(burst.healthz, 95) if burst.healthz else float("nan")
    for label, values in (
        ("POST /hooks/v1/bench (receiver)", burst.hook),
        ("GET /healthz (floor)", burst.healthz),
        ("GET /healthz among notifications", burst.during),
    ):
        if values:
            p95 = percentile(values, 95)
            lines.append(
                f"{label:<34}{len(values):>6}{percentile(values, 50) * 1000:>9.1f}{p95 * 1000:>9.1f}"
                f"{max(values) * 1000:>9.1f}{p95 / floor95:>10.1f}"
            )
    total = sum(burst.listings.values())
    rate = args.burst / burst.seconds if burst.seconds else 0.0
    lines.append(
        f"{args.burst} notifications in {burst.seconds:.2f} s ({rate:.0f}/s), {args.concurrency} at a time, between "
        f"two bursts of {args.burst} /healthz, a /healthz after every {INTERLEAVED}; polls queued by the answers: "
        f"{burst.queued}"
    )
    if burst.hook and burst.during:
        lines.append(
            f"receiver p95 / p95 of /healthz among notifications: "
            f"{percentile(burst.hook, 95) / percentile(burst.during, 95):.2f}"
        )
    floor_cpu = burst.cpu_floor / (2 * args.burst) * 1000
    hook_cpu = (burst.cpu_hook * 1000 - len(burst.during) * floor_cpu) / args.burst  # less the /healthz among them
    lines.append(
        f"server CPU a request: notification {hook_cpu:.2f} ms, /healthz {floor_cpu:.2f} ms "
        f"({hook_cpu / floor_cpu if floor_cpu else float('nan'):.1f} x)"
    )
    by_repo = ", ".join(f"{n}" for _, n in sorted(burst.listings.items()))
    lines.append(f"repository listings (registry log, GET tags/list): {total} ({by_repo or 'none'})")
    allowed = TARGET_LISTINGS_PER_REPO * args.repos
    lines.append(f"listings <= {allowed}: {'OK' if total <= allowed else 'MISSED'}")
    if total > allowed:
        misses.append(f"burst: {total} repository listings > {allowed}")
    if burst.hook:
        p95 = percentile(burst.hook, 95)
        lines.append(
            f"receiver p95 {p95 * 1000:.1f} ms (target <= {TARGET_ANSWER_P95_S * 1000:.0f} ms): "
            f"{'OK' if p95 <= TARGET_ANSWER_P95_S else 'MISSED'}"
        )
        if p95 > TARGET_ANSWER_P95_S:
            misses.append(f"burst: receiver p95 {p95 * 1000:.1f} ms > {TARGET_ANSWER_P95_S * 1000:.0f} ms")
    return lines, misses


# ---- main -------------------------------------------------------------------------------------------
def run(args: argparse.Namespace, command: str) -> int:
    from watcher.polling.poll import poll

    print(f"webhook latency on {args.db}: {args.pushes} pushes, burst of {args.burst}; {machine()}", flush=True)
    port = free_port()
    listen = f"127.0.0.1:{port}"
    with installation(args.db) as inst:
        inst.env |= {"WATCHER_LISTEN": listen, "WATCHER_PUBLIC_URL": f"http://{listen}", "PYTHONPATH": str(ROOT)}
        os.environ.update(inst.env)
        layout = oci_layout(inst.tmp / "layout", [tag_name(i) for i in range(args.warmup + args.pushes)])
        with (
            LoggedRegistry(root=inst.tmp / "registry") as registry,
            floor_listener(registry.url) as (floor_url, notified, listed),
        ):
            cli("registry", "add", NAME, "--provider", "oci", "--url", registry.url, "--interval", "1h")
            poll(NAME)  # the baseline: from now on every new tag is an `added` event
            hook = watcher_notifications()
            endpoint = hook["endpoints"][0]
            floor_endpoint = {**endpoint, "name": "floor", "url": floor_url, "headers": {}}
            registry.notifications = {"endpoints": [endpoint, floor_endpoint]}
            registry.stop()
            registry.start()
            misses: list[str] = []
            with watcher_run(inst, listen, args.worker_concurrency) as run, stream_reader(inst.stream) as stream:
                started = time.monotonic()
                latency = measure_latency(args, layout, registry, stream, (notified, listed))
                lines, missed = latency_lines(latency)
                print(
                    f"\n1. push to stream: {args.pushes} pushes after {args.warmup} warm-up, over {args.repos} "
                    f"repositories ({time.monotonic() - started:.0f} s; {machine()}):\n" + "\n".join(lines),
                    flush=True,
                )
                misses += missed
                burst = measure_burst(args, inst, listen, endpoint, registry, serve_pid(run.pid))
                lines, missed = burst_lines(args, burst)
                print(f"\n2. burst ({machine()}):\n" + "\n".join(lines), flush=True)
                misses += missed
    print(f"\nreproduce: {command}")
    print("\n" + ("targets missed:\n  " + "\n  ".join(misses) if misses else "all targets met"))
    return 1 if misses else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--db", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--pushes", type=int, default=100, help="measured pushes (default 100)")
    parser.add_argument("--warmup", type=int, default=3, help="unmeasured pushes first (default 3)")
    parser.add_argument("--repos", type=int, default=10, help="repositories pushed to, round-robin (default 10)")
    parser.add_argument("--gap", type=float, default=0.1, help="seconds between pushes (default 0.1)")
    parser.add_argument("--burst", type=int, default=1000, help="notifications in the burst (default 1000)")
    parser.add_argument("--concurrency", type=int, default=20, help="burst requests in flight (default 20)")
    parser.add_argument("--worker-concurrency", type=int, help="`watcher run --concurrency` (default: CPUs)")
    args = parser.parse_args(argv)
    command = ".venv/bin/python -m benchmarks.webhook_latency " + shlex.join(sys.argv[1:] if argv is None else argv)
    return run(args, command)


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
    sys.exit(130)
