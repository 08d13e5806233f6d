"""`watcher secrets rotate`: every stored credential re-encrypted under a new key, with no downtime: the
registries' credentials and webhook secrets, and the subscriptions' secrets.

With the generated key file, the rotation writes it as "new, then old" (both readable, the new one
encrypting), re-encrypts the rows in small transactions, waits a moment for readers holding a row they read
before its re-encryption, and then writes the file with the new key alone. With WATCHER_SECRET_KEY, the
operator has already made the new passphrase the key and the old one a fallback; the rotation re-encrypts,
and the operator then drops the fallback. Each row is swapped only if it still holds what was read (a save
meanwhile wins), and passes repeat until no row is left under another key.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet
from sqlalchemy import Engine, Table, select, update

from watcher import schema
from watcher.db import get_engine, session_scope
from watcher.errors import StateError
from watcher.registrations import vault
from watcher.runtime.private_files import file_lock, write_private
from watcher.settings import Settings, get_settings

BATCH = 50  # rows per transaction: writers wait at most one short transaction
GRACE_SECONDS = 2.0  # how long a reader may hold a row it read before its re-encryption
MAX_ROUNDS = 10


@dataclass
class Rotation:
    reencrypted: set[str] = field(default_factory=set)
    unreadable: set[str] = field(default_factory=set)
    #: the subscriptions whose secret was re-encrypted, and those no key opens (by `workspace/name`)
    subscriptions: set[str] = field(default_factory=set)
    unreadable_subscriptions: set[str] = field(default_factory=set)
    #: where the key lives now: the key file, or None when it is WATCHER_SECRET_KEY
    key_file: Path | None = None


SUBSCRIPTIONS = schema.subscriptions


def rotate(
    settings: Settings | None = None,
    engine: Engine | None = None,
    *,
    batch: int = BATCH,
    grace_seconds: float = GRACE_SECONDS,
) -> Rotation:
    """Re-encrypt every registry's credentials and every subscription's secret under the newest key; see the
    module docstring."""
    settings = settings or get_settings()
    engine = engine or get_engine()
    if settings.secret_key:
        keys = vault.keyring(settings)
        return _reencrypt_until_clean(engine, keys, batch, grace_seconds)
    path = vault.key_file(settings)
    with file_lock(path.with_name(path.name + ".lock")):  # one rotation at a time per data dir
        old = vault.read_key_file(settings)
        new = Fernet.generate_key().decode()
        write_private(path, "\n".join([new, *old]) + "\n")
        outcome = _reencrypt_until_clean(engine, vault.keyring(settings), batch, grace_seconds)
        write_private(path, new + "\n")
    outcome.key_file = path
    return outcome


def _reencrypt_until_clean(engine: Engine, keys: vault.Keyring, batch: int, grace_seconds: float) -> Rotation:
    """Passes until a pass finds nothing to do both before and after the grace period."""
    outcome = Rotation()
    for _ in range(MAX_ROUNDS):
        while _passes(engine, keys, batch, outcome):
            pass
        time.sleep(grace_seconds)  # a writer that read the key before the rotation began commits meanwhile
        if not _passes(engine, keys, batch, outcome):
            return outcome
    raise StateError(
        "credentials kept being saved under an old key during the rotation; run `watcher secrets rotate` again"
    )


@dataclass(frozen=True)
class Secrets:
    """Where secrets lie in one table: the columns that hold them, what a row is called in the outcome, and
    the outcome's sets for the rows re-encrypted and those no key opens."""

    table: Table
    columns: tuple[str, ...]
    label: Any  # a column expression: the row's name as the outcome shows it
    reencrypted: str
    unreadable: str


REGISTRY_SECRETS = Secrets(
    schema.registries, ("credentials", "webhook_secret"), schema.registries.c.name, "reencrypted", "unreadable"
)
SUBSCRIPTION_SECRETS = Secrets(
    SUBSCRIPTIONS,
    ("secret",),
    select(schema.workspaces.c.name + "/" + SUBSCRIPTIONS.c.name)
    .where(schema.workspaces.c.id == SUBSCRIPTIONS.c.workspace_id)
    .scalar_subquery(),
    "subscriptions",
    "unreadable_subscriptions",
)


def _passes(engine: Engine, keys: vault.Keyring, batch: int, outcome: Rotation) -> bool:
    """One pass over every table that holds secrets (each of them, always); True if any row needed it."""
    needed = [_one_pass(engine, keys, batch, outcome, where) for where in (REGISTRY_SECRETS, SUBSCRIPTION_SECRETS)]
    return any(needed)


def _one_pass(engine: Engine, keys: vault.Keyring, batch: int, outcome: Rotation, where: Secrets) -> bool:
    """Re-encrypt the secrets of `where` not under the first key, `batch` rows a transaction; True if any row
    needed it."""
    table, needed = where.table, False
    unreadable: set[str] = set()
    last_id = 0
    while True:
        with session_scope(engine) as session:
            rows = session.execute(
                select(table.c.id, where.label, *(table.c[c] for c in where.columns))
                .where(table.c.id > last_id)
                .order_by(table.c.id)
                .limit(batch)
            ).all()
            for row_id, name, *tokens in rows:
                for column, token in zip(where.columns, tokens, strict=True):
                    if not token or keys.is_current(token):
                        continue
                    try:
                        fresh = keys.encrypt(keys.decrypt(token))
                    except vault.Undecryptable:
                        unreadable.add(name)
                        continue
                    needed = True
                    swapped = session.execute(
                        update(table).where(table.c.id == row_id, table.c[column] == token).values({column: fresh})
                    )
                    if swapped.rowcount:  # type: ignore[attr-defined]
                        getattr(outcome, where.reencrypted).add(name)  # else saved meanwhile: the next pass looks
        if len(rows) < batch:
            setattr(outcome, where.unreadable, unreadable)
            return needed
        last_id = rows[-1][0]
