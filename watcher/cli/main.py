"""The `watcher` command: registries, polls, events and the long-running worker.

Commands that only read the state (`--help`, `registry list/show`, `status`, `images`, `events`,
`token list`) and `poll` must start fast, so this module imports little more than click: each command
imports what it needs itself (the database and the read model; the SDKs, httpx, Redis, Celery, the web app
only where used). `--help` imports no SQLAlchemy at all. tests/cli/test_cli_imports.py keeps it so. These
commands run `heap.holding`: no collections while they import (a poll's turn back on when it settles).
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Callable, Sequence
from functools import wraps
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, ParamSpec, TypeVar

import click

from watcher.cli.failures import check_configuration, debugging, mask, one_line
from watcher.errors import RegistryError, StateError, WatcherError
from watcher.pollers import PROVIDER_NAMES
from watcher.runtime import heap
from watcher.settings import get_settings

if TYPE_CHECKING:
    from watcher.polling.poll import PollResult

P = ParamSpec("P")
MAX_EVENTS_LIMIT = 10_000  # `events --limit`: more is a job for the HTTP API's paging
MAX_CLAIM_IDLE_SECONDS = 7 * 86400
R = TypeVar("R")


def friendly(func: Callable[P, R]) -> Callable[P, R]:
    """Every failure becomes one line on stderr and exit 1: never a traceback (unless WATCHER_DEBUG=1).

    The configuration is checked first, so a malformed WATCHER_* URL is named before anything uses it.
    """

    @wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            check_configuration(get_settings())
            return func(*args, **kwargs)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise  # usage mistakes and exits are WatcherGroup's to report
        except Exception as exc:
            fail(exc)

    return wrapper


def fail(exc: Exception) -> NoReturn:
    """Report `exc` in one line and exit 1; with WATCHER_DEBUG=1 an unexpected one keeps its traceback."""
    if debugging() and not isinstance(exc, WatcherError):
        raise exc
    click.echo(f"watcher: {one_line(exc)}", err=True)
    sys.exit(1)


class WatcherGroup(click.Group):
    """Usage mistakes, like every other failure, are one line on stderr (exit 2; other failures exit 1)."""

    def main(  # type: ignore[override]
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        try:
            result = super().main(args, prog_name, standalone_mode=False, **extra)
        except click.UsageError as exc:
            where = exc.ctx.command_path if exc.ctx else "watcher"
            click.echo(f"watcher: {mask(exc.format_message()).rstrip('.')} (see `{where} --help`)", err=True)
            sys.exit(2)
        except click.Abort:
            click.echo("watcher: aborted", err=True)
            sys.exit(1)
        except click.ClickException as exc:
            click.echo(f"watcher: {mask(exc.format_message())}", err=True)
            sys.exit(exc.exit_code)
        except Exception as exc:  # a command without @friendly, or a failure in click's own machinery
            fail(exc)
        if standalone_mode:
            sys.exit(result if isinstance(result, int) else 0)
        return result


@click.group(cls=WatcherGroup)
@click.version_option(package_name="watcher")
def main() -> None:
    """Watch container registries and emit one CloudEvent per tag change onto a Redis stream."""


# ---- registry ------------------------------------------------------------------------------------
@main.group()
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
@friendly
def registry_add(name: str, no_verify: bool, **values: Any) -> None:
    """Register a registry after testing that it can be listed."""
    from watcher.registrations.forms import build_spec
    from watcher.registrations.registration import register
    from watcher.registrations.spec import format_interval

    spec = build_spec({"name": name, **values})
    register(spec, verify_first=not no_verify)
    click.echo(
        f"added registry {name!r} ({spec.provider}, {spec.url}), polled every {format_interval(spec.interval_seconds)}"
    )


@registry.command("list")
@click.option("--json", "as_json", is_flag=True, help="print JSON")
@friendly
@heap.holding
def registry_list(as_json: bool) -> None:
    """List registered registries."""
    from watcher.db import read_scope
    from watcher.read.model import registry_details

    with read_scope() as reader:
        rows = registry_details(reader)
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
@friendly
@heap.holding
def registry_show(name: str, as_json: bool) -> None:
    """Show one registry (secrets are shown only as `set`)."""
    from watcher.db import read_scope
    from watcher.read.model import registry_detail

    with read_scope() as reader:
        info = registry_detail(reader, name)
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
@friendly
def registry_test(name: str) -> None:
    """Test the connection, credentials and listing permission of a registered registry."""
    from watcher.db import session_scope
    from watcher.registrations import store as registries
    from watcher.registrations.registration import verify

    with session_scope() as session:
        spec = registries.spec_of(registries.find(session, name))
    verify(spec)
    click.echo(f"registry {name!r}: reachable, credentials accepted, listing permitted")


@registry.command("remove")
@click.argument("name")
@friendly
def registry_remove(name: str) -> None:
    """Forget a registry and its snapshot (its event history stays)."""
    from watcher.db import session_scope
    from watcher.registrations import store as registries

    with session_scope() as session:
        registries.remove(session, name)
    click.echo(f"removed registry {name!r}")


@registry.command("webhook")
@click.argument("name")
@click.option("--format", "format_", default=None, help="the notifications' format (default: from the provider)")
@click.option("--rotate", is_flag=True, help="replace the secret (the registry must then be given the new one)")
@click.option("--disable", is_flag=True, help="turn the receiver off (notifications get 404)")
@click.option("--json", "as_json", is_flag=True, help="print JSON")
@friendly
def registry_webhook(name: str, format_: str | None, rotate: bool, disable: bool, as_json: bool) -> None:
    """Enable (or show) NAME's webhook receiver: its URL, secret and the registry-side set-up."""
    from watcher.db import session_scope
    from watcher.hooks import receivers as webhooks

    with session_scope() as session:
        hook = webhooks.configure(session, name, format=format_, rotate=rotate, disable=disable)
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
@friendly
def registry_apply(path: Path, no_verify: bool) -> None:
    """Create or update registries from a YAML file; all are checked before any is saved."""
    from watcher.db import session_scope
    from watcher.registrations import store as registries
    from watcher.registrations.applyfile import load_specs
    from watcher.registrations.registration import verify

    specs = load_specs(path)
    if not no_verify:
        for spec in specs:
            verify(spec)
    with session_scope() as session:
        outcomes = [(spec.name, registries.save(session, spec)[1]) for spec in specs]
    for name, outcome in outcomes:
        click.echo(f"{outcome} registry {name!r}")


# ---- poll ----------------------------------------------------------------------------------------
@main.command("poll")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="print JSON")
@friendly
@heap.holding
def poll_command(name: str, as_json: bool) -> None:
    """Poll one registry now, in this process, and publish what changed. Exits 1 naming the repositories
    that failed, if some did, after publishing what the others changed."""
    from watcher import bus
    from watcher.outbox.relay import relay
    from watcher.polling.poll import PartialPoll, poll

    partial: PartialPoll | None = None
    try:
        result = poll(name)
    except PartialPoll as exc:
        partial, result = exc, exc.result
    except RegistryError:  # a deadline may pass after some repositories were saved: their events go out
        with contextlib.suppress(StateError):
            relay(bus.connect())
        raise
    try:
        relay(bus.connect())
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


def line_of(entry: dict[str, str]) -> str:
    moved = f" (was {entry['previous_digest']})" if entry.get("previous_digest") else ""
    return (
        f"{entry['detected_at']} {entry['change']:7} {entry['registry']} "
        f"{entry['repository']}:{entry['tag']} {entry['digest']}{moved}"
    )


# ---- what the watcher knows -----------------------------------------------------------------------
@main.command("status")
@click.option("--json", "as_json", is_flag=True, help="print a JSON array")
@friendly
@heap.holding
def status_command(as_json: bool) -> None:
    """How every registry is doing: state, last poll, last success, last error, next poll, last webhook
    (blank when none ever came), size."""
    from watcher.db import read_scope
    from watcher.read.model import registry_statuses
    from watcher.read.tables import ago, table

    with read_scope() as reader:
        statuses = registry_statuses(reader)
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


@main.command("images")
@click.argument("registry_name", metavar="REGISTRY")
@click.argument("repository", required=False)
@click.option("--tag", "tag_pattern", help="only tags matching this regular expression (RE2 syntax)")
@click.option("--json", "as_json", is_flag=True, help="one JSON object per line")
@friendly
@heap.holding
def images_command(registry_name: str, repository: str | None, tag_pattern: str | None, as_json: bool) -> None:
    """The images stored now: repository, tag, digest and push time, to pick one to deploy."""
    from watcher.db import read_scope
    from watcher.outbox.events import rfc3339
    from watcher.read.model import Image, images_page
    from watcher.read.tables import table

    wanted = None
    if tag_pattern:
        from watcher.registrations.scope import compile_pattern  # RE2, only where a pattern is given

        wanted = compile_pattern(tag_pattern, "--tag")
    images: list[Image] = []
    cursor: str | None = None
    with read_scope() as reader:
        while True:
            page = images_page(reader, registry_name, repository, cursor=cursor, limit=1000)
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
    rows = [(i.repository, i.tag, i.digest, rfc3339(i.pushed_at) or "-") for i in images]
    for line in table(("REPOSITORY", "TAG", "DIGEST", "PUSHED AT"), rows):
        click.echo(line)


# ---- API tokens -----------------------------------------------------------------------------------
@main.group("token")
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


# ---- events --------------------------------------------------------------------------------------
@main.group("events", invoke_without_command=True)
@click.option("--registry", "registry_name", help="only this registry")
@click.option("--repository", help="only this repository")
@click.option("--since", help="only events detected at or after this ISO 8601 time")
@click.option(
    "--limit", default=50, show_default=True, type=click.IntRange(1, MAX_EVENTS_LIMIT), help="newest N events"
)
@click.option("--json", "as_json", is_flag=True, help="one JSON object per line")
@click.pass_context
@friendly
@heap.holding
def events(
    ctx: click.Context, registry_name: str | None, repository: str | None, since: str | None, limit: int, as_json: bool
) -> None:
    """Show the event history (oldest first), or follow the stream with `events tail`."""
    if ctx.invoked_subcommand is not None:
        return
    from watcher.db import read_scope
    from watcher.outbox.events import stream_entry
    from watcher.outbox.history import parse_since, recent_events

    since_at = parse_since(since) if since else None
    with read_scope() as reader:
        rows = recent_events(reader, registry=registry_name, repository=repository, since=since_at, limit=limit)
        entries = [stream_entry(e) for e in rows]
    for entry in entries:
        click.echo(json.dumps(entry) if as_json else line_of(entry))


@events.command("tail")
@click.option("--group", help="consumer group: members share the stream, abandoned entries are claimed")
@click.option("--consumer", help="this member's name in the group (default: host:pid)")
@click.option("--count", type=click.IntRange(min=1), help="stop after this many events")
@click.option("--json", "as_json", is_flag=True, help="one JSON object per line")
@click.option(
    "--claim-idle",
    default=60,
    show_default=True,
    type=click.IntRange(0, MAX_CLAIM_IDLE_SECONDS),
    help="seconds before another member's entry is claimed",
)
@friendly
def events_tail(group: str | None, consumer: str | None, count: int | None, as_json: bool, claim_idle: int) -> None:
    """Follow the event stream as it grows."""
    import os
    import socket

    from watcher import bus
    from watcher.outbox.consumer import read_group, read_live

    settings = get_settings()
    client = bus.connect()
    stream = settings.events_stream
    seen = 0

    def keep_going() -> bool:
        return count is None or seen < count

    consumer = consumer or f"{socket.gethostname()}:{os.getpid()}"
    entries = (
        read_group(client, stream, group, consumer, claim_idle_ms=claim_idle * 1000, keep_going=keep_going)
        if group
        else read_live(client, stream, keep_going=keep_going)
    )
    try:
        for entry_id, fields in entries:
            click.echo(json.dumps({"stream_id": entry_id, **fields}) if as_json else line_of(fields))
            if group:
                client.xack(stream, group, entry_id)
            seen += 1
            if not keep_going():
                break
    except KeyboardInterrupt:
        pass


# ---- HTTP -----------------------------------------------------------------------------------------
@main.command("serve")
@click.option("--listen", help="HOST:PORT to answer on (default: WATCHER_LISTEN, 127.0.0.1:8080)")
@click.option("--loglevel", default="INFO", show_default=True, help="DEBUG logs every request")
@friendly
def serve(listen: str | None, loglevel: str) -> None:
    """Serve the HTTP API, console and metrics alone (no polling)."""
    from watcher.web.server import parse_listen, serve_forever

    host, port = parse_listen(listen or get_settings().listen)
    serve_forever(host, port, loglevel)


# ---- run -----------------------------------------------------------------------------------------
@main.command("run")
@click.option("--concurrency", type=int, help="worker processes (default: number of CPUs)")
@click.option("--loglevel", default="INFO", show_default=True)
@friendly
def run(concurrency: int | None, loglevel: str) -> None:
    """Run a Celery worker with the beat scheduler embedded, and the HTTP service on WATCHER_LISTEN."""
    import logging

    from watcher import bus, logs
    from watcher.tasks import app
    from watcher.web import server

    settings = get_settings()
    logs.setup(loglevel)  # the lines before Celery's own setup have the same format as every other
    argv = ["worker", "--beat", f"--loglevel={loglevel}"]
    if concurrency:
        argv.append(f"--concurrency={concurrency}")
    http = server.start_beside_worker(settings.listen, loglevel)
    if http is not None:
        where = f"console and API at {server.console_url(settings.listen)}"
        embedded = settings.redis_url == bus.EMBEDDED and not settings.database_url
        token_file = server.first_admin_token(settings.data_dir) if embedded else None
        if token_file is not None:
            where += f" (log in with the admin token written to {token_file})"
        logging.getLogger("watcher").info("%s", where)
    try:
        app.worker_main(argv)
    finally:
        server.stop(http)
        bus.stop_started(only_if_alone=False)


# ---- secrets -------------------------------------------------------------------------------------
@main.group("secrets")
def secrets_group() -> None:
    """The key that encrypts registry credentials at rest."""


@secrets_group.command("rotate")
@friendly
def secrets_rotate() -> None:
    """Re-encrypt every registry's credentials under a new key, while workers keep running.

    With the generated key file, a new key is made and the old one dropped once nothing uses it. With
    WATCHER_SECRET_KEY, first set the new passphrase there and the old one in WATCHER_SECRET_KEY_FALLBACKS,
    run this, then remove the fallback.
    """
    from watcher.registrations import vault
    from watcher.registrations.rotation import rotate

    outcome = rotate()
    count = len(outcome.reencrypted)
    if outcome.key_file is not None:
        click.echo(f"re-encrypted {count} registries under a new key in {outcome.key_file}; the old key is gone")
    elif vault.fallbacks(get_settings()):
        click.echo(
            f"re-encrypted {count} registries under WATCHER_SECRET_KEY; "
            "now remove WATCHER_SECRET_KEY_FALLBACKS from every watcher process"
        )
    else:
        click.echo(f"re-encrypted {count} registries under WATCHER_SECRET_KEY")
    if outcome.unreadable:
        names = ", ".join(repr(n) for n in sorted(outcome.unreadable))
        raise StateError(
            f"registries {names}: credentials cannot be decrypted with any key and were left as they are; "
            "re-enter them with `watcher registry apply`"
        )
