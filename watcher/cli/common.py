"""What every command shares: `friendly` turns any failure into one line on stderr (exit 1), `fail` prints it,
`line_of` is an event's line in `poll` and `events`.

Every module of this package imports little more than click at the top: a command imports what it needs
itself, so `--help` and the commands that only read the state start fast (see `watcher.cli.main`).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from functools import wraps
from typing import NoReturn, ParamSpec, TypeVar

import click

from watcher.cli.failures import check_configuration, debugging, one_line
from watcher.errors import WatcherError
from watcher.settings import get_settings

P = ParamSpec("P")
R = TypeVar("R")
F = TypeVar("F", bound=Callable[..., object])
WORKSPACE_KEY = "watcher.workspace"


def _remember_workspace(ctx: click.Context, _param: click.Parameter, value: str | None) -> None:
    if value is not None:
        ctx.meta[WORKSPACE_KEY] = value  # ctx.meta is shared by the whole command line


def workspace_option(func: F) -> F:
    """`--workspace W`: the workspace the command acts in, on the root group and on each command that acts in
    one (`watcher --workspace W registry list` and `watcher registry list --workspace W` alike)."""
    return click.option(
        "--workspace",
        metavar="W",
        expose_value=False,
        is_eager=True,
        callback=_remember_workspace,
        help="the workspace to act in (default: $WATCHER_WORKSPACE, else `default`)",
    )(func)


def current_workspace() -> str:
    """The workspace this command acts in: `--workspace`, else WATCHER_WORKSPACE, else `default`; a name
    outside the registry-name grammar is one line naming the option."""
    from watcher.registrations.spec import NAME

    ctx = click.get_current_context(silent=True)
    name = ctx.meta.get(WORKSPACE_KEY) if ctx is not None else None
    name = name if name is not None else get_settings().workspace
    if not NAME.match(name):
        raise click.BadParameter(
            f"{name!r} is not a workspace name: use lower-case letters, digits, '.', '_' or '-' (at most 63)",
            param_hint="'--workspace' / WATCHER_WORKSPACE",
        )
    return str(name)


def registry_key_of(name: str) -> str:
    """The key (`watcher.registrations.keys`) of the registry `name` in the command's workspace."""
    from watcher.registrations.keys import registry_key

    return registry_key(current_workspace(), name)


def in_workspace(workspace: str) -> str:
    """` in workspace 'W'` for a workspace other than `default`: an installation without workspaces reads
    the lines it always read."""
    from watcher.schema import DEFAULT_WORKSPACE

    return "" if workspace == DEFAULT_WORKSPACE else f" in workspace {workspace!r}"


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


def line_of(entry: dict[str, str]) -> str:
    moved = f" (was {entry['previous_digest']})" if entry.get("previous_digest") else ""
    return (
        f"{entry['detected_at']} {entry['change']:7} {entry['registry']} "
        f"{entry['repository']}:{entry['tag']} {entry['digest']}{moved}"
    )
