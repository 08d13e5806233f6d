"""Any failure of a command as one line for a person: what went wrong and what to do, secrets masked.

The CLI's boundary (`cli.common.friendly`, `cli.main.WatcherGroup`) hands every exception here. Watcher's own errors
already are one line (an invalid `WATCHER_*` setting among them). The libraries underneath fail in their
own words, so the ones a configuration can provoke are translated: a database URL SQLAlchemy cannot use,
Redis that does not answer, a path the process cannot write. Anything else is an internal error, still one
line (`WATCHER_DEBUG=1` shows the traceback). No line ever carries a URL's password.

Redis's client and SQLAlchemy are imported only to check a configured URL: a failure can only be one of
their errors when something has imported them, so `--help` loads neither, and a command that never
touches Redis never loads its client.
"""

from __future__ import annotations

import os
import re
import sys

from watcher.errors import InputError, WatcherError
from watcher.settings import Settings, SettingsError, get_settings

DEBUG_ENV = "WATCHER_DEBUG"
DATABASE_USAGE = "use sqlite:///PATH or postgresql://USER@HOST:PORT/DATABASE"
REDIS_USAGE = "use embedded, redis://HOST:PORT/DB, rediss://HOST:PORT/DB or unix:///PATH"
SUPPORTED_DATABASES = ("sqlite", "postgresql")
_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<user>[^/@\s:]*):(?P<password>[^/@\s]*)@")


def debugging() -> bool:
    return os.environ.get(DEBUG_ENV, "").strip().lower() in ("1", "true", "yes")


def mask(text: str) -> str:
    """`scheme://user:password@host` becomes `scheme://user:***@host`; the secret key never appears."""
    masked = _USERINFO.sub(lambda m: f"{m['scheme']}{m['user']}:***@", text)
    for secret in _configured_secrets():
        masked = masked.replace(secret, "***")
    return masked


def _configured_secrets() -> list[str]:
    try:
        settings = get_settings()
    except SettingsError:
        return []
    keys = [settings.secret_key, *re.split(r"[,\n]", settings.secret_key_fallbacks)]
    return [k.strip() for k in keys if len(k.strip()) >= 8]


def check_configuration(settings: Settings) -> None:
    """The database and Redis URLs are usable as URLs (no connection is made): else one InputError. The
    default database's URL is ours, always usable, so the quick commands need not import SQLAlchemy for it."""
    if settings.database_url or "?" in str(settings.data_dir):
        _check_database_url(settings.effective_database_url)
    if settings.redis_url != "embedded":
        import redis.connection

        try:
            redis.connection.parse_url(settings.redis_url)
        except ValueError as exc:
            reason = str(exc).split(" as ")[0].rstrip(".")
            raise InputError(f"WATCHER_REDIS_URL {mask(settings.redis_url)!r}: {reason}: {REDIS_USAGE}") from None


def _check_database_url(url: str) -> None:
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
        backend, port = parsed.get_backend_name(), parsed.port
    except (ArgumentError, ValueError):
        raise InputError(f"WATCHER_DATABASE_URL {mask(url)!r} is not a valid URL: {DATABASE_USAGE}") from None
    if backend not in SUPPORTED_DATABASES:
        raise InputError(f"WATCHER_DATABASE_URL: {backend!r} databases are not supported: {DATABASE_USAGE}")
    if port is not None and not 1 <= port <= 65535:
        raise InputError(f"WATCHER_DATABASE_URL: port {port} is out of range: use a port from 1 to 65535")


def one_line(exc: BaseException) -> str:
    """The line `watcher: ...` prints for this failure (without the prefix), secrets masked."""
    return mask(" ".join(_describe(exc).split()))


def _describe(exc: BaseException) -> str:
    if isinstance(exc, WatcherError):
        return str(exc)
    redis = sys.modules.get("redis")  # not imported: nothing failed in it
    if redis is not None and isinstance(exc, redis.RedisError):
        where = _redis_where()
        if isinstance(exc, redis.ConnectionError | redis.TimeoutError):
            return f"cannot reach Redis{where}: {_first_line(exc)}: is it running? (WATCHER_REDIS_URL)"
        return f"Redis{where} refused a command: {_first_line(exc)}"
    sql = sys.modules.get("sqlalchemy.exc")
    if sql is not None and isinstance(exc, sql.SQLAlchemyError):
        if isinstance(exc, sql.ArgumentError):
            return f"WATCHER_DATABASE_URL is not usable: {_first_line(exc)}: {DATABASE_USAGE}"
        cause = (exc.orig or exc) if isinstance(exc, sql.DBAPIError) else exc
        return f"the state database failed: {_first_line(cause)}"
    if isinstance(exc, OSError) and exc.filename:
        return f"cannot use {exc.filename}: {exc.strerror or _first_line(exc)}{_path_hint(str(exc.filename))}"
    return f"internal error: {type(exc).__name__}: {_first_line(exc)} (set {DEBUG_ENV}=1 for the traceback)"


def _redis_where() -> str:
    try:
        url = get_settings().redis_url
    except SettingsError:
        return ""
    return "" if url == "embedded" else f" at {url}"


def _path_hint(filename: str) -> str:
    """Where the failing path is the watcher's own state, say which settings move it."""
    try:
        settings = get_settings()
    except SettingsError:
        return ""
    own = (str(settings.data_dir), settings.effective_database_url)
    if any(filename in place or place.endswith(filename) for place in own if place):
        return " (WATCHER_DATA_DIR and WATCHER_DATABASE_URL choose where the watcher writes)"
    return ""


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return (lines[0] if lines else type(exc).__name__)[:300]
