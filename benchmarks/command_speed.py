"""Wall time of the quick `watcher` commands, each a fresh process, beside `python -c pass` as the floor
(and `python -c "import sqlalchemy"`, what any command reading the state database pays at least).

Sets up a throw-away installation (a temporary WATCHER_DATA_DIR: SQLite, embedded Redis, a generated
key) with a few registries of different providers and an API token, runs every command once to warm
the bytecode caches (as an installed package has them), then runs each command RUNS times, round-robin so
a busy moment on a shared machine costs every command alike, and prints each one's median and minimum wall
time, its median above the floor, its median as a ratio of each floor's, and its median CPU time (user +
system: what the command itself costs, which a busy machine inflates less than the wall time). Nothing is
left behind.

The commands run this checkout's code (PYTHONPATH), whatever the venv has installed; `--source DIR` runs
them from another checkout instead (say, `git archive` of an older commit unpacked in DIR) with this
venv; `--against DIR` runs every command from both, alternating, to compare before and after side by side.

Run from the repository root: `.venv/bin/python -m benchmarks.command_speed` (15 runs each).
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.support.installation import seed

COMMANDS: list[tuple[str, list[str]]] = [
    ("python -c pass (floor)", ["-c", "pass"]),
    ("import sqlalchemy (floor)", ["-c", "import sqlalchemy"]),
    ("watcher --help", ["-m", "watcher", "--help"]),
    ("watcher registry list", ["-m", "watcher", "registry", "list"]),
    ("watcher registry show NAME", ["-m", "watcher", "registry", "show", "aws"]),
    ("watcher status", ["-m", "watcher", "status"]),
    ("watcher images NAME", ["-m", "watcher", "images", "hub"]),
    ("watcher events", ["-m", "watcher", "events"]),
    ("watcher token list", ["-m", "watcher", "token", "list"]),
]


def timed(args: list[str], env: dict[str, str], cwd: Path, path: str | None = None) -> tuple[float, float]:
    """(wall, CPU) seconds of one run of `python ARGS` (with PYTHONPATH `path`, if given)."""
    env = env if path is None else {**env, "PYTHONPATH": path}
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run([sys.executable, *args], env=env, cwd=cwd, capture_output=True, timeout=120)
    elapsed = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed: {done.stderr.decode().strip()}")
    return elapsed, (after.ru_utime - used.ru_utime) + (after.ru_stime - used.ru_stime)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15, help="runs of each command (default 15)")
    parser.add_argument("--source", type=Path, help="run the commands from this checkout instead")
    parser.add_argument("--against", type=Path, help="run each command from this checkout too, alternating")
    opts = parser.parse_args(argv)
    source = (opts.source or Path(__file__).resolve().parents[1]).resolve()
    os.environ["PYTHONPATH"] = str(source)  # seeded, and then run, by that code
    commands: list[tuple[str, list[str], str | None]] = [(name, args, None) for name, args in COMMANDS]
    if opts.against:
        other = str(opts.against.resolve())
        commands += [(f"{name} [against]", args, other) for name, args in COMMANDS[2:]]
    with tempfile.TemporaryDirectory(prefix="command-speed-") as tmp:
        home = Path(tmp)
        env = seed(home)
        env.pop("PYTHONDONTWRITEBYTECODE", None)  # bytecode cached, as an installed package has it
        for _, args, path in commands:  # warm: bytecode written, the database's pages in the page cache
            timed(args, env, home, path)
        times: dict[str, list[tuple[float, float]]] = {name: [] for name, _, _ in commands}
        for _ in range(opts.runs):
            for name, args, path in commands:
                times[name].append(timed(args, env, home, path))
    load = os.getloadavg()[0]
    print(
        f"{opts.runs} runs each, Python {platform.python_version()}, {os.cpu_count()} CPUs, "
        f"load {load:.1f}, code from {source}" + (f", [against] from {opts.against}" if opts.against else "")
    )
    floor, alchemy = (statistics.median(wall for wall, _ in times[name]) for name, _ in COMMANDS[:2])
    alchemy_cpu = statistics.median(cpu for _, cpu in times[COMMANDS[1][0]])
    print(
        f"{'command':38} {'median s':>8} {'min s':>6} {'above floor s':>13} {'÷ pass':>6} {'÷ sqla':>6} "
        f"{'cpu s':>6} {'cpu ÷ sqla':>9}"
    )
    for name, runs in times.items():
        walls = [wall for wall, _ in runs]
        median, cpu = statistics.median(walls), statistics.median(c for _, c in runs)
        print(
            f"{name:38} {median:8.3f} {min(walls):6.3f} {median - floor:13.3f} {median / floor:6.1f} "
            f"{median / alchemy:6.2f} {cpu:6.3f} {cpu / alchemy_cpu:9.2f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
