"""What image metadata costs a poll (issue 16, "Speed"): requests and CPU of a steady poll, and the requests
a changed tag adds.

Starts the real registry, seeds REPOS x TAGS images (10 x 3 by default, repositories named literally: no
catalog), records the baseline in a throw-away installation, then runs RUNS rounds of POLLS steady polls
(`watcher.polling.poll.poll` in this process, clients kept warm as in a worker) and reports the requests
and the CPU time of this process per steady poll. Then: a tag pushed with a new image (its digest unknown),
a tag pointed at a digest the installation knows, and a tag moved to a new image; each one poll, whose
requests beyond the steady poll's and the new tag's HEAD are the metadata's.

The script uses nothing that issue 16 added, so the same file run from a checkout of the code before it
(`git archive <commit> | tar -x -C DIR`, copy this file into DIR/benchmarks, run from DIR) gives the
"before" figures: compare the two outputs.

`.venv/bin/python -m benchmarks.image_cost`
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.poll_speed import NAME, repo_name, seed, watcher_installation
from benchmarks.small_poll_cpu import cpu_of, register, steady_poll
from tests.support.registry import RegistryClient, RegistryServer
from watcher.polling.poll import poll
from watcher.registry import warm


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--repos", type=int, default=10, help="repositories (default 10)")
    parser.add_argument("--tags", type=int, default=3, help="tags per repository (default 3)")
    parser.add_argument("--polls", type=int, default=20, help="steady polls per round (default 20)")
    parser.add_argument("--runs", type=int, default=5, help="rounds (default 5)")
    parser.add_argument("--concurrency", type=int, default=8, help="requests in flight (default 8)")
    parser.add_argument("--redis-url", default=os.environ.get("WATCHER_TEST_REDIS", "redis://127.0.0.1:6379/0"))
    return parser.parse_args(argv)


def changed(steady: int, what: str, added: bool = True) -> str:
    """One poll after a change of one tag: its requests beyond the steady poll's (and an added tag's HEAD)."""
    result = poll(NAME)
    if len(result.events) != 1:
        raise RuntimeError(f"{what}: {len(result.events)} events, not 1")
    return f"{what:<44}{result.requests:>9}{result.requests - steady - added:>7}"


def fill_cost() -> list[str]:
    """Where the background fill exists: the runs that fill the baseline, then an idle run's cost."""
    try:
        from watcher import bus
        from watcher.db import get_engine
        from watcher.polling import imagefill
    except ImportError:
        return ["(no background fill in this version)"]
    engine, client = get_engine(), bus.connect()
    runs, stored, requests = 0, 0, 0
    while True:
        filled = imagefill.fill(engine, client)
        runs, stored, requests = runs + 1, stored + filled.stored, requests + filled.requests
        if not filled.registries:
            break
    cpu, wall = time.process_time(), time.perf_counter()
    idle = [imagefill.fill(engine, client) for _ in range(20)]
    cpu, wall = (time.process_time() - cpu) / 20, (time.perf_counter() - wall) / 20
    if any(run.registries or run.requests for run in idle):
        raise RuntimeError("an idle fill run read a registry")
    return [
        f"background fill of the baseline: {runs} runs, {stored} digests stored, {requests} requests",
        f"idle fill run (nothing missing): {cpu * 1000:.2f} ms CPU, {wall * 1000:.2f} ms wall, 0 requests",
    ]


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    warm.enable()  # as a worker does at its start
    command = ".venv/bin/python -m benchmarks.image_cost " + shlex.join(sys.argv[1:] if argv is None else argv)
    with tempfile.TemporaryDirectory(prefix="watcher-bench-") as tmp_name:
        tmp = Path(tmp_name)
        with RegistryServer(root=tmp / "registry") as registry, watcher_installation(tmp, args.redis_url):
            seed(registry.url, args.repos, args.tags, workers=4)
            register(registry.url, args.repos, args.concurrency)
            poll(NAME)  # the baseline
            steady_poll()  # warm
            requests = poll(NAME).requests
            cpu = [cpu_of(steady_poll, args.polls)[0] for _ in range(args.runs)]
            again = poll(NAME).requests
            lines = [f"{'one poll':<44}{'requests':>9}{'extra':>7}", f"{'steady':<44}{requests:>9}{0:>7}"]
            with RegistryClient(registry.url) as client:
                repo = repo_name(0)
                client.push_image(repo, "new-image")  # a new digest
                lines.append(changed(requests, "tag added, new image"))
                requests += 1
                client.retag(repo, "new-image", "known-digest")  # a digest the installation knows
                lines.append(changed(requests, "tag added, known digest"))
                requests += 1
                client.push_image(repo, "new-image")  # the tag moves to another new digest
                lines.append(changed(requests, "tag moved to a new image", added=False))
            steady_after = poll(NAME).requests
            lines += fill_cost()
    print(f"\n{args.repos} repositories x {args.tags} tags (literal names), warm worker")
    print("\n".join(lines))
    print(f"steady poll again after the changes: {steady_after} requests ({again} before them, +2 new tags' HEADs)")
    med = statistics.median(cpu)
    print(
        f"steady poll CPU, this process: median {med * 1000:.2f} ms, min {min(cpu) * 1000:.2f}, "
        f"max {max(cpu) * 1000:.2f} ({args.runs} rounds of {args.polls})"
    )
    print(f"reproduce: {command}")
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}, Python {sys.version.split()[0]}")
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
    sys.exit(130)
