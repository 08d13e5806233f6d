"""`watcher token`: bearer tokens for the HTTP API and the console."""

from __future__ import annotations

import json
from typing import Any

import click

from watcher.cli.common import friendly
from watcher.runtime import heap


@click.group("token")
def token_group() -> None:
    """Bearer tokens for the HTTP API and the console."""


@token_group.command("create")
@click.argument("name")
@click.option("--role", type=click.Choice(["reader", "admin"]), required=True, help="reader may GET; admin may all")
@click.option("--expires", help="lifetime, e.g. 30d or 12h (default: until revoked)")
@friendly
def token_create(name: str, role: str, expires: str | None) -> None:
    """Create a token and print it once: only its hash is stored."""
    from datetime import timedelta

    from watcher.db import session_scope
    from watcher.registrations import tokens
    from watcher.registrations.spec import parse_duration

    lifetime = timedelta(seconds=parse_duration(expires, "--expires", 60, 3650 * 86400)) if expires else None
    with session_scope() as session:
        token = tokens.create(session, name, role, expires_in=lifetime)
    click.echo(token)
    click.echo(f"created {role} token {name!r}: store it now, it is not shown again", err=True)


@token_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="print JSON")
@friendly
@heap.holding
def token_list(as_json: bool) -> None:
    """List tokens (never the tokens themselves)."""
    from watcher.db import read_scope
    from watcher.outbox.events import rfc3339
    from watcher.read.model import api_tokens, token_active
    from watcher.read.tables import ago, table
    from watcher.schema import utcnow

    now = utcnow()
    with read_scope() as reader:
        rows = api_tokens(reader)

    def state(t: Any) -> str:
        return "revoked" if t.revoked_at else ("active" if token_active(t, now) else "expired")

    if as_json:
        shown = [
            {
                "name": t.name,
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
        click.echo("no tokens: create one with `watcher token create NAME --role reader|admin`")
        return
    lines = [(t.name, t.role, state(t), ago(t.last_used_at)) for t in rows]
    for line in table(("NAME", "ROLE", "STATE", "LAST USED"), lines):
        click.echo(line)


@token_group.command("revoke")
@click.argument("name")
@friendly
def token_revoke(name: str) -> None:
    """Revoke a token: requests with it are refused from now on."""
    from watcher.db import session_scope
    from watcher.registrations import tokens

    with session_scope() as session:
        tokens.revoke(session, name)
    click.echo(f"revoked token {name!r}")
