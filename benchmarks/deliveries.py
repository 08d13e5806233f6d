"""How soon a pushed image reaches a subscriber's endpoint, what delivering costs, and whether hanging
endpoints slow the healthy ones.

A throw-away installation (temporary data dir, SQLite or PostgreSQL, a unique Redis stream key; all removed
afterwards) and a receiver: a uvicorn server in a process of its own (`receiver_app`: answers 204 and
records each request's arrival time and `webhook-id`; a path under `/hang` never answers).

1. Push to delivered: the real registry (CNCF Distribution) notifies a real `watcher run` (HTTP side,
   Celery worker and beat) of each `skopeo copy`; the webhook's repository poll commits the event, the
   relay writes the delivery and kicks a delivery run, which POSTs the CloudEvent to the receiver. PUSHES
   pushes one at a time; from `skopeo copy` finished to the receiver's arrival. Targets: p50 <= 400 ms,
   p95 <= 1.5 s. Then 10 subscriptions whose endpoint hangs are added and PUSHES more are measured: the
   healthy subscription's delivery latency (the delivery written -> its arrival) p95 <= 1 s.
2. Cost: SUBSCRIPTIONS subscriptions x EVENTS events (the relay writes every delivery first), delivered by
   the engine in this process (`watcher.delivery.worker.deliver`), against a minimal client in the same
   run: one coroutine per subscription, each with its own httpx.AsyncClient, posting the same requests
   (built beforehand, not counted) in order. CPU seconds of this process for each (the database's
   server, on PostgreSQL, is not this process). Target: the engine <= 1.3x the minimal client.

Exit status 1 if a target is missed. Run from the repository root:
`.venv/bin/python -m benchmarks.deliveries` (add `--db postgresql` for PostgreSQL).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

#: what the receiver recorded: (path, webhook-id, arrival time.time())
_ARRIVALS: list[tuple[str, str, float]] = []


async def receiver_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """The subscriber's endpoint (an ASGI app, served by uvicorn): POST anywhere is recorded and answered
    204; `GET /arrivals?since=N` gives the records from the N-th on."""
    if scope["type"] != "http":
        return
    path: str = scope["path"]
    if scope["method"] == "GET":
        since = int((scope.get("query_string") or b"since=0").decode().split("=", 1)[1] or 0)
        body = json.dumps(_ARRIVALS[since:]).encode()
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": body})
        return
    more = True
    while more:
        message = await receive()
        more = message.get("more_body", False)
    if path.startswith("/hang"):
        await asyncio.sleep(3600)
    headers = dict(scope["headers"])
    _ARRIVALS.append((path, headers.get(b"webhook-id", b"").decode(), time.time()))
    await send({"type": "http.response.start", "status": 204, "headers": []})
    await send({"type": "http.response.body", "body": b""})


@contextlib.contextmanager
def receiver(root: Path) -> Iterator[str]:
    """The receiver in its own process; yields its base URL."""
    from tests.support.processes import stop_process
    from tests.support.registry import free_port

    port = free_port()
    argv = [sys.executable, "-m", "uvicorn", "benchmarks.deliveries:receiver_app", "--port", str(port)]
    argv += ["--loop", "uvloop", "--http", "httptools", "--no-access-log", "--log-level", "warning"]
    argv += ["--backlog", "1024", "--timeout-keep-alive", "300"]
    repository = str(Path(__file__).resolve().parent.parent)
    proc = subprocess.Popen(argv, cwd=root, env={**os.environ, "PYTHONPATH": repository})
    base = f"http://127.0.0.1:{port}"
    import httpx

    deadline = time.monotonic() + 30
    while True:
        try:
            httpx.get(f"{base}/arrivals?since=0", timeout=1)
            break
        except httpx.HTTPError:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError("the receiver did not start") from None
            time.sleep(0.1)
    try:
        yield base
    finally:
        stop_process(proc)


def arrivals(base: str, since: int = 0) -> list[tuple[str, str, float]]:
    import httpx

    return [tuple(row) for row in httpx.get(f"{base}/arrivals?since={since}", timeout=60).json()]


def subscribe(names_urls: list[tuple[str, str]]) -> None:
    from watcher.db import session_scope
    from watcher.delivery.subscriptions import SubscriptionSpec, save

    with session_scope() as session:
        for name, url in names_urls:
            save(session, SubscriptionSpec.build(name, url), workspace_id=1)


def created_at_of(event_ids: set[str]) -> dict[str, float]:
    """When each of these events' deliveries was written (by event id)."""
    from sqlalchemy import select

    from watcher import schema
    from watcher.db import get_engine

    d, e = schema.deliveries.c, schema.events.c
    with get_engine().connect() as conn:
        rows = conn.execute(
            select(e.event_id, d.created_at)
            .select_from(schema.deliveries.join(schema.events))
            .where(e.event_id.in_(event_ids))
        )
        return {event_id: created.timestamp() for event_id, created in rows}


# ---- 1: push to delivered, and with 10 hanging endpoints -----------------------------------------------
def measure_pushes(
    args: argparse.Namespace, base: str, layout: Path, registry: Any, first: int, count: int, path: str
) -> tuple[list[float], list[str]]:
    """Seconds from each push to its delivery at `path`, and the event ids delivered there."""
    from benchmarks.webhook_latency import repo_name, skopeo_copy, tag_name

    seen = len(arrivals(base))
    took: list[float] = []
    ids: list[str] = []
    for index in range(first, first + count):
        skopeo_copy(layout, registry.host, repo_name(index % args.repos), tag_name(index))
        done = time.time()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            new = [row for row in arrivals(base, seen) if row[0] == path]
            if new:
                took.append(new[0][2] - done)
                ids.append(new[0][1])
                break
            time.sleep(0.005)
        seen = len(arrivals(base))
        time.sleep(args.gap)
    return took, ids


def push_part(args: argparse.Namespace, inst: Any, base: str) -> list[str]:
    from benchmarks.read_side import machine, percentile
    from benchmarks.webhook_latency import (
        NAME,
        LoggedRegistry,
        cli,
        oci_layout,
        tag_name,
        watcher_notifications,
        watcher_run,
    )
    from tests.support.registry import free_port
    from watcher.polling.poll import poll

    misses: list[str] = []
    listen = f"127.0.0.1:{free_port()}"
    inst.env |= {"WATCHER_LISTEN": listen, "WATCHER_PUBLIC_URL": f"http://{listen}"}
    inst.env["PYTHONPATH"] = str(Path(__file__).resolve().parent.parent)
    os.environ.update(inst.env)
    total = args.warmup + 2 * args.pushes
    layout = oci_layout(inst.tmp / "layout", [tag_name(i) for i in range(total)])
    with LoggedRegistry(root=inst.tmp / "registry") as registry:
        cli("registry", "add", NAME, "--provider", "oci", "--url", registry.url, "--interval", "1h")
        poll(NAME)
        registry.notifications = {"endpoints": [watcher_notifications()["endpoints"][0]]}
        registry.stop()
        registry.start()
        subscribe([("healthy", f"{base}/healthy")])
        with watcher_run(inst, listen, args.worker_concurrency):
            measure_pushes(args, base, layout, registry, 0, args.warmup, "/healthy")
            took, _ = measure_pushes(args, base, layout, registry, args.warmup, args.pushes, "/healthy")
            p50, p95 = percentile(took, 50), percentile(took, 95)
            print(
                f"\n1. push to delivered, {len(took)} of {args.pushes} pushes ({machine()}): "
                f"p50 {p50 * 1000:.0f} ms, p95 {p95 * 1000:.0f} ms, max {max(took) * 1000:.0f} ms",
                flush=True,
            )
            if len(took) < args.pushes or p50 > 0.4 or p95 > 1.5:
                misses.append(f"push to delivered: p50 {p50:.3f} s (<= 0.4), p95 {p95:.3f} s (<= 1.5), {len(took)}")
            subscribe([(f"hang-{n}", f"{base}/hang-{n}") for n in range(10)])
            first = args.warmup + args.pushes
            took, ids = measure_pushes(args, base, layout, registry, first, args.pushes, "/healthy")
            written = created_at_of(set(ids))
            at = {event: when for path, event, when in arrivals(base) if path == "/healthy"}
            lags = [at[event] - written[event] for event in ids if event in written]
            p95_push, p95_lag = percentile(took, 95), percentile(lags, 95)
            print(
                f"   with 10 hanging subscriptions: push to delivered p50 {percentile(took, 50) * 1000:.0f} ms, "
                f"p95 {p95_push * 1000:.0f} ms; delivery written to delivered p50 "
                f"{percentile(lags, 50) * 1000:.0f} ms, p95 {p95_lag * 1000:.0f} ms ({machine()})",
                flush=True,
            )
            if len(lags) < args.pushes or p95_lag > 1.0:
                misses.append(f"healthy p95 delivery latency while 10 hang: {p95_lag:.3f} s (<= 1), {len(lags)}")
    return misses


# ---- 2: the cost of a delivery -------------------------------------------------------------------------
def cost_part(args: argparse.Namespace, base: str, server: Any) -> list[str]:
    from sqlalchemy import func, select

    from benchmarks.read_side import machine
    from tests.support.registry import RegistryClient
    from watcher import schema
    from watcher.bus import connect
    from watcher.db import get_engine
    from watcher.delivery import formats, worker
    from watcher.delivery.subscriptions import secret_of
    from watcher.outbox.relay import relay
    from watcher.polling.poll import poll
    from watcher.read.model import EVENT_COLUMNS

    names = [f"s{n:03d}" for n in range(args.subscriptions)]
    repo = "bench/cost"
    client = RegistryClient(server.url)
    client.push_image(repo, "base", seed="cost")
    cli_add = ["registry", "add", "cost", "--provider", "oci", "--url", server.url, "--interval", "1h"]
    from benchmarks.webhook_latency import cli

    cli(*cli_add, "--repository", repo)
    poll("cost")
    subscribe([(name, f"{base}/{name}") for name in names])
    started = time.monotonic()
    body, media_type, _ = client.get_manifest(repo, "base")
    manifest = (body, media_type)
    for n in range(args.events):
        client.put_manifest(repo, f"t{n}", *manifest)
    poll("cost")
    relay(connect())
    engine = get_engine()
    with engine.connect() as conn:
        written = conn.scalar(select(func.count()).select_from(schema.deliveries)) or 0
        events = conn.execute(select(*EVENT_COLUMNS).order_by(schema.events.c.id)).all()
        subs = conn.execute(select(schema.subscriptions).order_by(schema.subscriptions.c.id)).all()
    print(
        f"\n2. cost: {len(subs)} subscriptions x {len(events)} events = {written:,} deliveries written "
        f"({time.monotonic() - started:.0f} s to push, poll and relay)",
        flush=True,
    )
    requests = {s.name: [formats.build(s.format, s.url, secret_of(s), e) for e in events] for s in subs}
    # the minimal client: the same requests, one coroutine per subscription, in order
    before, wall = time.process_time(), time.monotonic()
    asyncio.run(minimal_client(requests))
    floor_cpu, floor_wall = time.process_time() - before, time.monotonic() - wall
    seen = len(arrivals(base))
    before, wall = time.process_time(), time.monotonic()
    totals = worker.Totals()
    while totals.delivered < written - 0:  # a run ends after its time; the sweep would start the next
        done = worker.deliver(600)
        totals.delivered += done.delivered
        if not done.delivered:
            break
    engine_cpu, engine_wall = time.process_time() - before, time.monotonic() - wall
    received = len(arrivals(base, seen))
    ratio = engine_cpu / floor_cpu
    print(
        f"   minimal httpx client: {floor_cpu:.1f} s CPU, {floor_wall:.1f} s wall "
        f"({len(requests) * len(events) / floor_wall:,.0f}/s)\n"
        f"   watcher's engine:     {engine_cpu:.1f} s CPU, {engine_wall:.1f} s wall "
        f"({totals.delivered / engine_wall:,.0f}/s); {totals.delivered:,} delivered, {received:,} received\n"
        f"   ratio {ratio:.2f}x ({machine()})",
        flush=True,
    )
    misses = []
    if ratio > 1.3 or totals.delivered < written:
        misses.append(f"delivery CPU {ratio:.2f}x the minimal client (<= 1.3x), {totals.delivered} of {written}")
    return misses


async def minimal_client(requests: dict[str, list[Any]]) -> None:
    """One coroutine per subscription, each with a client of its own (one kept connection: a pool shared by
    a hundred connections costs httpcore O(n^2) per request, which would flatter the engine), posting its
    requests in order."""
    import httpx

    async def one(outgoing: list[Any]) -> None:
        limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
        async with httpx.AsyncClient(limits=limits, timeout=30) as http:
            for request in outgoing:
                for attempt in (1, 2):  # a kept connection the server closed meanwhile: once more
                    try:
                        answer = await http.post(request.url, headers=request.headers, content=request.body)
                    except httpx.TransportError:
                        if attempt == 2:
                            raise
                        continue
                    answer.raise_for_status()
                    break

    await asyncio.gather(*(one(outgoing) for outgoing in requests.values()))


def run(args: argparse.Namespace, command: str) -> int:
    from benchmarks.read_side import installation, machine
    from tests.support.registry import RegistryServer

    print(f"deliveries on {args.db}: {machine()}", flush=True)
    misses: list[str] = []
    with installation(args.db) as inst, receiver(inst.tmp) as base:
        if "push" in args.parts:
            misses += push_part(args, inst, base)
        if "cost" in args.parts:
            with RegistryServer(root=inst.tmp / "cost-registry") as registry:
                misses += cost_part(args, base, registry)
    print(f"\nreproduce: {command}")
    print("\n" + ("targets missed:\n  " + "\n  ".join(misses) if misses else "all targets met"))
    return 1 if misses else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--db", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--pushes", type=int, default=100, help="measured pushes, each part (default 100)")
    parser.add_argument("--warmup", type=int, default=3, help="unmeasured pushes first (default 3)")
    parser.add_argument("--repos", type=int, default=10, help="repositories pushed to, round-robin (default 10)")
    parser.add_argument("--gap", type=float, default=0.1, help="seconds between pushes (default 0.1)")
    parser.add_argument("--subscriptions", type=int, default=100, help="part 2 (default 100)")
    parser.add_argument("--events", type=int, default=1000, help="part 2 (default 1000)")
    parser.add_argument("--worker-concurrency", type=int, help="`watcher run --concurrency` (default: CPUs)")
    parser.add_argument("--parts", default="push,cost", help="which parts (default push,cost)")
    args = parser.parse_args(argv)
    command = ".venv/bin/python -m benchmarks.deliveries " + shlex.join(sys.argv[1:] if argv is None else argv)
    return run(args, command)


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
