"""CPU of selecting among a repository's 10,000 tags, for each strategy, against a floor of `sorted()`.

Issue 16 asks that re-evaluating the policies of a changed repository of 10,000 tags stay well under
100 ms of CPU. This builds TAGS tags of the shapes policies meet (SemVer with and without `v`, pre-releases
and build metadata; Flux-style `main-SHA-TIMESTAMP`; CalVer `RELEASE.…`; `latest` and branch names), then
times `watcher.policies.select` for every strategy, best of RUNS (process time, not wall), beside
`sorted()` of the same tag strings: the cheapest thing that looks at every tag's order at all. Semver is
timed cold (the first selection, which parses every tag) and warm (the parsed tags kept, as for the second
policy on the same repository, or the next change), and for its worst case: a range for an old line, so
that every newer version is tested and refused. Last, ten mixed policies on the same repository, as the
issue's figure: their total must be at most TARGET ms (100) warm (the keys of the tags kept from the
last selection: a change brings a few new tags); every single selection at most half of it warm, and at
most TARGET cold (every key computed: a worker's first selection of that repository). The script exits
1 when a target is missed.

Run from the repository root: `.venv/bin/python -m benchmarks.policy_select`.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from watcher.policies import Candidate, Policy, select
from watcher.policies import strategies as strategies_module

T0 = datetime(2024, 1, 1, tzinfo=UTC)


def make_tags(count: int, seed: int) -> list[Candidate]:
    rng = random.Random(seed)
    names: set[str] = {"latest", "main", "stable"}
    while len(names) < count:
        shape = rng.random()
        if shape < 0.5:
            name = f"{rng.choice(['', 'v'])}{rng.randint(0, 5)}.{rng.randint(0, 40)}.{rng.randint(0, 99)}"
            extra = rng.random()
            if extra < 0.15:
                name += f"-rc.{rng.randint(1, 9)}"
            elif extra < 0.2:
                name += f"+build.{rng.randint(1, 999)}"
        elif shape < 0.8:
            name = f"main-{rng.getrandbits(28):07x}-{1_600_000_000 + rng.randint(0, 10**8)}"
        elif shape < 0.95:
            name = f"RELEASE.{2020 + rng.randint(0, 5)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}T00-00-00Z"
        else:
            name = f"feature-{rng.getrandbits(32):08x}"
        names.add(name)
    candidates = []
    for index, name in enumerate(sorted(names)):
        created = T0 + timedelta(seconds=rng.randint(0, 10**7)) if rng.random() < 0.9 else None
        candidates.append(Candidate(name, f"sha256:{index:064x}", created=created, pushed_at=created))
    rng.shuffle(candidates)
    return candidates


def best_of(runs: int, work: Callable[[], Any], before: Callable[[], None] | None = None) -> float:
    """The least process time of `runs` calls of `work`, in ms (`before` runs untimed ahead of each)."""
    best = float("inf")
    for _ in range(runs):
        if before is not None:
            before()
        started = time.process_time()
        work()
        best = min(best, time.process_time() - started)
    return best * 1000


def forget() -> None:
    """Empties the keys kept between selections: the next selection is the first."""
    strategies_module._versions.clear()
    strategies_module._keys.clear()


POLICIES = {
    "semver ^1.2": Policy.from_options(semver="^1.2"),
    "semver ^1.2 --prerelease": Policy.from_options(semver="^1.2", prerelease=True),
    "semver ~0.1 (worst: every newer version refused)": Policy.from_options(semver="~0.1"),
    "semver >=1.0 <2.0 || ^4": Policy.from_options(semver=">=1.0 <2.0 || ^4"),
    "numeric asc, Flux's $ts": Policy.from_options(
        numeric="asc", filter=r"^main-[a-f0-9]+-(?P<ts>[0-9]+)", extract="$ts"
    ),
    "alphabetical asc, CalVer": Policy.from_options(alphabetical="asc", filter=r"^RELEASE\."),
    "alphabetical desc, all tags": Policy.from_options(alphabetical="desc"),
    "newest-build": Policy.from_options(newest_build=True),
    "newest-build, filtered": Policy.from_options(newest_build=True, filter="^main-"),
    "digest latest": Policy.from_options(digest="latest"),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tags", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--target", type=float, default=100.0, help="ms of CPU for ten policies, warm")
    args = parser.parse_args(argv)
    candidates = make_tags(args.tags, seed=16)
    names = [candidate.tag for candidate in candidates]
    floor = best_of(args.runs, lambda: sorted(names))
    print(f"{len(candidates)} tags; floor sorted(): {floor:.2f} ms; each policy's CPU, ms (x sorted()):")
    print(f"  {'policy':50} {'warm':>14} {'cold':>15}  selected (considered/ignored)")
    failed = False
    warm_total = 0.0
    for label, policy in POLICIES.items():
        cold = best_of(args.runs, lambda policy=policy: select(policy, candidates), before=forget)  # type: ignore[misc]
        warm = best_of(args.runs, lambda policy=policy: select(policy, candidates))  # type: ignore[misc]
        warm_total += warm
        selection = select(policy, candidates)
        shown = "none" if selection is None else f"{selection.tag} ({selection.considered}/{selection.ignored})"
        print(f"  {label:50} {warm:6.2f} ({warm / floor:4.1f}x) {cold:6.2f} ({cold / floor:5.1f}x)  {shown}")
        if warm > args.target / 2 or cold > args.target:
            print(f"    MISSED: over {args.target / 2:.0f} ms warm or {args.target:.0f} ms cold")
            failed = True
    cold_total = best_of(args.runs, lambda: [select(policy, candidates) for policy in POLICIES.values()], before=forget)
    print(f"ten policies: warm {warm_total:.2f} ms (target <= {args.target:.0f}), first ever {cold_total:.2f} ms")
    if warm_total > args.target:
        print("MISSED: ten policies over the target")
        failed = True
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
