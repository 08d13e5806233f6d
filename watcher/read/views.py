"""How a registry is shown (`status`, `registry list/show`, the API), built from the read model's rows:
the assembly apart from the queries (`watcher.read.model`), importing no SQLAlchemy.

A row is anything with the columns as attributes: a SQLAlchemy row or model.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from watcher.errors import NotFoundError

State = Literal["pending", "ok", "failing"]


def askable(name: str) -> str:
    """`name`, to look a registry up by; NotFoundError when it cannot be one: a NUL is in no registry's name,
    and PostgreSQL cannot even be asked about one (a URL's `%00`)."""
    if "\x00" in name:
        raise missing(name)
    return name


def missing(name: str) -> NotFoundError:
    return NotFoundError(f"no registry named {name!r}: see `watcher registry list`")


def rfc3339(moment: datetime | None) -> str:
    if moment is None:
        return ""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def rfc3339_or_none(moment: datetime | None) -> str | None:
    return rfc3339(moment) if moment is not None else None


def first_line(text: str | None) -> str:
    return (text or "").strip().splitlines()[0] if (text or "").strip() else ""


@dataclass(frozen=True)
class RegistryStatus:
    """How one registry is doing: what `watcher status` prints and the API's `status` object holds."""

    name: str
    provider: str
    state: State
    last_poll_at: datetime | None
    last_success_at: datetime | None
    last_error: str
    next_poll_at: datetime | None
    repositories: int
    tags: int
    #: when the registry's webhook receiver last took an authenticated notification
    last_webhook_at: datetime | None = None
    #: the workspace the registry belongs to (its name is unique only there)
    workspace: str = "default"

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "provider": self.provider,
            "state": self.state,
            "last_poll_at": rfc3339_or_none(self.last_poll_at),
            "last_success_at": rfc3339_or_none(self.last_success_at),
            "last_error": self.last_error or None,
            "next_poll_at": rfc3339_or_none(self.next_poll_at),
            "repositories": self.repositories,
            "tags": self.tags,
            "last_webhook_at": rfc3339_or_none(self.last_webhook_at),
        }


def build_statuses(
    rows: Sequence[Any], runs: Mapping[int, Any], repositories: Mapping[int, int], tags: Mapping[int, int]
) -> list[RegistryStatus]:
    """Statuses from the registries' rows (id, name, workspace, provider, next_poll_at, last_webhook_at,
    last_run_id, last_ok_id), their runs by id (finished_at, outcome, error), and repository and tag counts
    by id."""
    last_runs = {row.id: runs[row.last_run_id] for row in rows if row.last_run_id in runs}
    last_success = {row.id: runs[row.last_ok_id].finished_at for row in rows if row.last_ok_id in runs}
    statuses = []
    for row in rows:
        run = last_runs.get(row.id)
        state: State = "pending" if run is None else ("ok" if run.outcome == "ok" else "failing")
        statuses.append(
            RegistryStatus(
                name=row.name,
                provider=row.provider,
                state=state,
                last_poll_at=run.finished_at if run is not None else None,
                last_success_at=last_success.get(row.id),
                last_error=first_line(run.error) if run is not None and state == "failing" else "",
                next_poll_at=row.next_poll_at,
                repositories=repositories.get(row.id, 0),
                tags=tags.get(row.id, 0),
                last_webhook_at=row.last_webhook_at,
                workspace=row.workspace,
            )
        )
    return statuses


def build_details(
    rows: Sequence[Any],
    statuses: Mapping[str, RegistryStatus],
    last_runs: Mapping[int, Any],
    webhook_runs: Mapping[int, Any] | None = None,
) -> list[dict[str, Any]]:
    """Details from the registries' rows, their statuses by name, and by registry id their newest
    registry-wide runs and their newest webhook (repository) polls."""
    from watcher.pollers import secret_fields
    from watcher.registrations import vault
    from watcher.registrations.spec import format_interval

    details = []
    for row in rows:
        shown: dict[str, str] | str
        try:
            credentials = vault.decrypt(row.credentials)
        except vault.Undecryptable as exc:
            shown = str(exc)  # this registry's credentials are unreadable; the others are shown as ever
        else:
            secret = secret_fields(row.provider)
            shown = {key: ("set" if key in secret else value) for key, value in sorted(credentials.items())}
        status = statuses[row.name]
        last, webhook = last_runs.get(row.id), (webhook_runs or {}).get(row.id)
        details.append(
            {
                "name": row.name,
                "provider": row.provider,
                "url": row.url,
                "interval": format_interval(row.interval_seconds),
                "credentials": shown,
                "options": dict(row.options or {}),
                "emit_existing": row.emit_existing,
                "baselined": row.baselined,
                "repositories": status.repositories,
                "tags": status.tags,
                "next_poll_at": rfc3339_or_none(row.next_poll_at),
                "last_poll": None if last is None else poll_json(last),
                "last_webhook_poll": None if webhook is None else poll_json(webhook),
                "status": status.as_json(),
            }
        )
    return details


def poll_json(run: Any) -> dict[str, Any]:
    return {
        "id": run.id,
        "started_at": rfc3339_or_none(run.started_at),
        "finished_at": rfc3339_or_none(run.finished_at),
        "outcome": run.outcome,
        "error": run.error or None,
        "repositories": run.repositories,
        "tags": run.tags,
        "events": run.events,
        "requests": run.requests,
        "ignored": run.ignored,
        "trigger": run.trigger,
        "listed_repositories": run.listed_repositories,
    }
