"""Process-wide settings, read from WATCHER_* environment variables and a `.env` file."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """The contract's environment variables; anything unset falls back to embedded defaults."""

    model_config = SettingsConfigDict(env_prefix="WATCHER_", env_file=".env", extra="ignore")

    data_dir: Path = Path(".watcher")
    database_url: str = ""
    redis_url: str = "embedded"
    events_stream: str = "watcher:events"
    events_maxlen: int = 100_000
    secret_key: str = ""

    @property
    def effective_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'watcher.db'}"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
