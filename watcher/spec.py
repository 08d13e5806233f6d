"""A registry as the user describes it: validated once, used by the CLI, `registry apply` and pollers."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from watcher.errors import InputError

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
_DURATION = re.compile(r"^(\d+)\s*([smhd]?)$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
MIN_INTERVAL_SECONDS = 1


@dataclass
class RegistrySpec:
    name: str
    provider: str
    url: str
    credentials: dict[str, str] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)
    interval_seconds: int = 300
    emit_existing: bool = False


def parse_interval(text: str) -> int:
    """`30s`, `5m`, `1h`, `1d` or plain seconds."""
    match = _DURATION.match(str(text).strip().lower())
    if not match:
        raise InputError(f"interval {text!r} is not a duration: use e.g. 30s, 5m, 1h or 1d")
    seconds = int(match.group(1)) * _UNITS[match.group(2)]
    if seconds < MIN_INTERVAL_SECONDS:
        raise InputError(f"interval {text!r} is too short: use at least {MIN_INTERVAL_SECONDS}s")
    return seconds


def parse_duration(text: str, option: str) -> int:
    """A positive duration (`30s`, `5m`, `12h`, `30d`) in seconds, for options other than the interval."""
    match = _DURATION.match(str(text).strip().lower())
    seconds = int(match.group(1)) * _UNITS[match.group(2)] if match else 0
    if not 0 < seconds <= 3650 * 86400:
        raise InputError(f"{option} {text!r} is not a duration: use e.g. 30s, 5m, 12h or 30d (at most 3650d)")
    return seconds


def format_interval(seconds: int) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def check_name(name: str) -> str:
    if not NAME.match(name or ""):
        raise InputError(f"registry name {name!r} is not valid: use letters, digits, '.', '_' or '-' (at most 63)")
    return name


def check_url(url: str, name: str) -> str:
    parts = urlsplit(url or "")
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise InputError(f"registry {name!r}: URL {url!r} is not valid: use https://HOST[:PORT]")
    if parts.path.strip("/") or parts.query or parts.fragment:
        raise InputError(f"registry {name!r}: URL {url!r} must name only the host: use {parts.scheme}://{parts.netloc}")
    return f"{parts.scheme}://{parts.netloc}"
