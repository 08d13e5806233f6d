"""Process-wide settings, read from WATCHER_* environment variables and a `.env` file."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from watcher.errors import InputError


class SettingsError(InputError):
    """A WATCHER_* variable is not of its setting's type: one line naming it, never echoing its value."""


class Settings(BaseSettings):
    """The contract's environment variables; anything unset falls back to embedded defaults."""

    model_config = SettingsConfigDict(env_prefix="WATCHER_", env_file=".env", extra="ignore")

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
    #: the address registries reach this installation at (webhook URLs); default `http://` + `listen`
    public_url: str = ""
    #: when set, `/metrics` needs `Authorization: Bearer` this token
    metrics_token: str = ""

    #: poll runs older than this many days are pruned
    poll_history_days: int = 30
    #: a poll's claim on its registry, renewed while it runs: a crashed poll's claim lapses this soon
    poll_lease_seconds: int = 60
    #: how long-running processes log: `text`, or `json` (one object per line, for log pipelines)
    log_format: str = "text"
    #: a request's claim on one of its host's deployment-wide slots, renewed while it runs: a crashed
    #: process's slots lapse this soon
    limit_lease_seconds: int = 30
    #: a registry whose catalog names more repositories than this is listed in chunks of this many, each
    #: by any free worker of `watcher run` (`watcher poll` lists every chunk itself); 0: never split
    fanout_repositories: int = 50
    #: the shortest `--interval` accepted (tests lower it; registrations cannot)
    min_interval_seconds: int = 10

    @property
    def effective_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'watcher.db'}"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    try:
        return Settings()
    except ValidationError as exc:
        error = exc.errors()[0]
        field = ".".join(str(part) for part in error["loc"]) or "?"
        raise SettingsError(f"WATCHER_{field.upper()} is not valid: {error['msg']}: fix or unset it") from None
