"""The one exception tree of watcher; the CLI turns each leaf into one clear line.

WatcherError
├── InputError              bad input from the user: fix the command or the file
│   ├── ConflictError       it exists already (a registry or token name)
│   └── QuotaError          a workspace's quota refuses the registration
├── NotFoundError           no registry of that name
├── StateError              the database or the event stream cannot be reached
└── RegistryError           talking to a registry failed; nothing was saved
    ├── UnreachableError    DNS, refused connection, timeout, dropped connection
    ├── TLSError            certificate or handshake problem
    ├── AuthError           credentials refused (401 after a fresh token)
    ├── PermissionError_    credentials accepted, action denied (403)
    ├── ScopeError          wrong project, namespace, region or repository (404)
    ├── RateLimitedError    429 after backing off as told
    └── BadResponseError    5xx, malformed body, truncated listing
"""

from __future__ import annotations


class WatcherError(Exception):
    """Base of every error watcher expects; the message is one line meant for a person. `field` names the
    input at fault where one is (the API and the console show the message next to it)."""

    field: str | None = None


class InputError(WatcherError):
    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class ConflictError(InputError):
    pass


class QuotaError(InputError):
    """A registration a workspace's quota refuses (`watcher.registrations.workspaces.admit`): nothing was saved."""


class NotFoundError(WatcherError):
    pass


class StateError(WatcherError):
    pass


class RegistryError(WatcherError):
    """A failure talking to a registry. `registry` is filled in by whoever knows the name."""

    cause = "registry error"

    def __init__(self, message: str, *, registry: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.registry = registry

    def __str__(self) -> str:
        where = f"registry {self.registry!r}: " if self.registry else ""
        return f"{where}{self.cause}: {self.message}"


class UnreachableError(RegistryError):
    cause = "unreachable"


class TLSError(RegistryError):
    cause = "TLS error"


class AuthError(RegistryError):
    cause = "credentials refused"


class PermissionError_(RegistryError):
    cause = "permission missing"


class ScopeError(RegistryError):
    cause = "not found"


class RateLimitedError(RegistryError):
    cause = "rate limited"


class BadResponseError(RegistryError):
    cause = "bad response"
