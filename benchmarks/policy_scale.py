"""`perf-scale` with policies (issue 16, "Speed"): a big ECR registry polled by installations alike but for
their policies, side by side in one run.

`benchmarks.ecr_fake` serves REPOS x TAGS tags (100 x 1,000 = 100,000). Throw-away installations
(`benchmarks.ecr_scale.installation`) register it as the same `ecr` registry: **P** with POLICIES (100)
policies on it — one per repository, the strategies in turn: numeric on the build number (RE2 filter and
extracted key), alphabetical, newest build, the digest of `build-00000`, a SemVer range no tag satisfies —
and **0** with none; with `--before DIR` also **B**, polled by another checkout's code (the commit before
issue 16's policies, say: `git worktree add DIR 5cf448e`), with none. Each poll runs in a process of its
own (`benchmarks.ecr_scale --role poll`: `watcher.polling.poll.poll`, timed after its imports), the
installations in turn — which goes first rotates each round — through the baseline, RUNS steady polls, then
RUNS rounds after the fake moved 1 % of the tags (every repository has some, so every policy is
re-evaluated on its 1,000 tags each time). Each poll of P is divided by the poll of 0 (and of B) of the same
round; the target is a median ratio ≤ TARGET (1.05) for the 1 %-changed polls. Exits 1 when it is missed, when
a poll read another number of tags, a steady poll emitted anything, or a changed poll's tag events are not
exactly the tags moved.

Run from the repository root: `.venv/bin/python -m benchmarks.policy_scale --db sqlite` (`--db postgresql`
needs WATCHER_BENCH_PG, default postgresql://postgres@127.0.0.1:5432/postgres).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import statistics
import subprocess
import sys
from pathlib import Path

from benchmarks.ecr_scale import ACCOUNT, NAME, PERIOD, REGION, ROOT, Installation, Run, control, fake_api, run_child
from benchmarks.ecr_scale import installation as ecr_installation

POLICIES = 100
STRATEGIES = [
    {"numeric": "asc", "filter": r"^build-(?P<n>[0-9]+)$", "extract": "$n"},
    {"alphabetical": "asc"},
    {"newest_build": True},
    {"digest": "build-00000"},
    {"semver": "^1"},
]
ADD_POLICIES = """
import json, sys
from watcher.db import session_scope
from watcher.policies.store import PolicySpec, save
from watcher.schema import DEFAULT_WORKSPACE_ID
from benchmarks.ecr_fake import repository_name
strategies = json.loads(sys.argv[1])
for n in range(int(sys.argv[2])):
    with session_scope() as session:
        spec = PolicySpec.build(f"p{n:03d}", "bench", repository_name(n), **strategies[n % len(strategies)])
        save(session, spec, workspace_id=DEFAULT_WORKSPACE_ID)
"""


def register(inst: Installation, cwd: Path, env: dict[str, str], concurrency: int = 8) -> None:
    add = [sys.executable, "-m", "watcher", "registry", "add", NAME, "--provider", "ecr"]
    add += ["--url", f"https://{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com", "--access-key", "AKIDBENCH"]
    add += ["--secret-key", "bench", "--max-concurrency", str(concurrency), "--rate-limit", "10000"]
    add += ["--poll-timeout", "24h", "--no-verify"]
    subprocess.run(add, env=env, cwd=cwd, check=True, stdout=subprocess.DEVNULL)


def main(argv: list[str] | None = None) -> int:
    import json

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repos", type=int, default=100)
    parser.add_argument("--tags", type=int, default=1000, help="tags per repository")
    parser.add_argument("--db", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--runs", type=int, default=3, help="steady polls, and 1 %%-changed polls (default 3)")
    parser.add_argument("--policies", type=int, default=POLICIES)
    parser.add_argument("--before", type=Path, help="a checkout to poll a third installation with (B)")
    parser.add_argument("--target", type=float, default=1.05)
    opts = parser.parse_args(argv)
    total = opts.repos * opts.tags
    names = ["P", "0"] + (["B"] if opts.before else [])
    with fake_api(opts.repos, opts.tags) as endpoint, contextlib.ExitStack() as stack:
        sides: dict[str, tuple[Installation, Path, dict[str, str]]] = {}
        for name in names:
            inst = stack.enter_context(ecr_installation(opts.db, endpoint))
            cwd, env = ROOT, inst.env
            if name == "B" and opts.before:
                cwd = opts.before.resolve()
                env = {**inst.env, "PYTHONPATH": f"{cwd}{os.pathsep}{ROOT}"}
            register(inst, cwd, env)
            sides[name] = (inst, cwd, env)
        inst_p = sides["P"][0]
        add = [sys.executable, "-c", ADD_POLICIES, json.dumps(STRATEGIES), str(opts.policies)]
        subprocess.run(add, env=inst_p.env, cwd=ROOT, check=True)
        print(
            f"{opts.repos:,} repositories x {opts.tags:,} tags = {total:,} tags, {opts.db}; P: {opts.policies} "
            f"policies, 0: none{f', B: none, polled by {opts.before}' if opts.before else ''}; Python "
            f"{platform.python_version()}, load {os.getloadavg()[0]:.1f}",
            flush=True,
        )
        rounds: list[tuple[str, dict[str, Run]]] = []
        plan = ["baseline"] + ["steady"] * opts.runs + ["1% changed"] * opts.runs
        generation = 0
        for n, kind in enumerate(plan):
            if kind == "1% changed":
                generation += 1
                control(endpoint, generation=generation, period=PERIOD)
            order = names[n % len(names) :] + names[: n % len(names)]
            polled: dict[str, Run] = {}
            for name in order:
                _, cwd, env = sides[name]
                argv_ = [sys.executable, "-m", "benchmarks.ecr_scale", "--role", "poll"]
                polled[name] = run_child(kind, argv_, env, cwd=cwd)
            rounds.append((kind, polled))
            shown = "  ".join(f"{name} {polled[name].seconds:6.2f} s" for name in names)
            print(f"  {kind:11} {shown}  P ÷ 0 {polled['P'].seconds / polled['0'].seconds:5.2f}", flush=True)
    failures = check(rounds, total)
    failures += report(rounds, names, opts.target)
    for line in failures:
        print("FAILED:", line)
    return 1 if failures else 0


def check(rounds: list[tuple[str, dict[str, Run]]], total: int) -> list[str]:
    failures = []
    for kind, polled in rounds:
        for name, one in polled.items():
            if one.out.get("tags") != total:
                failures.append(f"{name}'s {kind} poll read {one.out.get('tags')} tags, not {total}")
            kinds = set(one.out.get("kinds", []))
            if kind == "steady" and one.out.get("events"):
                failures.append(f"{name}'s steady poll emitted {one.out['events']} events")
            moved = total // PERIOD  # and P's selections on top
            if kind == "1% changed" and (kinds - {"selected"} != {"updated"} or not moved <= one.out["events"]):
                failures.append(f"{name}'s changed poll emitted {one.out['events']} {sorted(kinds)}")
            if kind == "1% changed" and name != "P" and one.out["events"] != moved:
                failures.append(f"{name}'s changed poll emitted {one.out['events']} events, not {moved}")
            if name != "P" and "selected" in kinds:
                failures.append(f"{name} has no policy but emitted a selection")
    return failures


def report(rounds: list[tuple[str, dict[str, Run]]], names: list[str], target: float) -> list[str]:
    failures = []
    print(f"\n{'poll':11} {'side':>4} {'median s':>9} {'cpu s':>7} {'events':>7}   ratio to 0 (median, range)")
    for kind in ("baseline", "steady", "1% changed"):
        group = [polled for k, polled in rounds if k == kind]
        for name in names:
            seconds = statistics.median(p[name].seconds for p in group)
            cpu = statistics.median(p[name].out["cpu"] for p in group)
            events = statistics.median(p[name].out["events"] for p in group)
            line = f"{kind:11} {name:>4} {seconds:9.2f} {cpu:7.2f} {events:7.0f}"
            if name != "0":
                ratios = [p[name].seconds / p["0"].seconds for p in group]
                cpus = [p[name].out["cpu"] / p["0"].out["cpu"] for p in group]
                line += f"   time {statistics.median(ratios):4.2f} ({min(ratios):4.2f}-{max(ratios):4.2f})"
                line += f", cpu {statistics.median(cpus):4.2f}"
                if name == "P" and kind == "1% changed" and statistics.median(ratios) > target:
                    failures.append(f"P's 1 %-changed polls took {statistics.median(ratios):.2f}x 0's, over {target}")
            print(line)
    return failures


if __name__ == "__main__":
    sys.exit(main())
