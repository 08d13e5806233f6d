"""CPU of a steady poll of a small registry, side by side with a minimal client making the same requests.

The platform's common case is many small registries, each polled every minute by a worker process that
stays up: what counts there is the CPU one steady poll costs. This starts the real registry (CNCF
Distribution, as the tests do), seeds REPOS x TAGS images (10 x 3 by default), registers it in a
throw-away watcher installation with its repositories named literally (so no catalog: 10 tag lists and
30 manifest HEADs a poll), records the baseline, and then, alternating, runs RUNS rounds of K steady polls
each: `watcher.polling.poll.poll` in this one process, as a worker runs them (its clients and pools kept warm
between polls), and K listings by a minimal client (one `httpx.Client` with its connection pool kept
between listings, 8 threads) making the same requests. It reports the CPU time of this process (process
time, not wall) per poll for each, and their ratio (target <= TARGET, 2.0), and the registry's CPU per
poll serving each (whether the watcher's requests cost the server more than the minimal client's). The
machine's Redis holds the deployment-wide host limits, as in a worker.

A third client takes its turn in each round too: the same requests from `httpx.AsyncClient`, 8 tasks on an
event loop kept between listings, as a worker's poll makes them. It is not the target's floor (the threaded
client is cheaper), but it says how much of the gap to that floor is httpx's asynchronous stack itself,
which the watcher's poll shares.

With `--profile FILE`, one more round of watcher polls runs under cProfile and the stats go to FILE.

Run from the repository root: `.venv/bin/python -m benchmarks.small_poll_cpu`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import os
import shlex
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
from click.testing import CliRunner

from benchmarks.poll_speed import NAME, Digests, process_cpu, repo_name, seed, stored_digests, watcher_installation
from tests.support.registry import RegistryServer
from watcher.cli.main import main as watcher_cli
from watcher.polling.poll import poll
from watcher.registry import warm
from watcher.registry.oci import MANIFEST_TYPES, PAGE_SIZE


def register(registry_url: str, repos: int, concurrency: int) -> None:
    """The registry with its repositories named literally: no catalog request."""
    literal = [arg for i in range(repos) for arg in ("--repository", repo_name(i))]
    args = ["registry", "add", NAME, "--provider", "oci", "--url", registry_url, "--max-concurrency", str(concurrency)]
    result = CliRunner().invoke(watcher_cli, [*args, *literal])
    if result.exit_code != 0:
        raise RuntimeError(f"registry add failed: {result.output}")


def by_repository(pairs: list[tuple[str, str]], digests: Iterable[str]) -> Digests:
    """Each (repository, tag) pair's digest, in the shape the watcher stores them: both minimal clients'."""
    result: Digests = {}
    for (repo, tag), found in zip(pairs, digests, strict=True):
        result.setdefault(repo, {})[tag] = found
    return result


class MinimalClient:
    """The same requests as a steady watcher poll, from THREADS threads sharing one httpx.Client whose
    connection pool (and the threads) are kept between listings. `shared`: threads of the caller's, which
    many clients use in turn (`many_registries`' floor) and `close` leaves running."""

    def __init__(
        self, base_url: str, repositories: list[str], threads: int, shared: ThreadPoolExecutor | None = None
    ) -> None:
        pool = httpx.Limits(max_connections=threads, max_keepalive_connections=threads)
        self.http = httpx.Client(base_url=base_url, limits=pool)
        self.threads = shared or ThreadPoolExecutor(threads)
        self._own_threads = shared is None
        self.repositories = repositories
        self.accept = ", ".join(MANIFEST_TYPES)
        self.requests = 0

    def listing(self) -> Digests:
        def tags(repo: str) -> list[str]:
            response = self.http.get(f"/v2/{repo}/tags/list?n={PAGE_SIZE}")
            response.raise_for_status()
            return list(response.json().get("tags") or [])

        def digest(repo: str, tag: str) -> str:
            response = self.http.head(f"/v2/{repo}/manifests/{tag}", headers={"Accept": self.accept})
            response.raise_for_status()
            return response.headers["docker-content-digest"]

        listed = dict(zip(self.repositories, self.threads.map(tags, self.repositories), strict=True))
        pairs = [(repo, tag) for repo, names in listed.items() for tag in names]
        digests = self.threads.map(lambda pair: digest(*pair), pairs)
        self.requests += len(self.repositories) + len(pairs)
        return by_repository(pairs, digests)

    def close(self) -> None:
        if self._own_threads:
            self.threads.shutdown()
        self.http.close()


class AsyncMinimalClient:
    """The same requests as `MinimalClient`, from CONCURRENCY tasks sharing one `httpx.AsyncClient`, on an
    event loop of its own kept (with the client's pool) between listings."""

    def __init__(self, base_url: str, repositories: list[str], concurrency: int) -> None:
        self.loop = asyncio.new_event_loop()
        pool = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        self.http = httpx.AsyncClient(base_url=base_url, limits=pool)
        self.concurrency = concurrency
        self.repositories = repositories
        self.accept = ", ".join(MANIFEST_TYPES)

    async def _listing(self) -> Digests:
        slots = asyncio.Semaphore(self.concurrency)

        async def tags(repo: str) -> list[str]:
            async with slots:
                response = await self.http.get(f"/v2/{repo}/tags/list?n={PAGE_SIZE}")
            response.raise_for_status()
            return list(response.json().get("tags") or [])

        async def digest(repo: str, tag: str) -> str:
            async with slots:
                response = await self.http.head(f"/v2/{repo}/manifests/{tag}", headers={"Accept": self.accept})
            response.raise_for_status()
            return response.headers["docker-content-digest"]

        listed = await asyncio.gather(*(tags(repo) for repo in self.repositories))
        pairs = [(repo, tag) for repo, names in zip(self.repositories, listed, strict=True) for tag in names]
        digests = await asyncio.gather(*(digest(repo, tag) for repo, tag in pairs))
        return by_repository(pairs, digests)

    def listing(self) -> Digests:
        return self.loop.run_until_complete(self._listing())

    def close(self) -> None:
        self.loop.run_until_complete(self.http.aclose())
        self.loop.close()


def cpu_of(action: Callable[[], object], times: int, server: int | None = None) -> tuple[float, float]:
    """CPU seconds that `times` calls of `action` took per call: this process's (all threads), and the
    `server` process's (a pid; 0.0 without one)."""
    start, server_start = time.process_time(), process_cpu(server) if server else 0.0
    for _ in range(times):
        action()
    served = (process_cpu(server) - server_start) / times if server else 0.0
    return (time.process_time() - start) / times, served


def steady_poll() -> None:
    result = poll(NAME)
    if result.events or result.baseline:
        raise RuntimeError(f"a steady poll reported {len(result.events)} events")


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--repos", type=int, default=10, help="repositories (default 10)")
    parser.add_argument("--tags", type=int, default=3, help="tags per repository (default 3)")
    parser.add_argument("--polls", type=int, default=20, help="K: steady polls per round (default 20)")
    parser.add_argument("--runs", type=int, default=5, help="rounds of each client, alternating (default 5)")
    parser.add_argument("--concurrency", type=int, default=8, help="requests in flight, both clients (default 8)")
    parser.add_argument("--target", type=float, default=2.0, help="allowed watcher/minimal CPU ratio (default 2)")
    parser.add_argument("--cold", action="store_true", help="poll as `watcher poll` does: no clients kept")
    parser.add_argument("--profile", type=Path, help="also profile one round of watcher polls into this file")
    parser.add_argument("--redis-url", default=os.environ.get("WATCHER_TEST_REDIS", "redis://127.0.0.1:6379/0"))
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if not args.cold:
        warm.enable()  # as a worker does at its start
    command = ".venv/bin/python -m benchmarks.small_poll_cpu " + shlex.join(sys.argv[1:] if argv is None else argv)
    with tempfile.TemporaryDirectory(prefix="watcher-bench-") as tmp_name:
        tmp = Path(tmp_name)
        with RegistryServer(root=tmp / "registry") as registry, watcher_installation(tmp, args.redis_url) as engine:
            expected = seed(registry.url, args.repos, args.tags, workers=4)
            register(registry.url, args.repos, args.concurrency)
            first = poll(NAME)
            if first.tags != args.repos * args.tags or stored_digests(engine) != expected:
                raise RuntimeError(f"the baseline poll saw {first.tags} tags")
            minimal = MinimalClient(registry.url, sorted(expected), args.concurrency)
            asynchronous = AsyncMinimalClient(registry.url, sorted(expected), args.concurrency)
            if minimal.listing() != expected or asynchronous.listing() != expected:
                raise RuntimeError("a minimal client listed something else than what was pushed")
            steady_poll()  # warm, as a worker is after its first poll
            requests = poll(NAME).requests
            server = registry._proc.pid if registry._proc is not None else None
            clients = {"watcher": steady_poll, "minimal": minimal.listing, "async": asynchronous.listing}
            own: dict[str, list[float]] = {name: [] for name in clients}
            served: dict[str, list[float]] = {name: [] for name in clients}
            for _ in range(args.runs):
                for name, action in clients.items():
                    mine, by_server = cpu_of(action, args.polls, server)
                    own[name].append(mine)
                    served[name].append(by_server)
            if args.profile:
                with cProfile.Profile() as profile:
                    cpu_of(steady_poll, args.polls)
                profile.dump_stats(args.profile)
            minimal.close()
            asynchronous.close()
    code = report(args, own, requests, len(expected) + args.repos * args.tags, command)
    if server is not None:
        print(
            "the registry's CPU a poll, medians: "
            + ", ".join(f"serving {name} {statistics.median(series) * 1000:.1f} ms" for name, series in served.items())
        )
    return code


def report(args: argparse.Namespace, own: dict[str, list[float]], requests: int, floor: int, command: str) -> int:
    """The table, the ratio to the threaded minimal client (the target's) and to the asynchronous one."""
    w, m, a = (statistics.median(own[name]) for name in ("watcher", "minimal", "async"))
    print(
        f"\nsteady poll of {args.repos} repositories x {args.tags} tags (literal names), {args.runs} rounds of "
        f"{args.polls} polls each client, alternating; CPU time of this process per poll"
    )
    print(f"{'client':<30}{'requests':>9}{'median ms':>10}{'min ms':>8}{'max ms':>8}{'ms/request':>11}")
    label = "watcher poll (cold)" if args.cold else "watcher poll (warm worker)"
    rows = (
        (label, requests, own["watcher"]),
        (f"httpx.Client, {args.concurrency} threads", floor, own["minimal"]),
        (f"httpx.AsyncClient, {args.concurrency} tasks", floor, own["async"]),
    )
    for name, n, series in rows:
        med = statistics.median(series)
        print(
            f"{name:<30}{n:>9}{med * 1000:>10.1f}{min(series) * 1000:>8.1f}{max(series) * 1000:>8.1f}"
            f"{med * 1000 / n:>11.2f}"
        )
    ratio = w / m
    verdict = "OK" if ratio <= args.target else "MISSED"
    print(f"\nratio watcher/minimal CPU, medians: {ratio:.2f} (target <= {args.target:g}: {verdict})")
    print(f"ratio watcher/asynchronous minimal CPU, medians: {w / a:.2f} (asynchronous/threaded minimal: {a / m:.2f})")
    print(f"reproduce: {command}")
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}, Python {sys.version.split()[0]}")
    return 0 if ratio <= args.target else 1


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
    sys.exit(130)
