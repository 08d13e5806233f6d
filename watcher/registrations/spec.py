"""A registry as the user describes it, and the bounds every value of it must keep.

Validated once (by `watcher.registrations.forms.build_spec`), used by the CLI, `registry apply` and the pollers. The
bounds are here so that no registration can make the scheduler or a poll misbehave: an interval of
3,000,000 days once overflowed the beat tick, and `nan` once reached the rate limiter.
"""

from __future__ import annotations

import ipaddress
import math
import re
import string
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from watcher.errors import InputError
from watcher.registrations.keys import registry_key
from watcher.schema import DEFAULT_WORKSPACE
from watcher.settings import get_settings

NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")
_DURATION = re.compile(r"^(\d{1,12})\s*([smhd]?)$")  # 12 digits: never a 5,000-digit int() to parse
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
_HOST = re.compile(r"^(?:[A-Za-z0-9_](?:[A-Za-z0-9_.-]{0,251}[A-Za-z0-9_])?|[0-9A-Fa-f:.]*:[0-9A-Fa-f:.]*)$")

MAX_INTERVAL_SECONDS = 30 * 86400
DEFAULT_INTERVAL = "5m"
MIN_POLL_TIMEOUT_SECONDS = 10
MAX_POLL_TIMEOUT_SECONDS = 24 * 3600
DEFAULT_POLL_TIMEOUT_SECONDS = 600
CONCURRENCY_RANGE = (1, 64)  # requests in flight to one registry
RATE_LIMIT_RANGE = (0.1, 10_000.0)  # requests per second to one registry
MAX_URL_LENGTH = 2048


@dataclass
class RegistrySpec:
    name: str
    provider: str
    url: str
    credentials: dict[str, str] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)
    interval_seconds: int = 300
    emit_existing: bool = False
    #: the workspace that owns the registry (its name is unique only there)
    workspace: str = DEFAULT_WORKSPACE

    @property
    def key(self) -> str:
        """The registry's key across the deployment (`watcher.registrations.keys`)."""
        return registry_key(self.workspace, self.name)

    def poll_timeout(self) -> float:
        """The `poll_timeout` option in seconds (the default without one); a stored value that is not a
        number of seconds fails the poll that reads it."""
        value = self.options.get("poll_timeout")
        if value is None:
            return DEFAULT_POLL_TIMEOUT_SECONDS
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
            raise InputError(
                f"registry {self.name!r}: option poll_timeout {value!r} is not a number of seconds: "
                "set it with `--poll-timeout` (`watcher registry apply`)"
            )
        return float(value)


def min_interval_seconds() -> int:
    """The shortest interval accepted: 10 s, lowered only by tests (`WATCHER_MIN_INTERVAL_SECONDS`)."""
    return max(1, get_settings().min_interval_seconds)


def parse_duration(value: object, option: str, low: int, high: int) -> int:
    """`30s`, `5m`, `1h`, `1d` or whole seconds (text or an integer), within [low, high] seconds."""
    bounds = f"use a duration from {format_interval(low)} to {format_interval(high)}, e.g. 30s, 5m, 1h or 1d"
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise InputError(f"{option} must be a duration: {bounds}")
    match = _DURATION.match(str(value).strip().lower())
    if not match:
        raise InputError(f"{option} {_shown(value)} is not a duration: {bounds}")
    seconds = int(match.group(1)) * _UNITS[match.group(2)]
    if not low <= seconds <= high:
        raise InputError(f"{option} {_shown(value)} is out of range: {bounds}")
    return seconds


def parse_interval(value: object) -> int:
    return parse_duration(value, "--interval", min_interval_seconds(), MAX_INTERVAL_SECONDS)


def parse_poll_timeout(value: object) -> int:
    return parse_duration(value, "--poll-timeout", MIN_POLL_TIMEOUT_SECONDS, MAX_POLL_TIMEOUT_SECONDS)


def bounded_number(value: object, option: str, kind: type[int] | type[float], low: float, high: float) -> int | float:
    """A finite number of `kind` within [low, high]; booleans, nan, inf and 1e400 are refused."""
    what = "a whole number" if kind is int else "a number"
    advice = f"{option} must be {what} from {_number(low)} to {_number(high)}"
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise InputError(f"{advice}, not {type(value).__name__}")
    try:
        number = kind(value.strip() if isinstance(value, str) else value)
    except (ValueError, OverflowError):
        raise InputError(f"{advice}, not {_shown(value)}") from None
    if kind is int and isinstance(value, float) and not value.is_integer():
        raise InputError(f"{advice}, not {_shown(value)}")
    if not math.isfinite(number) or not low <= number <= high:
        raise InputError(f"{advice}, not {_shown(value)}")
    return number


def format_interval(seconds: int) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def check_name(name: object) -> str:
    if not isinstance(name, str) or not NAME.match(name):
        raise InputError(
            f"registry name {_shown(name)} is not valid: use lower-case letters, digits, '.', '_' or '-', "
            "starting with a letter or digit (at most 63)",
            field="name",
        )
    return name


def check_url(url: object, name: str) -> str:
    """`scheme://host[:port]` only; credentials in the URL are refused, and never echoed back."""
    try:
        return _checked_url(url, name)
    except InputError as exc:
        exc.field = "url"
        raise


def _checked_url(url: object, name: str) -> str:
    usage = "use https://HOST[:PORT]"
    if not isinstance(url, str) or not url or len(url) > MAX_URL_LENGTH:
        raise InputError(f"registry {name!r}: --url must be a URL of at most {MAX_URL_LENGTH} characters: {usage}")
    authority = re.split(r"[/?#\\]", url.split("://", 1)[-1], maxsplit=1)[0]
    if "@" in authority:  # userinfo: refused before anything could echo the URL back
        raise InputError(
            f"registry {name!r}: the URL must not contain credentials: "
            "give them with --username and --password (a value, @FILE or - for stdin)"
        )
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:  # a bracket left open, a port that is not a number or over 65535
        raise InputError(f"registry {name!r}: URL {_shown(url)} is not valid: {usage}") from None
    if parts.scheme.lower() not in ("http", "https") or not _HOST.match(parts.hostname or ""):
        raise InputError(f"registry {name!r}: URL {_shown(url)} is not valid: {usage}")
    address_problem = _not_an_address(parts.hostname or "")
    if address_problem:
        raise InputError(f"registry {name!r}: URL {_shown(url)} is not valid: {address_problem}")
    if parts.path.strip("/") or parts.query or parts.fragment:
        raise InputError(
            f"registry {name!r}: URL {_shown(url)} must name only the host: use {parts.scheme}://{parts.netloc}"
        )
    if port == 0 or (parts.netloc.endswith(":") and port is None):
        raise InputError(f"registry {name!r}: URL {_shown(url)} has no valid port: use a port from 1 to 65535")
    return f"{parts.scheme.lower()}://{parts.netloc}"


def _not_an_address(host: str) -> str | None:
    """Why a host that reads as an IP address is not one, if it is not. A name whose last label is a number
    is an IPv4 address to a browser and to `inet_aton` (`0177.0.0.2` is 127.0.0.2 there, and refused by
    the HTTP client): only the four decimal numbers of RFC 3986 are accepted, so no spelling of an address
    means one thing here and another to the resolver."""
    last = host.rstrip(".").rpartition(".")[2].lower()
    if ":" in host:
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            return f"{host!r} is not an IPv6 address"
    elif last.isdigit() or (last.startswith("0x") and all(c in string.hexdigits for c in last[2:])):
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            return f"{host!r} is not an IPv4 address: write one as four decimal numbers without leading zeros"
    return None


def _number(value: float) -> str:
    return f"{value:,.0f}" if float(value).is_integer() else str(value)


def _shown(value: object, limit: int = 60) -> str:
    """A value as it may appear in an error: repr, cut short."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
