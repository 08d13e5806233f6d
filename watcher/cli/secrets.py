"""`watcher secrets`: the key that encrypts registry credentials at rest."""

from __future__ import annotations

import click

from watcher.cli.common import friendly
from watcher.errors import StateError
from watcher.settings import get_settings


@click.group("secrets")
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
    if outcome.subscriptions:
        click.echo(f"and the secrets of {len(outcome.subscriptions)} subscriptions")
    lost = []
    if outcome.unreadable:
        names = ", ".join(repr(n) for n in sorted(outcome.unreadable))
        lost.append(
            f"registries {names}: credentials cannot be decrypted with any key and were left as they are; "
            "re-enter them with `watcher registry apply`"
        )
    if outcome.unreadable_subscriptions:
        names = ", ".join(repr(n) for n in sorted(outcome.unreadable_subscriptions))
        lost.append(
            f"subscriptions {names}: secrets cannot be decrypted with any key and were left as they are; "
            "add them anew (`watcher subscription rm`, then `add`)"
        )
    if lost:
        raise StateError("; ".join(lost))
