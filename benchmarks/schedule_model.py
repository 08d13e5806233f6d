"""A model of the tick and the pool for `many_registries`: how the schedule lag after the first interval
depends on when new registries are first polled, on the pool's capacity and on what a baseline costs.

`--registries` registries of one `--interval`, each on its grid (`watcher.polling.scheduler.phase_of`); the tick
runs every second and queues at most `QUEUE_PER_PROCESS` x `--processes` tasks, the most overdue first,
never a registry already waiting or running (`watcher.polling.scheduler.claim_due`,
`watcher.polling.pool.room`); each pool
process takes the oldest task and is busy for one poll, its share of `--capacity` (steady polls a minute of
the whole pool), or `--baseline-cost` times that for a baseline. Policies: `at-once` (every registry due
when registered) and `first-slot` (at its first slot: `watcher.polling.scheduler.first_slot`). The lag is the
benchmark's: a scheduled steady poll's start minus its registry's last grid point at or before it, over
`--minutes` from one interval after every baseline.

`.venv/bin/python -m benchmarks.schedule_model --capacity 1064 --baseline-cost 1.17`
"""

from __future__ import annotations

import argparse
import hashlib
import heapq
import sys
from collections import deque

from watcher.polling.pool import QUEUE_PER_PROCESS

TICK_SECONDS = 1.0


def run(args: argparse.Namespace, policy: str) -> tuple[float, float, float, float]:
    """(every baseline done at, steady polls a minute in the window, lag p50, lag p95)."""
    interval = args.interval
    names = [f"team-{i:05d}" for i in range(args.registries)]
    phases = {n: int.from_bytes(hashlib.sha256(n.encode()).digest()[:8], "big") % interval for n in names}

    def after(name: str, now: float) -> float:
        return phases[name] + interval * ((now - phases[name]) // interval + 1)

    registered = 0.5
    due = {n: registered if policy == "at-once" else after(n, registered) for n in names}
    cost = args.processes * 60 / args.capacity
    queue: deque[str] = deque()
    waiting: set[str] = set()
    running: set[str] = set()
    baselined: set[str] = set()
    finishing: list[tuple[float, str]] = []
    free_at = [0.0] * args.processes
    starts: list[tuple[float, str]] = []
    now, done = 0.0, float("inf")
    while now < done + interval + 60 * args.minutes:
        for p in range(args.processes):  # each process takes the oldest task whenever it is free
            free_at[p] = max(free_at[p], now - TICK_SECONDS)
            while free_at[p] <= now and queue:
                name = queue.popleft()
                waiting.discard(name)
                if name in baselined:
                    starts.append((free_at[p], name))
                took = cost * (1.0 if name in baselined else args.baseline_cost)
                heapq.heappush(finishing, (free_at[p] + took, name))
                running.add(name)
                free_at[p] += took
        while finishing and finishing[0][0] <= now:
            _, name = heapq.heappop(finishing)
            running.discard(name)
            baselined.add(name)
        if done == float("inf") and len(baselined) == len(names):
            done = now
        room = QUEUE_PER_PROCESS * args.processes - len(queue)
        for _, name in sorted((due[n], n) for n in names if due[n] <= now and n not in running):
            if name in waiting:
                due[name] = after(name, now)  # skipped: the waiting poll serves it
            elif room > 0:
                due[name] = after(name, now)
                waiting.add(name)
                queue.append(name)
                room -= 1
        now += TICK_SECONDS
    since = done + interval
    lags = sorted(
        start - (phases[n] + interval * ((start - phases[n]) // interval)) for start, n in starts if start >= since
    )
    return done, len(lags) / args.minutes, lags[len(lags) // 2], lags[int(0.95 * (len(lags) - 1))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--registries", type=int, default=1000)
    parser.add_argument("--interval", type=int, default=60, help="seconds")
    parser.add_argument("--processes", type=int, default=2, help="pool processes")
    parser.add_argument("--capacity", type=float, default=1064, help="steady polls a minute the pool can do")
    parser.add_argument("--baseline-cost", type=float, default=1.17, help="a baseline poll / a steady poll")
    parser.add_argument("--minutes", type=float, default=3, help="measured")
    args = parser.parse_args(argv)
    for policy in ("at-once", "first-slot"):
        done, per_minute, p50, p95 = run(args, policy)
        print(
            f"{policy:10s}  every baseline after {done:4.0f} s; window: {per_minute:6.0f} polls/min, "
            f"lag p50 {p50:5.1f} s, p95 {p95:5.1f} s"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
