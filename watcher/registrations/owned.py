"""What a workspace owns by name (registries, policies, subscriptions): the name grammar, and removing one.

Names are the registry-name grammar (`watcher.registrations.spec.NAME`: lower case, at most 63), unique
within their workspace; an object of another workspace is missing exactly like one that does not exist.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy import Executable, Table, delete
from sqlalchemy.exc import IntegrityError

from watcher.errors import InputError
from watcher.registrations.spec import NAME

if TYPE_CHECKING:
    from sqlalchemy.orm import Session


def check_name(value: object, what: str, field: str = "name") -> str:
    """`value` if it is a valid name, else one InputError line naming `what` and the grammar."""
    if not isinstance(value, str) or not NAME.match(value):
        raise InputError(
            f"{what} {shown(value)} is not valid: use lower-case letters, digits, '.', '_' or '-', starting "
            "with a letter or digit (at most 63)",
            field=field,
        )
    return value


def insert_named(session: Session, statement: Executable, taken: InputError) -> Any:
    """Run the INSERT of a named row in a savepoint: when another transaction took the name meanwhile, the
    unique constraint (not a read made before) decides, and the answer is `taken`, one line."""
    try:
        with session.begin_nested():
            return session.execute(statement)
    except IntegrityError:
        raise taken from None


def remove_named(session: Session, table: Table, name: str, *, workspace_id: int) -> bool:
    """Delete the workspace's row of `table` named `name`; whether there was one."""
    statement = delete(table).where(table.c.workspace_id == workspace_id, table.c.name == name)
    return bool(session.execute(statement).rowcount)  # type: ignore[attr-defined]


def shown(value: object) -> str:
    """A value for an error line: quoted when it is short text, else just "given" (never a long dump)."""
    return repr(value) if isinstance(value, str) and len(value) <= 80 else "given"
