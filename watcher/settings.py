"""Process-wide settings, read from WATCHER_* environment variables and a `.env` file.

Every command reads them first, so they are read by hand rather than through pydantic-settings, whose
import cost a quick command more than everything else it did. The rules are pydantic-settings' as the
watcher used them: names match case-insensitively, the environment wins over `.env` (in the working
directory), unknown names are ignored, and a value that is not of the field's type is one SettingsError
naming the variable (never echoing its value).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from functools import lru_cache
from pathlib import Path
from typing import Any

from watcher.errors import InputError

PREFIX = "watcher_"
ENV_FILE = ".env"


class SettingsError(InputError):
    """A WATCHER_* variable whose value the watcher cannot use."""


@dataclass(frozen=True)
class Settings:
    """The contract's environment variables; anything unset falls back to embedded defaults."""

    data_dir: Path = Path(".watcher")
    database_url: str = ""
    redis_url: str = "embedded"
    events_stream: str = "watcher:events"
    events_maxlen: int = 100_000
    secret_key: str = ""
    #: keys credentials may still be encrypted under during a rotation (comma- or newline-separated)
    secret_key_fallbacks: str = ""

    # -- the network policy for every connection made for a registry (CIDR lists, comma-separated) --
    #: refused on top of the always-refused link-local and cloud-metadata addresses
    deny_networks: str = ""
    #: allowed even when denied (an operator's own metadata-style endpoint, a private registry)
    allow_networks: str = ""

    # -- bounds on what one registry may make a poll read --
    max_body_bytes: int = 32 * 1024 * 1024  # one response body, read as it streams
    max_pages: int = 10_000  # pages of one paginated listing
    max_entries: int = 1_000_000  # repositories of a catalog, tags of a repository

    #: where `watcher run` and `watcher serve` answer HTTP (`off`: `run` serves nothing)
    listen: str = "127.0.0.1:8080"
    #: when set, `/metrics` needs `Authorization: Bearer` this token
    metrics_token: str = ""

    #: poll runs older than this many days are pruned
    poll_history_days: int = 30
    #: a poll's claim on its registry, renewed while it runs: a crashed poll's claim lapses this soon
    poll_lease_seconds: int = 60
    #: the shortest `--interval` accepted (tests lower it; registrations cannot)
    min_interval_seconds: int = 10

    @property
    def effective_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'watcher.db'}"

    @classmethod
    def from_environment(cls, environ: dict[str, str] | None = None, env_file: Path | None = None) -> Settings:
        """The settings `environ` (default: this process's environment) and `env_file` (default: ./.env)
        give; raises SettingsError naming the first variable that is not of its field's type."""
        given = {k.lower(): v for k, v in read_env_file(env_file or Path(ENV_FILE)).items()}
        given |= {k.lower(): v for k, v in (os.environ if environ is None else environ).items()}
        values: dict[str, Any] = {}
        for field in fields(cls):
            raw = given.get(PREFIX + field.name)
            if raw is not None:
                values[field.name] = _converted(field.name, field.type, raw)
        return cls(**values)


def _converted(name: str, kind: object, raw: str) -> Any:
    if kind == "int":
        try:
            return int(raw.strip())
        except ValueError:
            raise SettingsError(
                f"{(PREFIX + name).upper()} is not valid: it should be a whole number (an integer): fix or unset it"
            ) from None
    return Path(raw) if kind == "Path" else raw


def read_env_file(path: Path) -> dict[str, str]:
    """The WATCHER_* variables a `.env` file sets (none when there is no file)."""
    if not path.is_file():
        return {}
    from dotenv import dotenv_values  # only when there is a file to read

    return {k: v for k, v in dotenv_values(path).items() if v is not None and k.lower().startswith(PREFIX)}


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings.from_environment()
