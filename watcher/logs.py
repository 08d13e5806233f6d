"""Logging for the long-running processes (`watcher run`, `watcher serve`, `celery -A watcher.tasks worker`).

One line per poll and one per failure at INFO; the chatter of a healthy worker (the beat's tick, the relay
sweep, Celery's per-task "received"/"succeeded" lines, httpx's line per HTTP request, uvicorn's access
log) only at DEBUG. `WATCHER_LOG_FORMAT=json` writes one JSON object per line for log pipelines: `time`,
`level`, `logger`, `message`, and the structured fields a line carries (`extra={"fields": {...}}`) as keys.

A line's message often quotes outside text: a registry's error message, a repository or tag name, a header,
a URL. So the formatters, not each call site, escape it: CR, LF and every other control character (C0, DEL,
C1, the Unicode line and paragraph separators, a lone surrogate) is written as `\\r`, `\\n`, `\\xNN` or
`\\uNNNN`, and can never start a line of its own. In text, a traceback (DEBUG, or an unexpected failure)
goes on continuation lines that each start with whitespace; in JSON, the message and every text field (a
failed poll's `error`) are escaped the same way before the encoder escapes them again, so a line stays one
object and a viewer that shows a field's decoded value still shows one line.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import UTC, datetime
from typing import Any

from watcher.errors import InputError

FORMATS = ("text", "json")
TEXT_FORMAT = "[%(asctime)s %(levelname)s %(name)s] %(message)s"
#: loggers whose INFO lines are per tick, per task or per request: shown only at DEBUG
CHATTY = (
    "httpx",
    "httpcore",
    "celery.beat",
    "celery.worker.strategy",
    "celery.app.trace",
    "uvicorn.access",
    "alembic",  # "Context impl ..." and "setup plugin ..." (7 lines), once per process that migrates
)
#: the JSON keys a line's own fields may not take
RESERVED = frozenset({"time", "level", "logger", "message"})
#: a webhook URL with the secret as its last segment (Docker Hub, Quay): `/hooks/v1/NAME/SECRET` or
#: `/hooks/v1/workspaces/WORKSPACE/NAME/SECRET` (`/hooks/v1/workspaces/WORKSPACE/NAME` holds none); what
#: follows NAME/ is hidden, however many segments
_SEGMENT = r"[^/\s?#\"']+"
_PATH_SECRET = re.compile(
    rf"(/hooks/v1/(?:workspaces/{_SEGMENT}/{_SEGMENT}|(?!workspaces/{_SEGMENT}/){_SEGMENT})/)[^\s?#\"']+"
)
#: what may not be written raw into a line: C0 controls, DEL, C1 controls (NEL among them), the Unicode
#: line and paragraph separators, and lone surrogates (which a UTF-8 stream cannot even encode)
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")
_NAMED = {"\r": "\\r", "\n": "\\n", "\t": "\\t"}
#: how a continuation line of a traceback starts: never where a line of its own would
CONTINUATION = "    "


def escape(text: str) -> str:
    """`text` with every control character escaped, so that it fits on one line and forges none."""
    return _UNSAFE.sub(_escaped, text)


def _escaped(match: re.Match[str]) -> str:
    char = match.group()
    code = ord(char)
    return _NAMED.get(char) or (f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")


def _indented(block: str) -> str:
    """A multi-line block (a traceback) as continuation lines: each escaped, each starting with whitespace."""
    return "\n".join(CONTINUATION + escape(line) for line in block.split("\n"))


class TextFormatter(logging.Formatter):
    """`[time LEVEL logger] message`, the message escaped; a traceback on indented continuation lines."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def formatMessage(self, record: logging.LogRecord) -> str:
        raw = record.message
        record.message = escape(raw)
        try:
            return super().formatMessage(record)
        finally:
            record.message = raw

    def formatException(self, ei: Any) -> str:
        return _indented(super().formatException(ei))

    def formatStack(self, stack_info: str) -> str:
        return _indented(super().formatStack(stack_info))


class PathSecrets(logging.Filter):
    """Every line shows a webhook URL's path secret as `…` (uvicorn's access log, a failed request's line)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = _PATH_SECRET.sub(r"\1…", record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(_PATH_SECRET.sub(r"\1…", a) if isinstance(a, str) else a for a in record.args)
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": escape(record.getMessage()),  # as the text format shows it
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            entry.update({k: escape(v) if isinstance(v, str) else v for k, v in fields.items() if k not in RESERVED})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def level_of(loglevel: str | int) -> int:
    """`INFO`, `debug`, `20`... as a logging level; anything else is a one-line error."""
    if isinstance(loglevel, int):
        return loglevel
    text = loglevel.strip().upper()
    level = int(text) if text.isdigit() else logging.getLevelName(text)
    if not isinstance(level, int):
        raise InputError(f"log level {loglevel!r} is not one of DEBUG, INFO, WARNING, ERROR, CRITICAL")
    return level


def format_of(name: str | None = None) -> str:
    from watcher.settings import get_settings

    chosen = (name or get_settings().log_format).strip().lower()
    if chosen not in FORMATS:
        raise InputError(f"WATCHER_LOG_FORMAT {chosen!r} is not one of: {', '.join(FORMATS)}")
    return chosen


def setup(loglevel: str | int = "INFO", log_format: str | None = None) -> None:
    """Send every logger's lines to stderr, in the chosen format, at `loglevel` (chatty loggers at DEBUG only)."""
    level = level_of(loglevel)
    handler = logging.StreamHandler(sys.__stderr__)  # the real stderr, even if a worker redirected sys.stderr
    handler.setFormatter(JsonFormatter() if format_of(log_format) == "json" else TextFormatter())
    handler.addFilter(PathSecrets())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    setup_chatty(level)
    logging.captureWarnings(True)


def setup_chatty(level: int) -> None:
    """The chatty loggers at `level` when that is DEBUG, otherwise at WARNING at least."""
    for name in CHATTY:
        logging.getLogger(name).setLevel(level if level <= logging.DEBUG else max(level, logging.WARNING))


def celery_notices_as_json() -> None:
    """Celery writes a few notices ("worker: Warm shutdown (MainProcess)") straight to stdout from its signal
    handlers; make them JSON lines too (written as directly as Celery does: no logging lock in a handler)."""
    from celery.apps import worker

    def say(message: str, f: Any = sys.__stderr__) -> None:
        entry = {
            "time": datetime.now(UTC).isoformat(timespec="milliseconds"),
            "level": "INFO",
            "logger": "celery.apps.worker",
            "message": escape(str(message).strip()),
        }
        print(json.dumps(entry), file=f, flush=True)

    worker.safe_say = say


def uvicorn_options(loglevel: str | int = "INFO") -> dict[str, Any]:
    """What `uvicorn.run`/`uvicorn.Config` needs to leave logging as `setup` made it."""
    level = level_of(loglevel)
    return {"log_config": None, "log_level": level, "access_log": level <= logging.DEBUG}
