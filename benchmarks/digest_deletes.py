"""How soon every tag of a manifest deleted by digest is reported `removed` through the registry's webhook.

A throw-away installation (as `webhook_latency`'s) watches the real registry (CNCF Distribution, as the tests
run it) with a 1-hour interval, through the `notifications` `watcher registry webhook` prints, at a real
`watcher run`. WARMUP + ROUNDS repositories each hold one image under TAGS tags, baselined before the
registry notifies. Then, one repository at a time (the first WARMUP unmeasured: the worker's first tasks),
the manifest is deleted by digest (`DELETE /v2/REPO/manifests/sha256:...`: Distribution deletes the
manifest, then untags each tag, and notifies each step). Measured per round: from the DELETE's answer to
the last tag's `removed` entry on the stream (read by a thread blocked in XREAD), and, side by side, to the
last tag's notification reaching the floor (a second endpoint in this process that only records arrivals:
when the registry has told anyone).

Target (issue 13 §3): every tag's `removed` within 2 s of the delete. Exit status 1 if missed. Run from the
repository root: `.venv/bin/python -m benchmarks.digest_deletes --tags 2` (and `--tags 5`).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shlex
import statistics
import sys
import time
from collections.abc import Iterator
from typing import Any

from benchmarks.read_side import installation, machine, percentile
from benchmarks.webhook_latency import (
    NAME,
    ROOT,
    Arrivals,
    cli,
    notification_endpoint,
    stream_reader,
    watcher_notifications,
    watcher_run,
)
from tests.support.registry import RegistryClient, RegistryServer, free_port

TARGET_S = 2.0
WAIT_SECONDS = 20.0
TAGS = ("latest", "v1", "v1.2", "v1.2.3", "stable", "v1.3", "v2", "edge", "prod", "dev")


@contextlib.contextmanager
def floor_listener() -> Iterator[tuple[str, Arrivals]]:
    """A bare notification endpoint recording when each tag's delete was notified."""
    notified = Arrivals()

    def handle(event: dict[str, Any], at: float) -> None:
        target = event.get("target") or {}
        if event.get("action") == "delete" and target.get("tag"):
            notified.add(target["repository"], target["tag"], at)

    with notification_endpoint(handle) as url:
        yield url, notified


def last_of(arrivals: Arrivals, repo: str, tags: list[str], since: float) -> float | None:
    """Seconds from `since` to the last of the tags' arrivals, or None if one never came."""
    seen = [arrivals.wait(repo, tag, max(0.0, since + WAIT_SECONDS - time.monotonic())) for tag in tags]
    return None if None in seen else max(s for s in seen if s is not None) - since


def run(args: argparse.Namespace, command: str) -> int:
    from watcher.polling.poll import poll

    tags = list(TAGS[: args.tags])
    print(
        f"digest deletes on {args.db}: {args.rounds} rounds of {len(tags)} tags after {args.warmup} warm-up; "
        f"{machine()}",
        flush=True,
    )
    listen = f"127.0.0.1:{free_port()}"
    watcher_s: list[float] = []
    floor_s: list[float] = []
    lost: list[str] = []
    with installation(args.db) as inst:
        inst.env |= {"WATCHER_LISTEN": listen, "WATCHER_PUBLIC_URL": f"http://{listen}", "PYTHONPATH": str(ROOT)}
        os.environ.update(inst.env)
        with (
            RegistryServer(root=inst.tmp / "registry") as registry,
            RegistryClient(registry.url) as client,
            floor_listener() as (floor_url, notified),
        ):
            repos = [f"team/app{i}" for i in range(args.warmup + args.rounds)]
            for repo in repos:
                for tag in tags:
                    client.push_image(repo, tag, seed=repo)
            cli("registry", "add", NAME, "--provider", "oci", "--url", registry.url, "--interval", "1h")
            poll(NAME)  # the baseline: every tag is stored
            endpoint = watcher_notifications()["endpoints"][0]
            floor_endpoint = {**endpoint, "name": "floor", "url": floor_url, "headers": {}}
            registry.notifications = {"endpoints": [endpoint, floor_endpoint]}
            registry.stop()
            registry.start()
            with watcher_run(inst, listen, args.worker_concurrency), stream_reader(inst.stream, "removed") as stream:
                for index, repo in enumerate(repos):
                    time.sleep(args.gap)
                    client.delete(repo, tags[-1])
                    deleted = time.monotonic()
                    reported, told = last_of(stream, repo, tags, deleted), last_of(notified, repo, tags, deleted)
                    if index < args.warmup:  # the worker's first tasks (imports, connections)
                        continue
                    if reported is None or told is None:
                        lost.append(f"{repo} (stream {reported is not None}, floor {told is not None})")
                        continue
                    watcher_s.append(reported)
                    floor_s.append(told)
                    if args.verbose:
                        each = {tag: round(stream.seen[(repo, tag)] - deleted, 3) for tag in tags}
                        print(f"{repo}: removed {each}", flush=True)
    return report(watcher_s, floor_s, lost, command)


def report(watcher_s: list[float], floor_s: list[float], lost: list[str], command: str) -> int:
    print(f"\n{'ms, from the DELETE answered':48} {'n':>4} {'p50':>6} {'p95':>6} {'max':>6}")
    for label, values in (
        ("-> every tag `removed` on the stream (watcher)", watcher_s),
        ("-> every tag notified (floor)", floor_s),
    ):
        if values:
            ms = [v * 1000 for v in values]
            print(f"{label:48} {len(ms):4} {statistics.median(ms):6.0f} {percentile(ms, 95):6.0f} {max(ms):6.0f}")
    misses = [f"lost: {one}" for one in lost]
    if watcher_s and max(watcher_s) > TARGET_S:
        misses.append(f"slowest round {max(watcher_s):.2f} s > {TARGET_S} s")
    print(f"({machine()})\n\nreproduce: {command}")
    print("\n" + ("targets missed:\n  " + "\n  ".join(misses) if misses else "all targets met"))
    return 1 if misses else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--db", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--tags", type=int, default=2, choices=range(1, len(TAGS) + 1), help="tags on the digest")
    parser.add_argument("--rounds", type=int, default=20, help="manifests deleted, one per repository (default 20)")
    parser.add_argument("--warmup", type=int, default=2, help="unmeasured rounds first (default 2)")
    parser.add_argument("--gap", type=float, default=0.5, help="seconds between deletes (default 0.5)")
    parser.add_argument("--verbose", action="store_true", help="each round's tags, as reported")
    parser.add_argument("--worker-concurrency", type=int, help="`watcher run --concurrency` (default: CPUs)")
    args = parser.parse_args(argv)
    command = ".venv/bin/python -m benchmarks.digest_deletes " + shlex.join(sys.argv[1:] if argv is None else argv)
    return run(args, command)


if __name__ == "__main__":
    sys.exit(main())
