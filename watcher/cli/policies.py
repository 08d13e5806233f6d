"""`watcher policy`: which image of a repository to deploy — add, list, show and remove policies.

`add` saves the policy and its first evaluation in one transaction (`watcher.policies.store`), then
publishes its `selected` event like `watcher poll` does. `list` and `show` only read: they ask the read model
(`watcher.read.policies`) through a Core connection, so they import no ORM (tests/cli/test_cli_imports.py).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import click

from watcher.cli.common import current_workspace, friendly, in_workspace, workspace_option
from watcher.runtime import heap

if TYPE_CHECKING:
    from watcher.read.policies import PolicyView

#: `selected` events `policy show` lists, newest first
HISTORY = 10


@click.group("policy")
def policy_group() -> None:
    """Policies: the image of a repository to deploy, and a `selected` event whenever it changes."""


@policy_group.command("add")
@click.argument("name")
@click.option("--registry", "registry_name", required=True, metavar="R", help="a registry of the workspace")
@click.option("--repository", required=True, metavar="REPO", help="the repository whose tags it selects from")
@click.option("--semver", metavar="RANGE", help="the highest version in the range: ^1.2, ~1.2.3, >=1.0 <2.0, 1.2.x")
@click.option("--numeric", metavar="asc|desc", help="the tag (or --extract's key) as a number: asc takes the highest")
@click.option("--alphabetical", metavar="asc|desc", help="the tag (or key) in code-point order: asc takes the last")
@click.option("--newest-build", is_flag=True, help="the latest creation time, then push time")
@click.option("--digest", metavar="TAG", help="one mutable tag, at whatever digest it points to")
@click.option("--filter", "filter_", metavar="RE2", help="only tags this RE2 pattern matches (searched, not anchored)")
@click.option("--extract", metavar="'$name'", help="the sort key built from --filter's groups, e.g. '$ts'")
@click.option("--prerelease", is_flag=True, help="--semver also admits pre-releases of versions it admits")
@workspace_option
@friendly
def policy_add(name: str, registry_name: str, repository: str, filter_: str | None, **strategy: Any) -> None:
    """Add a policy with exactly one strategy; it is evaluated at once against the stored tags, and its
    `selected` event, if it selects one, is published to the stream."""
    from watcher.db import session_scope
    from watcher.policies.store import PolicySpec, save
    from watcher.registrations.workspaces import find_id

    spec = PolicySpec.build(name, registry_name, repository, filter=filter_, **strategy)
    workspace = current_workspace()
    with session_scope() as session:
        saved = save(session, spec, workspace_id=find_id(session, workspace))
    selected = saved.events[-1] if saved.events else None
    what = (
        f"selects {selected.tag} ({selected.digest})"
        if selected is not None
        else "selects nothing yet (no stored tag qualifies: poll the registry, or see `watcher images`)"
    )
    where = f"{in_workspace(workspace)} ({spec.policy.describe()}) on {registry_name} {repository}"
    click.echo(f"added policy {name!r}{where}: {what}")
    if saved.events:
        publish(f"policy {name!r} is saved, but its selected event is not on the stream yet")


def publish(waiting: str) -> None:
    """Relay the committed events to the stream (as `watcher poll` does). When Redis is out of reach, one
    line (exit 1): `waiting` (what is saved, and that its events are not on the stream yet), then the relay's
    reason, which says they wait in the database: the worker's relay sends them once Redis answers, or the next
    command that publishes."""
    from watcher import bus
    from watcher.errors import StateError
    from watcher.outbox.relay import relay

    try:
        relay(bus.connect())
    except StateError as exc:
        raise StateError(f"{waiting}: {exc}") from None


@policy_group.command("list")
@click.option("--registry", "registry_name", metavar="R", help="only the policies of this registry")
@click.option("--json", "as_json", is_flag=True, help="print a JSON array")
@workspace_option
@friendly
@heap.holding
def policy_list(registry_name: str | None, as_json: bool) -> None:
    """List the workspace's policies and what each selects now."""
    from watcher.db import read_scope
    from watcher.read.model import workspace_id_of
    from watcher.read.policies import policies
    from watcher.read.tables import ago, table

    with read_scope() as reader:
        views = policies(reader, workspace_id=workspace_id_of(reader, current_workspace()), registry=registry_name)
    if as_json:
        click.echo(json.dumps([view.as_json() for view in views], indent=2))
        return
    if not views:
        where = f" on registry {registry_name!r}" if registry_name else ""
        click.echo(f"no policies{where}: add one with `watcher policy add`")
        return
    rows = [(v.name, v.registry, v.repository, v.strategy, v.tag or "-", ago(v.since) if v.tag else "-") for v in views]
    for line in table(("NAME", "REGISTRY", "REPOSITORY", "STRATEGY", "SELECTED", "SINCE"), rows):
        click.echo(line)


@policy_group.command("show")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="print JSON")
@workspace_option
@friendly
@heap.holding
def policy_show(name: str, as_json: bool) -> None:
    """Show a policy: the image it selects (tag, digest, pull reference), since when, how many tags it
    considered and ignored, and its recent selections."""
    from watcher.db import read_scope
    from watcher.outbox.events import fields_of
    from watcher.read.model import workspace_id_of
    from watcher.read.policies import policy, selection_history

    with read_scope() as reader:
        workspace_id = workspace_id_of(reader, current_workspace())
        view = policy(reader, name, workspace_id=workspace_id)
        history = [fields_of(row) for row in selection_history(reader, name, workspace_id=workspace_id, limit=HISTORY)]
    if as_json:
        shown = {**view.as_json(), "history": [_selection(entry) for entry in history]}
        click.echo(json.dumps(shown, indent=2))
        return
    for line in _described(view, history):
        click.echo(line)


def _selection(entry: dict[str, str]) -> dict[str, str]:
    """One `selected` event of the history, as its stream entry names it."""
    keys = ("event_id", "detected_at", "tag", "digest", "previous_tag", "previous_digest")
    return {key: entry[key] for key in keys}


def _described(view: PolicyView, history: list[dict[str, str]]) -> list[str]:
    from watcher.outbox.events import rfc3339
    from watcher.read.tables import ago

    lines = [
        f"policy: {view.name}",
        f"registry: {view.registry}",
        f"repository: {view.repository}",
        f"strategy: {view.strategy}",
    ]
    if view.tag is None:
        lines.append("selected: nothing (no stored tag qualifies)")
    else:
        lines += [
            f"selected: {view.tag}",
            f"digest: {view.digest}",
            f"pull: {view.reference}",
            f"since: {rfc3339(view.since)} ({ago(view.since)})",
        ]
    lines.append(f"tags: {view.considered} considered, {view.ignored} ignored")
    lines.append(f"evaluated: {rfc3339(view.evaluated_at) or 'never'}")
    if not history:
        lines.append("history: no selection yet")
        return lines
    lines.append(f"history (newest first, at most {HISTORY}):")
    for entry in history:
        now = f"{entry['tag']} {entry['digest']}" if entry["tag"] else "nothing"
        was = f" (was {entry['previous_tag']})" if entry["previous_tag"] else ""
        lines.append(f"  {entry['detected_at']}  {now}{was}")
    return lines


@policy_group.command("rm")
@click.argument("name")
@workspace_option
@friendly
def policy_rm(name: str) -> None:
    """Remove a policy (its `selected` events stay in the history)."""
    from watcher.db import session_scope
    from watcher.policies.store import remove
    from watcher.registrations.workspaces import find_id

    workspace = current_workspace()
    with session_scope() as session:
        remove(session, name, workspace_id=find_id(session, workspace))
    click.echo(f"removed policy {name!r}{in_workspace(workspace)}")
