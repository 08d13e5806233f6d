"""Process-wide settings, read from WATCHER_* environment variables and a `.env` file.

pydantic-settings is the authority on what a setting may be (and says what is wrong with one), but
importing it costs a quick command a good part of its time. So the common case is read here: settings
given only as environment variables, each in its plain form (an integer as digits). Anything else — a
`.env` file in the working directory, an integer written another way, one setting under two spellings —
goes to pydantic-settings, which reads it exactly as before. Both give the same `Settings`
(tests/test_settings.py compares them).
"""

from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from watcher.errors import InputError

ENV_PREFIX = "WATCHER_"
ENV_FILE = ".env"
_PLAIN_INT = re.compile(r"-?[0-9]+")


class SettingsError(InputError):
    """A WATCHER_* variable is not of its setting's type: one line naming it, never echoing its value."""


@dataclass(frozen=True)
class Settings:
    """The contract's environment variables; anything unset falls back to embedded defaults. Every field
    has a default, whose type is the setting's (str, int, bool or Path)."""

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
    #: more host names the HTTP side answers to, besides those of `public_url` and `listen` (comma-separated;
    #: `.example.com` allows every name under it, `*` any); other `Host` headers get 400 (DNS rebinding)
    allowed_hosts: str = ""
    #: when set, `/metrics` also takes `Authorization: Bearer` this token (an operator's token always does)
    metrics_token: str = ""
    #: `/metrics` names every workspace's registries: it is open to anyone only when this says so
    metrics_open: bool = False

    #: the workspace the command line acts in (`--workspace` overrides it)
    workspace: str = "default"
    #: each workspace's events go to `{events_stream}:{workspace}` instead of one stream for all, so that a
    #: team's consumer can be given a Redis user that reads its own stream and nothing else
    stream_per_workspace: bool = False

    #: poll runs older than this many days are pruned
    poll_history_days: int = 30
    #: a poll's claim on its registry, renewed while it runs: a crashed poll's claim lapses this soon
    poll_lease_seconds: int = 15
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
    #: where Google's OIDC signing certificates are fetched (`gcr-pubsub` webhooks; tests point it at a fake)
    google_certs_url: str = "https://www.googleapis.com/oauth2/v1/certs"
    #: deliveries to subscriptions in flight at once, deployment-wide (each subscription has at most one)
    delivery_concurrency: int = 100
    #: the longest one delivery attempt may take (connect, send, answer), in seconds
    delivery_timeout_seconds: int = 15
    #: the first retry's backoff bound, in milliseconds (doubling per attempt up to an hour, full jitter)
    delivery_backoff_ms: int = 1000

    @property
    def effective_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'watcher.db'}"


#: each setting's name and its default (whose type is the setting's)
DEFAULTS: dict[str, Any] = {f.name: f.default for f in dataclasses.fields(Settings)}


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return plain_settings() or validated_settings()


def plain_settings() -> Settings | None:
    """The settings when the environment gives each one plainly (and there is no `.env` file); else None."""
    if Path(ENV_FILE).is_file():
        return None
    given: dict[str, str] = {}
    for key, value in os.environ.items():
        name = key.lower().removeprefix(ENV_PREFIX.lower())
        if name == key.lower() or name not in DEFAULTS:
            continue  # not ours (WATCHER_DEBUG is read where it is used)
        if name in given:
            return None  # two spellings of one setting: which wins is pydantic-settings' rule
        given[name] = value
    values: dict[str, Any] = {}
    for name, value in given.items():
        default = DEFAULTS[name]
        if isinstance(default, bool):
            return None  # "true", "1", "yes": pydantic's to read
        if isinstance(default, Path):
            values[name] = Path(value)
        elif isinstance(default, int):
            if not _PLAIN_INT.fullmatch(value):
                return None  # " 42 ", "1_000", or not a number at all: pydantic's to accept or to explain
            values[name] = int(value)
        else:
            values[name] = value
    return Settings(**values)


def validated_settings() -> Settings:
    """The settings as pydantic-settings reads them (`.env` included), or SettingsError naming the first
    invalid one."""
    from pydantic import ValidationError, create_model
    from pydantic_settings import BaseSettings, SettingsConfigDict

    class Base(BaseSettings):
        model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, env_file=ENV_FILE, extra="ignore")

    fields: dict[str, Any] = {name: (type(default), default) for name, default in DEFAULTS.items()}
    fields["data_dir"] = (Path, DEFAULTS["data_dir"])  # not PosixPath: pydantic's Path accepts any str
    model = create_model("Settings", __base__=Base, **fields)
    try:
        read = model()
    except ValidationError as exc:
        error = exc.errors()[0]
        field = ".".join(str(part) for part in error["loc"]) or "?"
        raise SettingsError(f"WATCHER_{field.upper()} is not valid: {error['msg']}: fix or unset it") from None
    return Settings(**read.model_dump())
