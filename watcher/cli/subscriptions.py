"""`watcher subscription`: where the workspace's events are delivered over HTTP — add, list, show, remove,
test one, and look at (and redeliver) its deliveries.

`list`, `show` and `deliveries` only read (the read model on a Core connection: no ORM, no secret
decrypted). A secret is printed once, by `add`, when the watcher made it; it is never shown again, and a
URL is shown as `watcher.read.subscriptions.shown_url` shows it (a Slack or Teams URL is a credential).
"""

from __future__ import annotations

import json
from typing import Any

import click

from watcher.cli.common import current_workspace, friendly, workspace_option
from watcher.runtime import heap

FORMAT_NAMES = ("cloudevents", "cloudevents-structured", "slack", "teams", "github-dispatch")
STATES = ("pending", "delivered", "dead")


@click.group("subscription")
def subscription_group() -> None:
    """Deliver the workspace's events to HTTP endpoints: CloudEvents, Slack, Teams, GitHub dispatch."""


@subscription_group.command("add")
@click.argument("name")
@click.option("--url", required=True, help="the endpoint: http(s)://HOST[:PORT]/PATH")
@click.option(
    "--format",
    "format_",
    default="cloudevents",
    show_default=True,
    type=click.Choice(FORMAT_NAMES),
    help="the requests' wire format",
)
@click.option("--registry", help="only this registry's events")
@click.option("--repository", help="only repositories matching this glob")
@click.option("--change", "changes", help="only these changes: added,updated,removed,selected")
@click.option("--policy", help="only this policy's `selected` events")
@click.option(
    "--secret",
    help="the signing secret (whsec_…, at least 32 bytes; default: a new random one), or for github-dispatch "
    "the GitHub token (a value, @FILE, or - for stdin)",
)
@workspace_option
@friendly
def subscription_add(name: str, url: str, format_: str, secret: str | None, **filters: Any) -> None:
    """Subscribe an endpoint to the workspace's events; prints the secret once."""
    from watcher.db import session_scope
    from watcher.delivery.subscriptions import SubscriptionSpec, save
    from watcher.read.model import workspace_id_of
    from watcher.read.subscriptions import shown_url
    from watcher.registrations.forms import read_secret

    spec = SubscriptionSpec.build(name, url, format_, **filters)
    given = read_secret(secret, "secret") if secret is not None else None
    with session_scope() as session:
        stored = save(session, spec, workspace_id=workspace_id_of(session, current_workspace()), secret=given)
    click.echo(f"added subscription {name!r}{_in()} ({spec.format}, {shown_url(spec.url, spec.format)})")
    if given is None:
        click.echo(f"secret: {stored}")
        click.echo("store it now, where the receiver verifies webhook-signature with it: it is not shown again")


def _in() -> str:
    from watcher.schema import DEFAULT_WORKSPACE

    workspace = current_workspace()
    return "" if workspace == DEFAULT_WORKSPACE else f" in workspace {workspace!r}"


@subscription_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="print JSON")
@workspace_option
@friendly
@heap.holding
def subscription_list(as_json: bool) -> None:
    """List the workspace's subscriptions and how their deliveries go."""
    from watcher.db import read_scope
    from watcher.read.model import workspace_id_of
    from watcher.read.subscriptions import subscriptions
    from watcher.read.tables import table

    with read_scope() as reader:
        views = subscriptions(reader, workspace_id=workspace_id_of(reader, current_workspace()))
    if as_json:
        click.echo(json.dumps([view.as_json() for view in views], indent=2))
        return
    if not views:
        click.echo("no subscriptions: add one with `watcher subscription add`")
        return
    header = ("NAME", "FORMAT", "HOST", "STATE", "PENDING", "DEAD", "LAST ERROR")
    rows = [(v.name, v.format, v.host, v.state, str(v.pending), str(v.dead), v.last_error) for v in views]
    for line in table(header, rows, numeric=("PENDING", "DEAD")):
        click.echo(line)


@subscription_group.command("show")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="print JSON")
@workspace_option
@friendly
@heap.holding
def subscription_show(name: str, as_json: bool) -> None:
    """Show one subscription (never its secret)."""
    from watcher.db import read_scope
    from watcher.read.model import workspace_id_of
    from watcher.read.subscriptions import subscription

    with read_scope() as reader:
        view = subscription(reader, name, workspace_id=workspace_id_of(reader, current_workspace()))
    shown = view.as_json()
    if as_json:
        click.echo(json.dumps(shown, indent=2))
        return
    for key, value in shown.items():
        if key == "filters":
            value = ", ".join(f"{k}={','.join(v) if isinstance(v, list) else v}" for k, v in value.items()) or "none"
        click.echo(f"{key}: {'' if value is None else value}")


@subscription_group.command("rm")
@click.argument("name")
@workspace_option
@friendly
def subscription_rm(name: str) -> None:
    """Remove a subscription and its deliveries (the events stay)."""
    from watcher.db import session_scope
    from watcher.delivery.subscriptions import remove
    from watcher.read.model import workspace_id_of

    with session_scope() as session:
        remove(session, name, workspace_id=workspace_id_of(session, current_workspace()))
    click.echo(f"removed subscription {name!r}{_in()}")


@subscription_group.command("test")
@click.argument("name")
@workspace_option
@friendly
def subscription_test(name: str) -> None:
    """Send one sample event (id `test-…`, not in the history) and show what the endpoint answered."""
    from watcher.db import session_scope
    from watcher.delivery import manage
    from watcher.errors import StateError
    from watcher.read.model import workspace_id_of
    from watcher.read.subscriptions import subscription_row

    with session_scope() as session:
        row = subscription_row(session, name, workspace_id=workspace_id_of(session, current_workspace()))
        event = manage.sample_event(session, row)
    tried = manage.test(row, event)
    if not tried.delivered:
        raise StateError(f"subscription {name!r}: the sample event {tried.event_id} was not accepted: {tried.line()}")
    click.echo(f"subscription {name!r}: the sample event {tried.event_id} was accepted: {tried.line()}")


@subscription_group.command("deliveries")
@click.argument("name")
@click.option("--state", type=click.Choice(STATES), help="only deliveries in this state")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 1000), help="newest N deliveries")
@click.option("--json", "as_json", is_flag=True, help="one JSON object per line")
@workspace_option
@friendly
@heap.holding
def subscription_deliveries(name: str, state: str | None, limit: int, as_json: bool) -> None:
    """Show a subscription's deliveries, newest first (`--state dead`: its dead letters)."""
    from watcher.db import read_scope
    from watcher.read.model import workspace_id_of
    from watcher.read.subscriptions import deliveries_page
    from watcher.read.tables import table

    with read_scope() as reader:
        workspace_id = workspace_id_of(reader, current_workspace())
        page = deliveries_page(reader, name, state=state, limit=limit, workspace_id=workspace_id)
    if as_json:
        for item in page.items:
            click.echo(json.dumps(item.as_json()))
        return
    if not page.items:
        click.echo(f"no {state + ' ' if state else ''}deliveries for subscription {name!r}")
        return
    header = ("ID", "STATE", "ATTEMPTS", "STATUS", "CHANGE", "EVENT", "LAST ERROR")
    rows = [
        (
            str(d.id),
            d.state,
            str(d.attempts),
            "" if d.last_status is None else str(d.last_status),
            d.change,
            f"{d.registry} {d.repository}:{d.tag}",
            d.last_error,
        )
        for d in page.items
    ]
    for line in table(header, rows, numeric=("ID", "ATTEMPTS", "STATUS")):
        click.echo(line)


@subscription_group.command("redeliver")
@click.argument("name")
@click.argument("delivery_ids", nargs=-1, type=click.IntRange(min=1), metavar="[DELIVERY_ID]...")
@click.option("--all", "everything", is_flag=True, help="every dead letter of the subscription")
@workspace_option
@friendly
def subscription_redeliver(name: str, delivery_ids: tuple[int, ...], everything: bool) -> None:
    """Send dead letters again, in their place in the subscription's order: `--all`, or those named."""
    if everything == bool(delivery_ids):
        raise click.UsageError("give --all or the ids of the dead letters to redeliver, not both")
    from watcher.db import session_scope
    from watcher.delivery.manage import redeliver
    from watcher.read.model import workspace_id_of

    with session_scope() as session:
        workspace_id = workspace_id_of(session, current_workspace())
        count = redeliver(session, name, workspace_id=workspace_id, delivery_ids=None if everything else delivery_ids)
    click.echo(f"subscription {name!r}: {count} dead letter{'' if count == 1 else 's'} pending again")
