"""Quiet logs: one line per poll and one per failure at INFO, the rest at DEBUG; JSON lines for pipelines."""

from __future__ import annotations

import io
import json
import logging
import re
import socket
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import httpx
import pytest

from tests.conftest import Watcher
from tests.fakes.hostile_registry import HostileRegistry, Recorder
from tests.support.fixtures import RegistryEnv
from tests.support.polls import runs_of, set_row, wait_for
from tests.support.processes import stop_process
from tests.support.registry import free_port
from watcher import logs
from watcher.errors import InputError
from watcher.models import utcnow
from watcher.settings import get_settings

POLL_LINE = re.compile(r"registry 'r1': polled in [\d.]+s: \d+ repositories, \d+ tags, \d+ events, \d+ requests")
#: httpx's line per request, beat's per tick, Celery's per task ("Task watcher.tick[id] received/succeeded")
CHATTER = ("HTTP Request:", "Sending due task", "Task watcher.")


def run_worker(watcher: Watcher, registry: RegistryEnv, unique_repo: str, tmp_path: Path, polls: int) -> str:
    """`watcher run` polling `r1` every second until it has polled `polls` times; its whole log."""
    registry.client.push_image(f"{unique_repo}/app", "v1")
    added = watcher.add_registry("r1", registry.url, "--repository", f"{unique_repo}/*", "--interval", "1s")
    assert added.exit_code == 0, added.output
    log = tmp_path / "run.log"
    with open(log, "wb") as out:
        worker = subprocess.Popen(
            [sys.executable, "-m", "watcher", "run", "--concurrency", "1", "--loglevel", "INFO"],
            env=watcher.env(),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            ok = wait_for(lambda: sum(r.outcome == "ok" for r in runs_of(watcher, "r1")) >= polls, 90)
            assert ok, log.read_text()[-2000:]
            # stopped between polls: a poll cut short by the stop is a shutdown's story, not this test's
            set_row(watcher, "r1", next_poll_at=utcnow() + timedelta(hours=1))
            time.sleep(2)  # a poll dispatched just before finishes
            assert wait_for(lambda: all(r.outcome != "running" for r in runs_of(watcher, "r1")), 30)
        finally:
            stop_process(worker, timeout=30)
    return log.read_text()


def test_a_worker_logs_one_line_per_poll_and_no_chatter(
    watcher: Watcher, registry: RegistryEnv, unique_repo: str, tmp_path: Path
) -> None:
    text = run_worker(watcher, registry, unique_repo, tmp_path, polls=3)
    ok = sum(r.outcome == "ok" for r in runs_of(watcher, "r1"))
    assert len(POLL_LINE.findall(text)) == ok >= 3, text[-3000:]
    assert "(baseline)" in text
    assert not [line for line in text.splitlines() if any(c in line for c in CHATTER)], text[-3000:]
    assert "Traceback" not in text


def test_json_logs_are_one_object_per_line_with_the_polls_fields(
    watcher: Watcher, registry: RegistryEnv, unique_repo: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WATCHER_LOG_FORMAT", "json")
    monkeypatch.setenv("WATCHER_LISTEN", f"127.0.0.1:{free_port()}")  # the HTTP side's lines are JSON too
    get_settings.cache_clear()
    text = run_worker(watcher, registry, unique_repo, tmp_path, polls=2)
    entries = [json.loads(line) for line in text.splitlines() if line.strip()]  # every line parses
    assert any(e["message"].startswith("console and API at http://127.0.0.1:") for e in entries)
    polls = [e for e in entries if e.get("outcome") == "ok"]
    assert len(polls) == sum(r.outcome == "ok" for r in runs_of(watcher, "r1")) >= 2
    first = polls[0]
    assert {k: first[k] for k in ("registry", "repositories", "tags", "events", "baseline")} == {
        "registry": "r1",
        "repositories": 1,
        "tags": 1,
        "events": 0,
        "baseline": True,
    }
    assert first["requests"] > 0 and first["seconds"] > 0
    assert {"time", "level", "logger", "message"} <= first.keys() and first["level"] == "INFO"
    assert POLL_LINE.search(first["message"])


def test_setup_levels_formats_and_one_line_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    stream = io.StringIO()
    monkeypatch.setattr(sys, "__stderr__", stream)
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    try:
        logs.setup("info", "json")
        logging.getLogger("httpx").info("HTTP Request: GET https://r.example.com/v2/ 200 OK")
        logging.getLogger("watcher").info("polled", extra={"fields": {"registry": "r1", "message": "not mine"}})
        logs.setup("DEBUG", "text")
        logging.getLogger("httpx").debug("HTTP Request: GET https://r.example.com/v2/ 200 OK")
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
        logs.setup_chatty(logging.WARNING)
    lines = stream.getvalue().splitlines()
    assert json.loads(lines[0])["registry"] == "r1" and json.loads(lines[0])["message"] == "polled"
    assert len(lines) == 2 and "HTTP Request:" in lines[1]  # httpx's line shows at DEBUG only
    with pytest.raises(InputError, match=r"^WATCHER_LOG_FORMAT 'xml' is not one of: text, json$"):
        logs.setup("INFO", "xml")
    with pytest.raises(InputError, match=r"^log level 'LOUD' is not one of"):
        logs.setup("LOUD")


def test_serve_logs_json_lines_and_no_access_log_at_info(
    watcher: Watcher, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WATCHER_LOG_FORMAT", "json")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    log = tmp_path / "serve.log"
    with open(log, "wb") as out:
        server = subprocess.Popen(
            [sys.executable, "-m", "watcher", "serve", "--listen", f"127.0.0.1:{port}", "--loglevel", "INFO"],
            env=watcher.env(),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        try:

            def answers() -> bool:
                try:
                    return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200
                except httpx.HTTPError:
                    return False

            assert wait_for(answers, 60), log.read_text()[-2000:]
        finally:
            stop_process(server, timeout=20)
    entries = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    assert any(e["logger"] == "uvicorn.error" and "startup complete" in e["message"] for e in entries), entries
    assert not [e for e in entries if "/healthz" in e["message"]]  # the access log is for DEBUG


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_a_registry_error_message_forges_no_log_line(
    watcher: Watcher, monkeypatch: pytest.MonkeyPatch, log_format: str
) -> None:
    """A registry answers a listing with a CR/LF-laden `errors[].message`: the worker's poll task logs its one
    failure line, the message escaped inside it, and nothing else."""
    from watcher.tasks import jobs  # not at collection: the Celery app takes its key prefix from the first import

    stream = io.StringIO()
    monkeypatch.setattr(sys, "__stderr__", stream)
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    with Recorder() as recorder, HostileRegistry(recorder) as hostile:
        added = watcher.add_registry("h", hostile.url, "--repository", "team/app")
        assert added.exit_code == 0, added.output
        hostile.mode = "forged_lines"
        try:
            logs.setup("INFO", log_format)
            jobs.poll_registry("h")  # the Celery task's body, as a worker runs it
        finally:
            root.handlers[:] = saved[0]
            root.setLevel(saved[1])
            logs.setup_chatty(logging.WARNING)
    text = stream.getvalue()
    lines = text.splitlines()  # every line break Python knows: CR, LF, VT, FF, NEL, U+2028...
    assert len(lines) == 1, text
    assert "\x1b" not in text and "forged after NEL" in lines[0]
    if log_format == "json":
        entry = json.loads(lines[0])
        assert entry["registry"] == "h" and entry["outcome"] == "failed"
        assert entry["error"].startswith("registry 'h': permission missing") and len(entry["error"].splitlines()) == 1
        message = entry["message"]
    else:
        message = lines[0]
    assert "DENIED: denied\\r\\n[2026-01-01 00:00:00,000 INFO watcher]" in message, message
    assert "\\x0bforged after a vertical tab\\x85forged after NEL\\u2028" in message


def test_escape_leaves_one_line_and_tracebacks_indented(monkeypatch: pytest.MonkeyPatch) -> None:
    assert logs.escape("a\r\nb\tc\x00\x7f\x9f\u2028\ud800é/ü") == "a\\r\\nb\\tc\\x00\\x7f\\x9f\\u2028\\ud800é/ü"
    formatter = logs.TextFormatter()
    try:
        raise ValueError("bad\n[2026-01-01 00:00:00,000 INFO watcher] forged")
    except ValueError:
        record = logging.LogRecord("watcher", logging.ERROR, __file__, 1, "failed: %s", ("x\ny",), sys.exc_info())
    lines = formatter.format(record).split("\n")
    assert lines[0].endswith("] failed: x\\ny")
    assert len(lines) > 2 and all(line.startswith(logs.CONTINUATION) for line in lines[1:])
