"""What 100 policies cost the commit of a 1 %-changed group of 100 repositories x 1,000 tags, in process
(issue 16, "Speed"): the steadier figure beside `policy_scale`'s whole polls, which a loaded machine blurs.

Two throw-away installations seeded alike (the group committed once); **P** also holds `policy_scale`'s 100
policies (one per repository, its five strategies in turn), **0** none. Then GENERATIONS times, P and 0 in
alternating order: 1 % of the tags (every repository has some) move to new digests and the group is committed
(`watcher.polling.saving.save`, as a poll does), with the policies' kept keys and creation times forgotten
first, as in the fresh process `perf-scale` runs each poll in. Printed: `reevaluate`'s own CPU in P's commits,
and the commits' CPU, P and 0, and their medians' ratio.

Run from the repository root: `.venv/bin/python -m benchmarks.policy_group --db sqlite` (`--db postgresql`:
WATCHER_BENCH_PG, default postgresql://postgres@127.0.0.1:5432/postgres).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from benchmarks import throwaway
from benchmarks.policy_scale import STRATEGIES

REPOS, TAGS, GENERATIONS = 100, 1000, 5


def tags_of(repository: int, generation: int) -> dict[str, Any]:
    """A repository's tags in a generation: image n moved in generation g when n % 100 == g - 1."""
    from watcher.diff import TagState

    base = datetime(2026, 1, 1, tzinfo=UTC)
    found = {}
    for i in range(TAGS):
        n = repository * TAGS + i
        moved = n % 100 + 1 if n % 100 < generation else 0
        pushed = base + timedelta(seconds=n + moved * 0.5)
        found[f"build-{i:05d}"] = TagState(f"sha256:{n:032x}{moved:032x}", pushed)
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--generations", type=int, default=GENERATIONS)
    opts = parser.parse_args(argv)
    with throwaway.state(opts.db, "group-p") as with_policies, throwaway.state(opts.db, "group-0") as without:
        os.environ.update(with_policies.env)
        from watcher.settings import get_settings

        get_settings.cache_clear()
        import watcher.polling.saving as saving
        from watcher.db import get_engine, session_scope
        from watcher.policies import evaluation, strategies
        from watcher.policies.store import PolicySpec, save
        from watcher.polling.snapshot import fingerprint, stored_repositories
        from watcher.registrations import store
        from watcher.registrations.scope import Scope
        from watcher.registrations.spec import RegistrySpec

        spent: list[float] = []
        reevaluate = saving.reevaluate

        def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.process_time()
            try:
                return reevaluate(*args, **kwargs)
            finally:
                spent.append(time.process_time() - started)

        saving.reevaluate = timed
        names = [f"team/repo-{r:03d}" for r in range(REPOS)]
        sides: dict[str, tuple[Any, Any]] = {}
        for side, url in (("P", with_policies.url), ("0", without.url)):
            engine = get_engine(url)
            with session_scope(engine) as session:
                row, _ = store.save(session, RegistrySpec("bench", "oci", "https://registry.example"), admitted=True)
                target = saving.Target.of(row, row.url, Scope.from_options({}), emit_new=True)
            first = [(name, tags_of(r, 0)) for r, name in enumerate(names)]
            saving.save(engine, target, [saving.Listed(n, t, fingerprint(t), None) for n, t in first])
            if side == "P":
                for r, name in enumerate(names):
                    options = cast(dict[str, Any], STRATEGIES[r % len(STRATEGIES)])
                    spec = PolicySpec.build(f"p{r:03d}", "bench", name, **options)
                    with session_scope(engine) as session:
                        save(session, spec, workspace_id=target.workspace_id)
            sides[side] = (engine, target)
        print(
            f"{opts.db}: {REPOS} x {TAGS:,} tags, 1 % moved a generation; P: {REPOS} policies, 0: none; "
            f"Python {platform.python_version()}, load {os.getloadavg()[0]:.1f}"
        )
        cpu: dict[str, list[float]] = {"P": [], "0": []}
        policies: list[float] = []
        for generation in range(1, opts.generations + 1):
            for side in ("P", "0") if generation % 2 else ("0", "P"):
                engine, target = sides[side]
                with session_scope(engine) as session:
                    stored = stored_repositories(session, target.registry_id)
                group = []
                for r, name in enumerate(names):
                    tags = tags_of(r, generation)
                    group.append(saving.Listed(name, tags, fingerprint(tags), stored[name]))
                strategies._versions.clear()
                strategies._keys.clear()
                evaluation._created_times.clear()
                spent.clear()
                started = time.process_time()
                saved = saving.save(engine, target, group)
                cpu[side].append(time.process_time() - started)
                assert not any(one.conflict for one in saved)
                if side == "P":
                    policies.append(sum(spent))
        for engine, _ in sides.values():
            engine.dispose()
    ms = [round(x * 1000) for x in policies]
    p, zero = statistics.median(cpu["P"]), statistics.median(cpu["0"])
    print(f"  reevaluate in P's commits, ms CPU: {ms} (median {statistics.median(policies) * 1000:.0f})")
    print(f"  commit CPU, median: P {p * 1000:.0f} ms, 0 {zero * 1000:.0f} ms: P ÷ 0 {p / zero:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
