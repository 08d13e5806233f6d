"""`watcher registry`: register, inspect, test and remove registries, their webhooks, `apply` files."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from watcher.cli.common import current_workspace, friendly, in_workspace, registry_key_of, workspace_option
from watcher.pollers import PROVIDER_NAMES
from watcher.runtime import heap


@click.group()
def registry() -> None:
    """Register, inspect, test and remove registries."""


def credential_options(func: Callable[..., Any]) -> Callable[..., Any]:
    secret = " (a value, @FILE, or - for stdin)"
    options = [
        click.option("--username", help="user, service-principal id, or robot account" + secret),
        click.option("--password", help="password or access token" + secret),
        click.option("--access-key", help="AWS access key id (ecr)" + secret),
        click.option("--secret-key", help="AWS secret access key (ecr)" + secret),
        click.option("--region", help="AWS region (ecr)"),
        click.option("--tenant-id", help="Azure AD tenant (acr)"),
        click.option("--client-id", help="Azure AD application id (acr)"),
        click.option("--client-secret", help="Azure AD client secret (acr)" + secret),
        click.option("--project-id", help="Google Cloud project (gcr)"),
        click.option("--json-key", help="Google service-account JSON key (gcr)" + secret),
        click.option("--namespace", help="Docker Hub user or organisation (dockerhub)"),
    ]
    for option in reversed(options):
        func = option(func)
    return func


@registry.command("add")
@click.argument("name")
@click.option("--provider", required=True, help="kind of registry: " + ", ".join(PROVIDER_NAMES))
@click.option("--url", help="registry URL, e.g. https://harbor.example.com")
@credential_options
@click.option("--interval", default="5m", show_default=True, help="how often to poll: 10s to 30d, e.g. 30s, 5m, 1h")
@click.option("--repository", "repositories", multiple=True, help="repository glob to watch (repeatable)")
@click.option("--include-tags", help="only tags matching this regex")
@click.option("--exclude-tags", help="skip tags matching this regex")
@click.option("--emit-existing", is_flag=True, help="the first poll emits every existing tag as added")
@click.option("--max-concurrency", type=int, help="requests in flight to this registry at once (1-64)")
@click.option("--rate-limit", type=float, help="requests per second to this registry at most (0.1-10000)")
@click.option("--poll-timeout", help="deadline for one whole poll: 10s to 24h  [default: 10m]")
@click.option("--no-verify", is_flag=True, help="save without testing the connection")
@workspace_option
@friendly
def registry_add(name: str, no_verify: bool, **values: Any) -> None:
    """Register a registry in the workspace after testing that it can be listed."""
    from watcher.registrations.forms import build_spec
    from watcher.registrations.registration import register
    from watcher.registrations.spec import format_interval

    spec = build_spec({"name": name, **values}, workspace=current_workspace())
    register(spec, verify_first=not no_verify)
    click.echo(
        f"added registry {name!r}{in_workspace(spec.workspace)} ({spec.provider}, {spec.url}), "
        f"polled every {format_interval(spec.interval_seconds)}"
    )


@registry.command("list")
@click.option("--json", "as_json", is_flag=True, help="print JSON")
@workspace_option
@friendly
@heap.holding
def registry_list(as_json: bool) -> None:
    """List the workspace's registries."""
    from watcher.db import read_scope
    from watcher.read.model import registry_details, workspace_id_of

    workspace = current_workspace()
    with read_scope() as reader:
        rows = registry_details(reader, workspace_id=workspace_id_of(reader, workspace))
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo("no registries: add one with `watcher registry add`")
        return
    click.echo(f"{'NAME':20} {'PROVIDER':9} {'INTERVAL':8} {'REPOS':>6} {'TAGS':>6} {'LAST POLL':10} URL")
    for r in rows:
        last = r["last_poll"]["outcome"] if r["last_poll"] else "never"
        click.echo(
            f"{r['name']:20} {r['provider']:9} {r['interval']:8} {r['repositories']:>6} {r['tags']:>6} "
            f"{last:10} {r['url']}"
        )


@registry.command("show")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="print JSON")
@workspace_option
@friendly
@heap.holding
def registry_show(name: str, as_json: bool) -> None:
    """Show one registry (secrets are shown only as `set`)."""
    from watcher.db import read_scope
    from watcher.read.model import registry_detail, workspace_id_of

    workspace = current_workspace()
    with read_scope() as reader:
        info = registry_detail(reader, name, workspace_id=workspace_id_of(reader, workspace))
    if as_json:
        click.echo(json.dumps(info, indent=2))
        return
    for key, value in info.items():
        if isinstance(value, dict):
            click.echo(f"{key}:")
            for k, v in value.items():
                click.echo(f"  {k}: {v}")
        else:
            click.echo(f"{key}: {value}")


@registry.command("test")
@click.argument("name")
@workspace_option
@friendly
def registry_test(name: str) -> None:
    """Test the connection, credentials and listing permission of a registered registry."""
    from watcher.cli.workspaces import existing_key
    from watcher.db import session_scope
    from watcher.registrations import store as registries
    from watcher.registrations.registration import verify

    key = existing_key(name)
    with session_scope() as session:
        spec = registries.spec_of(registries.find(session, key))
    verify(spec)
    click.echo(f"registry {name!r}: reachable, credentials accepted, listing permitted")


@registry.command("remove")
@click.argument("name")
@workspace_option
@friendly
def registry_remove(name: str) -> None:
    """Forget a registry and its snapshot (its event history stays)."""
    from watcher.cli.workspaces import existing_key
    from watcher.db import session_scope
    from watcher.registrations import store as registries

    key = existing_key(name)
    with session_scope() as session:
        registries.remove(session, key)
    click.echo(f"removed registry {name!r}{in_workspace(current_workspace())}")


@registry.command("webhook")
@click.argument("name")
@click.option("--format", "format_", default=None, help="the notifications' format (default: from the provider)")
@click.option("--rotate", is_flag=True, help="replace the secret (the registry must then be given the new one)")
@click.option("--disable", is_flag=True, help="turn the receiver off (notifications get 401)")
@click.option("--json", "as_json", is_flag=True, help="print JSON")
@workspace_option
@friendly
def registry_webhook(name: str, format_: str | None, rotate: bool, disable: bool, as_json: bool) -> None:
    """Enable (or show) NAME's webhook receiver: its URL, secret and the registry-side set-up."""
    from watcher.db import session_scope
    from watcher.hooks import receivers as webhooks

    with session_scope() as session:
        hook = webhooks.configure(session, registry_key_of(name), format=format_, rotate=rotate, disable=disable)
    if as_json:
        click.echo(json.dumps(hook.as_json(), indent=2))
        return
    if disable:
        click.echo(f"registry {name!r}: webhook receiver disabled (its secret is kept for when it is enabled again)")
        return
    click.echo(f"url: {hook.url}\nsecret: {hook.secret}\nformat: {hook.format}\nenabled: true\n")
    click.echo(f"On the registry's side ({hook.format}):\n{webhooks.setup(hook)}")


@registry.command("apply")
@click.option("-f", "--file", "path", required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--no-verify", is_flag=True, help="save without testing the connections")
@workspace_option
@friendly
def registry_apply(path: Path, no_verify: bool) -> None:
    """Create or update registries and policies of the workspace from a YAML file; all are checked (the
    file, each policy's registry, the workspace's quotas, then each connection) before any is saved.
    Policies the file does not name are left alone; a policy whose selection changes publishes its event."""
    from watcher.cli.policies import publish
    from watcher.policies.applying import apply, load

    workspace = current_workspace()
    applied = apply(load(path, workspace=workspace), workspace=workspace, verify_first=not no_verify)
    selected = {event.policy: event for event in applied.events}
    for kind, name, outcome in applied.outcomes:
        event = selected.get(name) if kind == "policy" else None
        what = "" if event is None else f": selects {event.tag}" if event.tag else ": selects nothing any more"
        click.echo(f"{outcome} {kind} {name!r}{in_workspace(workspace)}{what}")
    if applied.events:
        publish("the file is applied, but its selected events are not on the stream yet")
