"""`watcher token`: bearer tokens for the HTTP API and the console."""

from __future__ import annotations

import json
from typing import Any

import click

from watcher.cli.common import current_workspace, friendly, workspace_option
from watcher.runtime import heap


@click.group("token")
def token_group() -> None:
    """Bearer tokens for the HTTP API and the console."""


@token_group.command("create")
@click.argument("name")
@click.option(
    "--role",
    type=click.Choice(["reader", "admin", "operator"]),
    required=True,
    help="reader may read its workspace; admin may change it; operator is the deployment's (all workspaces)",
)
@click.option("--expires", help="lifetime, e.g. 30d or 12h (default: until revoked)")
@workspace_option
@friendly
def token_create(name: str, role: str, expires: str | None) -> None:
    """Create a token of the workspace and print it once: only its hash is stored."""
    from datetime import timedelta

    from watcher.db import session_scope
    from watcher.registrations import tokens
    from watcher.registrations.spec import parse_duration

    workspace = current_workspace()
    lifetime = timedelta(seconds=parse_duration(expires, "--expires", 60, 3650 * 86400)) if expires else None
    with session_scope() as session:
        token = tokens.create(session, name, role, workspace=workspace, expires_in=lifetime)
    click.echo(token)
    where = f" in workspace {workspace!r}"
    click.echo(f"created {role} token {name!r}{where}: store it now, it is not shown again", err=True)


@token_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="print JSON")
@click.option("--all-workspaces", "everywhere", is_flag=True, help="the whole deployment's tokens")
@workspace_option
@friendly
@heap.holding
def token_list(as_json: bool, everywhere: bool) -> None:
    """List the workspace's tokens (never the tokens themselves)."""
    from watcher.db import read_scope
    from watcher.outbox.events import rfc3339
    from watcher.read.model import api_tokens, token_active
    from watcher.read.tables import ago, table
    from watcher.registrations.workspaces import find_id, names_by_id
    from watcher.schema import utcnow

    now = utcnow()
    with read_scope() as reader:
        wanted = None if everywhere else find_id(reader, current_workspace())
        rows = [t for t in api_tokens(reader) if wanted is None or t.workspace_id == wanted]
        workspace_of = names_by_id(reader)

    def state(t: Any) -> str:
        return "revoked" if t.revoked_at else ("active" if token_active(t, now) else "expired")

    if as_json:
        shown = [
            {
                "name": t.name,
                "workspace": workspace_of.get(t.workspace_id),
                "role": t.role,
                "state": state(t),
                "created_at": rfc3339(t.created_at),
                "expires_at": rfc3339(t.expires_at) or None,
                "last_used_at": rfc3339(t.last_used_at) or None,
            }
            for t in rows
        ]
        click.echo(json.dumps(shown, indent=2))
        return
    if not rows:
        click.echo("no tokens: create one with `watcher token create NAME --role reader|admin|operator`")
        return
    if everywhere:
        rows.sort(key=lambda t: (workspace_of.get(t.workspace_id, ""), t.name))
        wide = [(workspace_of.get(t.workspace_id, "?"), t.name, t.role, state(t), ago(t.last_used_at)) for t in rows]
        for line in table(("WORKSPACE", "NAME", "ROLE", "STATE", "LAST USED"), wide):
            click.echo(line)
        return
    lines = [(t.name, t.role, state(t), ago(t.last_used_at)) for t in rows]
    for line in table(("NAME", "ROLE", "STATE", "LAST USED"), lines):
        click.echo(line)


@token_group.command("revoke")
@click.argument("name")
@workspace_option
@friendly
def token_revoke(name: str) -> None:
    """Revoke a token of the workspace: requests with it are refused from now on."""
    from watcher.db import session_scope
    from watcher.registrations import tokens
    from watcher.schema import DEFAULT_WORKSPACE

    workspace = current_workspace()
    with session_scope() as session:
        tokens.revoke(session, name, workspace=workspace)
    click.echo(f"revoked token {name!r}" + (f" of workspace {workspace!r}" if workspace != DEFAULT_WORKSPACE else ""))
