"""Which repositories and tags of a registry are watched: repository globs and tag regexes.

Tag filters are RE2 expressions (the syntax Go's `regexp`, Flux and Argo CD use): matching takes time
linear in the tag, whatever the pattern, so `(a+)+$` cannot hang a poll. A pattern RE2 does not accept
(look-arounds, back-references) is refused when the registry is added. A repository named literally must
be a valid OCI repository name: it goes straight into request URLs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Any, Protocol

import re2

from watcher.diff import Listing
from watcher.errors import InputError
from watcher.registry.reference import repository_problem

_GLOB_CHARS = set("*?[")


class TagPattern(Protocol):
    def search(self, text: str) -> object | None: ...


@dataclass(frozen=True)
class Scope:
    repositories: tuple[str, ...] = ()
    include_tags: str = ""
    exclude_tags: str = ""
    _include: TagPattern | None = field(default=None, init=False, repr=False, compare=False)
    _exclude: TagPattern | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for pattern in self.repositories:
            problem = None if _GLOB_CHARS & set(pattern) else repository_problem(pattern)
            if problem is not None:
                raise InputError(f"--repository {pattern!r} is not a valid OCI repository name: it {problem}")
        object.__setattr__(self, "_include", compile_pattern(self.include_tags, "--include-tags"))
        object.__setattr__(self, "_exclude", compile_pattern(self.exclude_tags, "--exclude-tags"))

    @classmethod
    def from_options(cls, options: dict[str, Any]) -> Scope:
        return cls(
            tuple(options.get("repositories") or ()),
            options.get("include_tags") or "",
            options.get("exclude_tags") or "",
        )

    def literal_repositories(self) -> list[str] | None:
        """The repositories by name when every pattern is literal: no catalog is needed to find them."""
        if not self.repositories or any(_GLOB_CHARS & set(p) for p in self.repositories):
            return None
        return list(self.repositories)

    def wants_repository(self, name: str) -> bool:
        return not self.repositories or any(fnmatchcase(name, p) for p in self.repositories)

    def wants_tag(self, tag: str) -> bool:
        if self._include is not None and not self._include.search(tag):
            return False
        return not (self._exclude is not None and self._exclude.search(tag))

    def restrict(self, listing: Listing) -> Listing:
        """The part of a listing in scope; repositories left with no tag drop out."""
        result: Listing = {}
        for repo, tags in listing.items():
            if not self.wants_repository(repo):
                continue
            kept = {tag: state for tag, state in tags.items() if self.wants_tag(tag)}
            if kept:
                result[repo] = kept
        return result


def compile_pattern(pattern: str, option: str) -> TagPattern | None:
    """The RE2 pattern given as `option` (`--include-tags`): one InputError line, its `field` the option's
    name, when RE2 refuses it."""
    if not pattern:
        return None
    options = re2.Options()
    options.log_errors = False  # the error is raised, and reaches the user once as one line
    try:
        compiled: TagPattern = re2.compile(pattern, options)
    except re2.error as exc:
        reason = exc.args[0].decode(errors="replace") if exc.args and isinstance(exc.args[0], bytes) else str(exc)
        reason = " ".join(reason.splitlines())  # RE2 quotes the pattern raw: a newline in it must not end the line
        hint = (
            " (RE2 has no look-arounds or back-references)" if "perl operator" in reason or "escape" in reason else ""
        )
        raise InputError(
            f"{option} {pattern!r} is not a valid RE2 regular expression: {reason}{hint}",
            field=option.lstrip("-").replace("-", "_"),
        ) from None
    return compiled
