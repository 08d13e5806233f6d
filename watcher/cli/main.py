"""The `watcher` command: registries, polls, events and the long-running worker.

This module is the root group; each command group lives in its own module (`registry`, `polls`: `poll`,
`status` and `images`, `policies`, `tokens`, `workspaces`, `events`, `service`: `serve` and `run`,
`secrets`) and is added here.

Commands that only read the state (`--help`, `registry list/show`, `status`, `images`, `events`,
`policy list/show`, `token list`) and `poll` must start fast, so these modules import little more than
click: each command imports what it needs itself (the database and the read model; the SDKs, httpx, Redis,
Celery, the web app only where used). `--help` imports no SQLAlchemy at all. tests/cli/test_cli_imports.py
keeps it so. These commands run `heap.holding`: no collections while they import (a poll's turn back on when
it settles).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any, NoReturn

import click

from watcher.cli.common import fail, workspace_option
from watcher.cli.events import events
from watcher.cli.failures import mask
from watcher.cli.policies import policy_group
from watcher.cli.polls import images_command, poll_command, status_command
from watcher.cli.registry import registry
from watcher.cli.secrets import secrets_group
from watcher.cli.service import run, serve
from watcher.cli.subscriptions import subscription_group
from watcher.cli.tokens import token_group
from watcher.cli.workspaces import workspace_group
from watcher.runtime.quick_exit import exit_now


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
@workspace_option
def main() -> None:
    """Watch container registries and emit one CloudEvent per tag change onto a Redis stream."""


for command in (
    registry,
    poll_command,
    status_command,
    images_command,
    policy_group,
    token_group,
    workspace_group,
    events,
    serve,
    run,
    secrets_group,
    subscription_group,
):
    main.add_command(command)


def entry() -> NoReturn:
    """The `watcher` process (its console script, and `python -m watcher`): the command, then an exit without
    the interpreter's teardown (`watcher.runtime.quick_exit`). A caller that runs `main` inside its own
    process (a test's CliRunner) calls `main`, and goes on after it."""
    try:
        main()
    except SystemExit as exc:
        exit_now(exc.code)
    exit_now(0)  # pragma: no cover - main() ends with SystemExit in standalone mode
