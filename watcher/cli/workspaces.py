"""`watcher workspace`: the deployment's workspaces, their quotas and what each holds.

The command line is the deployment's own tool (it opens the state database itself): it needs no token,
and `workspace` commands act on any workspace. Over HTTP only an operator's token may do the same.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import click

from watcher.cli.common import friendly
from watcher.runtime import heap

if TYPE_CHECKING:
    from watcher.registrations.workspaces import Described


@click.group("workspace")
def workspace_group() -> None:
    """Workspaces: each team's registries, events and tokens, within the quotas set here."""


def quota_options(func: Callable[..., Any]) -> Callable[..., Any]:
    options = [
        click.option(
            "--max-registries", metavar="N", help="registries the workspace may hold at most (none: no limit)"
        ),
        click.option(
            "--min-interval", metavar="D", help="the shortest interval it may register, e.g. 5m (none: no limit)"
        ),
        click.option("--max-concurrent-polls", metavar="N", help="its polls running at once, at most (none: no limit)"),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _given(max_registries: str | None, min_interval: str | None, max_concurrent_polls: str | None) -> dict[str, Any]:
    from watcher.registrations.workspaces import parse_quotas

    given = {
        "max_registries": max_registries,
        "min_interval": min_interval,
        "max_concurrent_polls": max_concurrent_polls,
    }
    return parse_quotas({k: v for k, v in given.items() if v is not None}, command_line=True)


@workspace_group.command("create")
@click.argument("name")
@quota_options
@friendly
def workspace_create(name: str, **quotas: str | None) -> None:
    """Create a workspace (names as registries'), with quotas if given."""
    from watcher.db import session_scope
    from watcher.registrations import workspaces

    workspaces.check_name(name)
    given = _given(**quotas)
    with session_scope() as session:
        workspaces.create(session, name, given)
    click.echo(f"created workspace {name!r}: act in it with --workspace {name} or WATCHER_WORKSPACE={name}")


@workspace_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="print JSON")
@friendly
@heap.holding
def workspace_list(as_json: bool) -> None:
    """List the workspaces: their quotas, registries and active tokens."""
    from watcher.db import read_scope
    from watcher.read.tables import table
    from watcher.registrations.workspaces import described

    with read_scope() as reader:
        found = described(reader)
    if as_json:
        click.echo(json.dumps([w.as_json() for w in found], indent=2))
        return
    header = ("NAME", "REGISTRIES", "TOKENS", "MAX REGISTRIES", "MIN INTERVAL", "MAX CONCURRENT POLLS")
    rows = [_row(w) for w in found]
    for line in table(header, rows, numeric={"REGISTRIES", "TOKENS"}):
        click.echo(line)


def _row(w: Described) -> tuple[str, ...]:
    quotas = w.as_json()["quotas"]
    shown = [str(quotas[k]) if quotas[k] is not None else "-" for k in quotas]
    return (w.name, str(w.registries), str(w.tokens), *shown)


@workspace_group.command("show")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="print JSON")
@friendly
@heap.holding
def workspace_show(name: str, as_json: bool) -> None:
    """Show one workspace: its quotas (`none`: no limit) and what it holds."""
    from watcher.db import read_scope
    from watcher.registrations.workspaces import describe

    with read_scope() as reader:
        found = describe(reader, name)
    _print(found, as_json)


def _print(found: Described, as_json: bool) -> None:
    shown = found.as_json()
    if as_json:
        click.echo(json.dumps(shown, indent=2))
        return
    click.echo(f"name: {shown['name']}\ncreated_at: {shown['created_at']}")
    for group in ("quotas", "usage"):
        click.echo(f"{group}:")
        for key, value in shown[group].items():
            click.echo(f"  {key}: {'none' if value is None else value}")


@workspace_group.command("delete")
@click.argument("name")
@click.option("--force", is_flag=True, help="delete it with its registries (their snapshots and events too)")
@friendly
def workspace_delete(name: str, force: bool) -> None:
    """Delete a workspace and its tokens; one that owns registries only with --force. `default` stays."""
    from watcher.db import session_scope
    from watcher.registrations import workspaces

    with session_scope() as session:
        owned = workspaces.delete_workspace(session, name, force=force)
    also = f" and its {owned} registr{'y' if owned == 1 else 'ies'}" if owned else ""
    click.echo(f"deleted workspace {name!r}{also}")


@workspace_group.command("quota")
@click.argument("name")
@quota_options
@click.option("--json", "as_json", is_flag=True, help="print the workspace as JSON")
@friendly
def workspace_quota(name: str, as_json: bool, **quotas: str | None) -> None:
    """Set a workspace's quotas (`none` clears one), then show them; without options, only show them. A
    lowered quota bounds what is registered from now on: registries already there stay as they are."""
    from watcher.db import session_scope
    from watcher.registrations import workspaces

    given = _given(**quotas)
    with session_scope() as session:
        workspaces.set_quotas(session, name, given)
        found = workspaces.describe(session, name)
    _print(found, as_json)


def existing_key(name: str) -> str:
    """The key of the registry `name` in the command's workspace, once that workspace is known to exist: a
    workspace that does not is one line naming it, not a registry that seems missing."""
    from watcher.cli.common import current_workspace
    from watcher.registrations.keys import registry_key
    from watcher.schema import DEFAULT_WORKSPACE

    workspace = current_workspace()
    if workspace != DEFAULT_WORKSPACE:  # always there: no query for an installation without workspaces
        from watcher.db import read_scope
        from watcher.registrations.workspaces import find_id

        with read_scope() as reader:
            find_id(reader, workspace)
    return registry_key(workspace, name)
