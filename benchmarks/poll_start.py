"""How long `watcher poll` takes to start: from the process's spawn to its first connection to the registry,
beside two floors spawned the same way, in turn — `python -c pass` and a process that imports what any
poll needs at least (SQLAlchemy, httpx and redis) and then connects.

The registry is a listener on loopback that notes when a connection arrives and closes it, so the poll
fails right after: what is timed is only what a poll does before its first request (imports, settings,
the schema check, the engine, the credentials, the claim).

Beside the wall time, the CPU time the process had used when its connection arrived (all its threads, from
/proc/PID/task/*/schedstat, read by the listener as it accepts): on a machine shared with other work the
wall time mostly measures the wait for a CPU, the CPU time much less so.

    .venv/bin/python -m benchmarks.poll_start --runs 9
    .venv/bin/python -m benchmarks.poll_start --runs 9 --hide trio
    .venv/bin/python -m benchmarks.poll_start --runs 9 --hide trio --before /tmp/old   # from `git archive REV`

`--before DIR` adds a row for `watcher poll` run from another checkout of the code (its PYTHONPATH first),
in turn with the others, so two versions are compared in the same run against the same floors.

`--hide trio` runs every command as a production install would: httpcore imports `trio` whenever it is
installed, and only a test dependency (Selenium) installs it here. A hidden module is a package on
PYTHONPATH, ahead of site-packages, whose import raises ImportError, as a missing one's would.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from benchmarks.throwaway import state

NAME = "start"
FLOOR = (
    "import socket, sys, sqlalchemy, httpx, redis\nsocket.create_connection(('127.0.0.1', int(sys.argv[1]))).close()\n"
)


class Listener:
    """Accepts connections on a free loopback port and notes when the first of each run arrived."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.arrived: float | None = None
        self.cpu: float | None = None
        self.pid = 0
        self.event = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            conn, _ = self.sock.accept()
            if self.arrived is None:
                self.arrived = time.perf_counter()
                self.cpu = cpu_seconds(self.pid)
                self.event.set()
            conn.close()

    def time_to_first(self, command: list[str], env: dict[str, str]) -> tuple[float, float]:
        """Wall and CPU seconds from the spawn to the first connection."""
        self.arrived = self.cpu = None
        self.event.clear()
        start = time.perf_counter()
        proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.pid = proc.pid
        if not self.event.wait(60):
            proc.kill()
            raise SystemExit(f"{command[:3]} never connected")
        proc.wait(60)
        assert self.arrived is not None and self.cpu is not None
        return self.arrived - start, self.cpu


def cpu_seconds(pid: int) -> float:
    """The CPU time of every thread of `pid` so far (the first field of each one's schedstat, in ns)."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            total += int((task / "schedstat").read_text().split()[0])
        except (OSError, IndexError, ValueError):  # a thread that has just ended
            continue
    return total / 1e9


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=9)
    parser.add_argument("--db", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--hide", action="append", default=[], metavar="MODULE", help="as if not installed")
    parser.add_argument("--before", type=Path, help="a checkout of an older version, to compare `watcher poll` with")
    args = parser.parse_args(argv)
    listener = Listener()
    watcher = str(Path(sys.executable).with_name("watcher"))
    with state(args.db, "poll-start") as installation, tempfile.TemporaryDirectory() as hidden:
        env = {**os.environ, **installation.env}
        for name in args.hide:
            (Path(hidden) / name).mkdir()
            (Path(hidden) / name / "__init__.py").write_text(f"raise ImportError('{name} is hidden')\n")
        if args.hide:
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [hidden, env.get("PYTHONPATH")]))
        url = f"http://127.0.0.1:{listener.port}"
        add = [watcher, "registry", "add", NAME, "--provider", "oci", "--url", url, "--no-verify"]
        subprocess.run(add, env=env, check=True, capture_output=True)
        pairs = {
            "python -c pass, then connect": [sys.executable, "-c", f"import socket, sys; {FLOOR.splitlines()[1]}"],
            "import sqlalchemy, httpx, redis, then connect": [sys.executable, "-c", FLOOR],
            "watcher poll": [watcher, "poll", NAME],
        }
        envs = {label: env for label in pairs}
        if args.before is not None:
            pairs["watcher poll, --before"] = [watcher, "poll", NAME]
            older = os.pathsep.join(filter(None, [str(args.before.resolve()), env.get("PYTHONPATH")]))
            envs["watcher poll, --before"] = {**env, "PYTHONPATH": older}
        times: dict[str, list[float]] = {label: [] for label in pairs}
        cpus: dict[str, list[float]] = {label: [] for label in pairs}
        for _ in range(args.runs):
            for label, command in pairs.items():
                extra = [str(listener.port)] if command[0] == sys.executable else []
                wall, cpu = listener.time_to_first(command + extra, envs[label])
                times[label].append(wall)
                cpus[label].append(cpu)
    load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    shown = f", hidden: {', '.join(args.hide)}" if args.hide else ""
    shown += f", --before {args.before}" if args.before else ""
    print(f"spawn to first connection, {args.runs} runs each in turn, {args.db}{shown}, load {load}")
    floors = "import sqlalchemy, httpx, redis, then connect"
    floor, cpu_floor = statistics.median(times[floors]), statistics.median(cpus[floors])
    for label, seconds in times.items():
        median, cpu = statistics.median(seconds), statistics.median(cpus[label])
        print(
            f"{label:<46} wall median {median:.3f} s  min {min(seconds):.3f} s  ÷ floor {median / floor:.2f}  "
            f"CPU median {cpu:.3f} s  min {min(cpus[label]):.3f} s  ÷ floor {cpu / cpu_floor:.2f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
