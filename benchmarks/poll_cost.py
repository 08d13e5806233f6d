"""What a baseline poll costs against a steady one, in one process: CPU per poll of `watcher.polling.poll.poll`.

`--registries` small registries (each `--repositories` x `--tags`, each its own loopback host through the
`many_registries` forwarder) are polled one after another, as a worker's pool process polls them (its
thread's event loop kept, `watcher.registry.warm` on): first every baseline, then `--rounds` steady rounds. Each
round's CPU (this process, every thread) per poll, and with `--profile DIR` a cProfile of each round.
Redis: the machine's (`WATCHER_BENCH_REDIS`, default redis://127.0.0.1:6379/0), under a throw-away prefix.

`.venv/bin/python -m benchmarks.poll_cost --registries 200`
"""

from __future__ import annotations

import argparse
import cProfile
import os
import secrets
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, cast

import redis

from benchmarks.many_registries import forwarder, register, registry_name, watcher_env
from benchmarks.poll_speed import seed
from tests.support.registry import RegistryServer


def rounds(args: argparse.Namespace) -> None:
    """Every baseline of the first half (the process warms up: imports, caches, statements), then of the
    second half (a baseline in a warm process), then steady rounds of the second half."""
    from watcher.polling import poll as polling
    from watcher.registry import warm

    warm.enable()
    writer_profile: list[cProfile.Profile | None] = [None]
    writer = timed_writer(polling, writer_profile)
    names = [registry_name(i) for i in range(args.registries)]
    half = names[len(names) // 2 :]
    plan = [("warm-up", names[: len(names) // 2]), ("baseline", half)]
    plan += [(f"steady {n + 1}", half) for n in range(args.rounds)]
    for label, batch in plan:
        profile = cProfile.Profile() if args.profile else None
        writer[0], writer_profile[0] = 0.0, cProfile.Profile(time.thread_time) if args.profile else None
        cpu, wall = time.process_time(), time.monotonic()
        if profile:
            profile.enable()
        results = [polling.poll(name, trigger="schedule") for name in batch]
        if profile:
            profile.disable()
            profile.dump_stats(str(args.profile / f"{label.replace(' ', '-')}.prof"))
            cast(cProfile.Profile, writer_profile[0]).dump_stats(
                str(args.profile / f"{label.replace(' ', '-')}.writer.prof")
            )
        cpu, wall = time.process_time() - cpu, time.monotonic() - wall
        requests = sum(r.requests for r in results) / len(results)
        print(
            f"{label:10s} {1000 * cpu / len(batch):6.1f} ms CPU a poll (writer thread: reading and committing "
            f"the snapshot {1000 * writer[0] / len(batch):5.1f}), {1000 * wall / len(batch):6.1f} ms wall, "
            f"{requests:.1f} requests a poll, {sum(r.baseline for r in results)} baselines"
        )


def timed_writer(polling: Any, profile: list[cProfile.Profile | None]) -> list[float]:
    """The CPU the poll's writer thread spends in `RegistryStore.stored` and `.save`, summed into [0] (and
    profiled into `profile[0]`, if set)."""
    spent = [0.0]
    store = polling.RegistryStore
    for method in ("stored", "save"):
        original = getattr(store, method)

        def timed(self: Any, *args: Any, _original: Any = original) -> Any:
            began = time.thread_time()
            try:
                if profile[0] is not None:
                    return profile[0].runcall(_original, self, *args)
                return _original(self, *args)
            finally:
                spent[0] += time.thread_time() - began

        setattr(store, method, timed)
    return spent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--registries", type=int, default=200)
    parser.add_argument("--repositories", type=int, default=10)
    parser.add_argument("--tags", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--profile", type=Path)
    parser.add_argument("--seed-workers", type=int, default=16)
    args = parser.parse_args(argv)
    args.interval = 60
    args.forwarder = False  # the registry listens on every loopback address itself
    tmp = Path(tempfile.mkdtemp(prefix="watcher-poll-cost-"))
    try:
        with RegistryServer(root=tmp / "registry", every_address=True) as registry:
            seed(registry.url, args.registries * args.repositories, args.tags, args.seed_workers)
            with forwarder(registry, args, tmp) as (port, _):
                env = watcher_env(tmp, None)
                env["WATCHER_REDIS_URL"] = os.environ.get("WATCHER_BENCH_REDIS", "redis://127.0.0.1:6379/0")
                env["WATCHER_EVENTS_STREAM"] = f"watcher-poll-cost-{secrets.token_hex(4)}"
                os.environ.update(env)
                register(env, tmp, args, port)
                try:
                    rounds(args)
                finally:
                    client = redis.Redis.from_url(env["WATCHER_REDIS_URL"])
                    for key in client.scan_iter(match=f"{env['WATCHER_EVENTS_STREAM']}*"):
                        client.delete(key)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
