"""`watcher poll` (one registry now, in this process) and what the polls found: `status`, `images`."""

from __future__ import annotations

import contextlib
import json
from typing import TYPE_CHECKING

import click

from watcher.cli.common import current_workspace, friendly, line_of, workspace_option
from watcher.errors import RegistryError, StateError
from watcher.runtime import heap

if TYPE_CHECKING:
    from watcher.polling.poll import PollResult


@click.command("poll")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="print JSON")
@workspace_option
@friendly
@heap.holding
def poll_command(name: str, as_json: bool) -> None:
    """Poll one registry of the workspace now, in this process, and publish what changed. Exits 1 naming the
    repositories that failed, if some did, after publishing what the others changed. The deliveries the
    relay writes are sent by the workers (their sweep finds them within a second): kicking a run from here
    would cost this command Celery's import."""
    from watcher import bus
    from watcher.cli.workspaces import existing_key
    from watcher.polling.poll import PartialPoll, poll

    def relay() -> None:  # the relay (and the outbox's imports) only once the poll is done
        from watcher.outbox.relay import relay

        relay(bus.connect())

    partial: PartialPoll | None = None
    key = existing_key(name)
    try:
        result = poll(key)
    except PartialPoll as exc:
        partial, result = exc, exc.result
    except RegistryError:  # a deadline may pass after some repositories were saved: their events go out
        with contextlib.suppress(StateError):
            relay()
        raise
    try:
        relay()
    except StateError as exc:
        raise StateError(
            f"registry {name!r}: listed and saved, but the events are not on the stream yet: {exc}"
        ) from None
    if partial is not None:
        raise partial  # a failure is one line; what the others changed is in the stream and `watcher events`
    report(result, as_json)


def report(result: PollResult, as_json: bool) -> None:
    from watcher.outbox.events import stream_entry

    entries = [stream_entry(e) for e in result.events]
    if as_json:
        summary = {
            "registry": result.registry,
            "baseline": result.baseline,
            "repositories": result.repositories,
            "tags": result.tags,
            "requests": result.requests,
            "ignored": result.ignored,
            "events": [{k: v for k, v in e.items() if k != "cloudevent"} for e in entries],
        }
        click.echo(json.dumps(summary))
        return
    what = "baseline recorded, " if result.baseline else ""
    click.echo(
        f"registry {result.registry!r}: {what}{result.repositories} repositories, {result.tags} tags, "
        f"{len(entries)} events, {result.requests} requests, {result.ignored} ignored"
    )
    for e in entries:
        click.echo(line_of(e))


@click.command("status")
@click.option("--json", "as_json", is_flag=True, help="print a JSON array")
@workspace_option
@friendly
@heap.holding
def status_command(as_json: bool) -> None:
    """How every registry of the workspace is doing: state, last poll, last success, last error, next poll,
    last webhook (blank when none ever came), size; the workspace's schedule lag, and its failing
    subscriptions."""
    from watcher.db import read_scope
    from watcher.read.model import registry_statuses, schedule_lag, workspace_id_of
    from watcher.read.subscriptions import subscriptions
    from watcher.read.tables import ago, table

    workspace = current_workspace()
    with read_scope() as reader:
        workspace_id = workspace_id_of(reader, workspace)
        statuses = registry_statuses(reader, workspace_id=workspace_id)
        lag = schedule_lag(reader, workspace_id=workspace_id)
        failing = [view.name for view in subscriptions(reader, workspace_id=workspace_id) if view.state == "failing"]
    if as_json:
        click.echo(json.dumps([s.as_json() for s in statuses], indent=2))
        return
    if not statuses:
        click.echo("no registries: add one with `watcher registry add`")
        return
    header = (
        "NAME",
        "PROVIDER",
        "STATE",
        "LAST POLL",
        "LAST SUCCESS",
        "NEXT POLL",
        "LAST WEBHOOK",
        "REPOS",
        "TAGS",
        "LAST ERROR",
    )
    rows = [
        (
            s.name,
            s.provider,
            s.state,
            ago(s.last_poll_at),
            ago(s.last_success_at),
            ago(s.next_poll_at),
            ago(s.last_webhook_at) if s.last_webhook_at is not None else "",
            str(s.repositories),
            str(s.tags),
            s.last_error,
        )
        for s in statuses
    ]
    for line in table(header, rows, numeric={"REPOS", "TAGS"}):
        click.echo(line)
    click.echo(f"\nschedule lag in workspace {workspace!r}: {lag:.1f} s (how late its most overdue poll is)")
    if failing:
        shown = ", ".join(failing[:10]) + (f" and {len(failing) - 10} more" if len(failing) > 10 else "")
        click.echo(f"failing subscriptions: {shown} (see `watcher subscription show NAME`)")


@click.command("images")
@click.argument("registry_name", metavar="REGISTRY")
@click.argument("repository", required=False)
@click.option("--tag", "tag_pattern", help="only tags matching this regular expression (RE2 syntax)")
@click.option(
    "--sort",
    type=click.Choice(["name", "pushed", "created"]),
    default="name",
    show_default=True,
    help="by repository and tag, newest push first, or newest build first (creation time, then push time)",
)
@click.option("--json", "as_json", is_flag=True, help="one JSON object per line")
@workspace_option
@friendly
@heap.holding
def images_command(
    registry_name: str, repository: str | None, tag_pattern: str | None, sort: str, as_json: bool
) -> None:
    """The images stored now: repository, tag, digest, push and creation times and platforms, to pick one to
    deploy."""
    from watcher.db import read_scope
    from watcher.outbox.events import rfc3339
    from watcher.read.model import Image, ImageOrder, images_page, workspace_id_of
    from watcher.read.tables import UNKNOWN, platforms_cell, table

    wanted = None
    if tag_pattern:
        from watcher.registrations.scope import compile_pattern  # RE2, only where a pattern is given

        wanted = compile_pattern(tag_pattern, "--tag")
    orders: dict[str, ImageOrder] = {"name": "name", "pushed": "pushed_at", "created": "created"}
    images: list[Image] = []
    cursor: str | None = None
    workspace = current_workspace()
    with read_scope() as reader:
        workspace_id = workspace_id_of(reader, workspace)
        while True:
            page = images_page(
                reader,
                registry_name,
                repository,
                order=orders[sort],
                cursor=cursor,
                limit=1000,
                workspace_id=workspace_id,
            )
            images.extend(i for i in page.items if wanted is None or wanted.search(i.tag))
            if page.next_cursor is None:
                break
            cursor = page.next_cursor
    if as_json:
        for image in images:
            click.echo(json.dumps(image.as_json()))
        return
    if not images:
        where = f"{registry_name}/{repository}" if repository else registry_name
        click.echo(f"no images stored for {where}" + (f" with tags matching {tag_pattern!r}" if wanted else ""))
        return
    rows = [
        (
            i.repository,
            i.tag,
            i.digest,
            rfc3339(i.pushed_at) or UNKNOWN,
            rfc3339(i.created) or UNKNOWN,
            platforms_cell(i.platforms),
        )
        for i in images
    ]
    for line in table(("REPOSITORY", "TAG", "DIGEST", "PUSHED AT", "CREATED", "PLATFORMS"), rows):
        click.echo(line)
