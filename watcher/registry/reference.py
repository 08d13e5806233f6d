"""What a valid OCI name is: repository names, tags and digests, as the OCI grammars define them.

Registry data is checked against these before it reaches a request URL, the snapshot or an event.
Repository names follow distribution's reference grammar (lowercase path components joined by '/', at
most 255 characters); tags are `[A-Za-z0-9_][A-Za-z0-9._-]{0,127}`; digests are `algorithm:encoded` as the
OCI image-spec writes them, with sha256 and sha512 checked exactly (lowercase hex of their length) and
any other algorithm accepted when well-formed and short enough to store. Each check takes any value (a
registry may send numbers, lists or null where a name belongs) and says why it is not valid, or None.
Lengths are checked before any pattern, so a pattern never sees a long input.
"""

from __future__ import annotations

import re
import reprlib
from urllib.parse import quote

from watcher.schema import DIGEST_LENGTH  # not the ORM: the quick commands read tags through it

REPOSITORY_LENGTH = 255
TAG_LENGTH = 128

_PATH_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*"
_REPOSITORY = re.compile(rf"{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*")
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}")
_REPOSITORY_SHAPE = "is not lowercase path components ([a-z0-9] joined by '.', '_', '__' or '-') separated by '/'"
_TAG_SHAPE = "has characters other than [A-Za-z0-9._-] or starts with '.' or '-'"
_DIGEST = re.compile(r"[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+")  # algorithm:encoded
_DIGEST_SHAPE = "is not algorithm:encoded (e.g. sha256:<64 hex digits>)"
#: algorithms whose encoded part is known exactly: lowercase hex of this many digits
EXACT_ALGORITHMS = {"sha256": 64, "sha512": 128}
_LOWER_HEX = re.compile(r"[a-f0-9]+")
#: how much of a bad value a message shows
SHOWN_LENGTH = 80
_SHORT = reprlib.Repr()
_SHORT.maxstring = SHOWN_LENGTH
_SHORT.maxlevel, _SHORT.maxlist, _SHORT.maxdict, _SHORT.maxother = 2, 4, 4, 40


def repository_problem(value: object) -> str | None:
    """Why `value` is not a valid repository name, or None when it is."""
    return _name_problem(value, REPOSITORY_LENGTH, _REPOSITORY, _REPOSITORY_SHAPE)


def tag_problem(value: object) -> str | None:
    """Why `value` is not a valid tag, or None when it is."""
    return _name_problem(value, TAG_LENGTH, _TAG, _TAG_SHAPE)


def _name_problem(value: object, length: int, pattern: re.Pattern[str], shape: str) -> str | None:
    if not isinstance(value, str):
        return f"is a JSON {json_type(value)}, not a string"
    if len(value) > length:
        return f"is longer than {length} characters"
    return None if pattern.fullmatch(value) else shape


def digest_problem(value: object) -> str | None:
    """Why `value` is not a valid digest, or None when it is."""
    problem = _name_problem(value, DIGEST_LENGTH, _DIGEST, _DIGEST_SHAPE)
    if problem is not None or not isinstance(value, str):
        return problem
    algorithm, _, encoded = value.partition(":")
    length = EXACT_ALGORITHMS.get(algorithm)
    if length is not None and (len(encoded) != length or not _LOWER_HEX.fullmatch(encoded)):
        return f"is not {algorithm}: followed by {length} lowercase hex digits"
    return None


def is_repository(value: object) -> bool:
    return repository_problem(value) is None


def is_tag(value: object) -> bool:
    return tag_problem(value) is None


def is_digest(value: object) -> bool:
    return digest_problem(value) is None


def shown(value: object) -> str:
    """A bad value as a message shows it: its repr, cut short (a registry may send megabytes)."""
    try:
        text = _SHORT.repr(value)
    except (ValueError, RecursionError):  # an int with too many digits, a deeply nested value
        text = f"<{json_type(value)}>"
    return text if len(text) <= SHOWN_LENGTH else text[: SHOWN_LENGTH - 1] + "…"


def json_type(value: object) -> str:
    """The JSON name of a decoded value's type, for messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, list | tuple):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def repository_path(repository: str) -> str:
    """A repository name as a URL path: its '/' kept, anything else escaped (valid names need none)."""
    return quote(repository, safe="/")
