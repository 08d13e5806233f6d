"""The pure heart of watcher: what changed between the stored snapshot and a fresh listing."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum


@dataclass(frozen=True)
class TagState:
    """What a tag points at, and when the registry says it was pushed (None where it does not say)."""

    digest: str
    pushed_at: datetime | None = None


# repository -> tag -> state
Listing = dict[str, dict[str, TagState]]


class ChangeKind(StrEnum):
    ADDED = "added"
    UPDATED = "updated"
    REMOVED = "removed"


@dataclass(frozen=True)
class Change:
    kind: ChangeKind
    repository: str
    tag: str
    digest: str
    previous_digest: str = ""
    pushed_at: datetime | None = None


def diff(old: Listing, new: Listing) -> list[Change]:
    """Every tag added, moved to another digest, or removed; sorted by repository, then tag."""
    changes: list[Change] = []
    for repo in sorted(old.keys() | new.keys()):
        before, after = old.get(repo, {}), new.get(repo, {})
        for tag in sorted(before.keys() | after.keys()):
            was, now = before.get(tag), after.get(tag)
            if was is None and now is not None:
                changes.append(Change(ChangeKind.ADDED, repo, tag, now.digest, "", now.pushed_at))
            elif now is None and was is not None:
                changes.append(Change(ChangeKind.REMOVED, repo, tag, was.digest, "", was.pushed_at))
            elif was is not None and now is not None and was.digest != now.digest:
                changes.append(Change(ChangeKind.UPDATED, repo, tag, now.digest, was.digest, now.pushed_at))
    return changes


def apply(old: Listing, changes: list[Change]) -> Listing:
    """The snapshot that results from applying `changes` to `old` (the inverse check of `diff`)."""
    result = {repo: dict(tags) for repo, tags in old.items()}
    for change in changes:
        tags = result.setdefault(change.repository, {})
        if change.kind is ChangeKind.REMOVED:
            del tags[change.tag]
            if not tags:
                del result[change.repository]
        else:
            tags[change.tag] = TagState(change.digest, change.pushed_at)
    return result
