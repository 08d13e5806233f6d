"""Which repositories and tags of a registry are watched: repository globs and tag regexes."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Any

from watcher.diff import Listing
from watcher.errors import InputError

_GLOB_CHARS = set("*?[")


@dataclass(frozen=True)
class Scope:
    repositories: tuple[str, ...] = ()
    include_tags: str = ""
    exclude_tags: str = ""
    _include: re.Pattern[str] | None = field(default=None, init=False, repr=False, compare=False)
    _exclude: re.Pattern[str] | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
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


def compile_pattern(pattern: str, option: str) -> re.Pattern[str] | None:
    if not pattern:
        return None
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise InputError(f"{option} {pattern!r} is not a valid regular expression: {exc}") from None
