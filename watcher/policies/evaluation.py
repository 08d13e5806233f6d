"""Evaluating policies where their repository changes: in the same transaction, and one `selected` event
when a selection changed.

A policy's current selection is stored on its row (`watcher.schema.policies`). The transaction that commits
a repository's new snapshot (`watcher.polling.saving`) hands the repository's tags as now stored to
`reevaluate`, which reads the policies that watch it (one indexed query for the whole group; none watch it:
nothing else is done), selects with `watcher.policies.strategies`, updates each row and returns an event for
each whose selection changed, to be written after the group's tag events. Creating or editing a policy
evaluates it the same way against the stored snapshot (`evaluate_stored`). So a selection and its event
commit together with the change that caused them, exactly once, whichever door (a poll, fan-out, a
webhook's repository poll, the CLI or the API) made the change.

The rows are locked (`FOR UPDATE` on PostgreSQL; SQLite writes one transaction at a time) so that an edit
and a poll never both compare with the same stored selection.

A poll's commit also hands over each repository's rows before the change: a policy whose stored selection
was made on them is then evaluated from that selection and the added and removed tags wherever that is
provably `select`'s answer (`strategies.reselect`: semver, numeric, alphabetical and digest), so a change of
a few tags does not rank a repository's thousand. Creation times that arrive after an evaluation (the
background fill) re-evaluate the newest-build policies that rank them (`reevaluate_described`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Iterable, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol, cast

from sqlalchemy import Connection, bindparam, select, update

from watcher import schema
from watcher.diff import TagState
from watcher.outbox.events import selection_event
from watcher.policies.strategies import UNKNOWN, Policy, Selection, Strategy, reselect
from watcher.policies.strategies import select as select_tag

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from watcher.models import Event

POLICIES = schema.policies
#: more digests than this without a creation time in memory are asked joined to the stored tags (`_created`),
#: not by value (`schema.matching`)
IN_CHUNK = schema.IN_CHUNK
#: creation times kept between evaluations, by digest: an image's metadata is content-addressed (read from
#: bytes verified against the digest), so a digest's creation time never changes once stored, and a
#: repository of 10,000 tags that changes reads only its new digests' (reading all took about as long as
#: the ten selections of the issue's figure: benchmarks/policy_commit.py)
CREATED_LIMIT = 200_000
_created_times: dict[str, datetime | None] = {}


class _Tag(NamedTuple):
    """A tag as `strategies.select` ranks it (a `CandidateLike`): a tuple, ten times cheaper to make for each
    of a repository's tags than the frozen `Candidate`."""

    tag: str
    digest: str
    created: datetime | None
    pushed_at: datetime | None


class Owner(Protocol):
    """The registry a repository belongs to, as a poll's `Target` names it."""

    @property
    def registry_id(self) -> int: ...
    @property
    def registry(self) -> str: ...
    @property
    def url(self) -> str: ...
    @property
    def workspace(self) -> str: ...
    @property
    def workspace_id(self) -> int: ...


def reevaluate(
    session: Session | Connection,
    owner: Owner,
    repositories: Mapping[str, Mapping[str, TagState]],
    now: datetime,
    *,
    before: Mapping[str, Mapping[str, Any]] | None = None,
    only: int | None = None,
    strategy: Strategy | None = None,
) -> list[Event]:
    """Every policy watching one of `repositories` (name -> its tags as stored now), evaluated; its row
    updated; an event for each whose selection changed (by repository, then policy name). `before` holds a
    repository's tags as stored until now (name -> tag -> a row whose [1] is the digest), when the caller
    knows them: a policy whose stored selection was made on those tags is then evaluated from its selection
    and the change alone where that is provably the same (`strategies.reselect`). `only` limits it to the
    policy of that id (an edit), `strategy` to the policies of that strategy."""
    if not repositories:
        return []
    query = select(POLICIES).where(
        POLICIES.c.registry_id == owner.registry_id, POLICIES.c.repository.in_(sorted(repositories))
    )
    if only is not None:
        query = query.where(POLICIES.c.id == only)
    if strategy is not None:
        query = query.where(POLICIES.c.strategy == strategy.value)
    rows = session.execute(query.order_by(POLICIES.c.repository, POLICIES.c.name).with_for_update()).all()
    if not rows:
        return []
    policies = [(row, Policy.stored(row)) for row in rows]
    changes = _Changes(repositories, before or {})
    selections = [changes.reselect(row, policy) for row, policy in policies]
    full = [(row, policy) for (row, policy), found in zip(policies, selections, strict=True) if found is UNKNOWN]
    created = _created(session, owner.registry_id, repositories, full) if full else {}
    ranked = Counter(row.repository for row, _ in full)
    candidates: dict[str, list[_Tag]] = {}
    events: list[Event] = []
    updates: list[dict[str, Any]] = []
    for (row, policy), found in zip(policies, selections, strict=True):
        tags = repositories[row.repository]
        if found is UNKNOWN:
            found = select_tag(policy, _candidates(row.repository, tags, created, ranked, candidates))
        selection = cast(Selection | None, found)
        changed = _changed(row, selection)
        updates.append(_update(row, selection, len(tags), changed, now))
        if changed:
            pushed = tags[selection.tag].pushed_at if selection else None
            events.append(
                selection_event(
                    owner.registry_id,
                    owner.registry,
                    owner.url,
                    row.name,
                    row.repository,
                    (selection.tag, selection.digest, pushed) if selection else None,
                    (row.selected_tag, row.selected_digest or "") if row.selected_tag else None,
                    now,
                    workspace=owner.workspace,
                    workspace_id=owner.workspace_id,
                )
            )
    session.execute(
        update(POLICIES)
        .where(POLICIES.c.id == bindparam("_id"))
        .values(
            selected_tag=bindparam("_tag"),
            selected_digest=bindparam("_digest"),
            selected_at=bindparam("_since"),
            considered=bindparam("_considered"),
            ignored=bindparam("_ignored"),
            evaluated_at=bindparam("_now"),
        ),
        updates,
    )
    return events


def _candidates(
    repository: str,
    tags: Mapping[str, TagState],
    created: Mapping[str, datetime | None],
    ranked: Counter[str],
    kept: dict[str, list[_Tag]],
) -> Iterable[_Tag]:
    """The repository's tags as `select` ranks them: made one at a time when one policy ranks them (tuples
    that live for one comparison cost no garbage collection; a list of 1,000 tuples for each of a hundred
    repositories set off full collections in a poll's process), kept as a list for several."""
    if ranked[repository] == 1:
        return (_Tag(tag, state.digest, created.get(state.digest), state.pushed_at) for tag, state in tags.items())
    if repository not in kept:
        kept[repository] = [
            _Tag(tag, state.digest, created.get(state.digest), state.pushed_at) for tag, state in tags.items()
        ]
    return kept[repository]


class _Changes:
    """Each repository's added and removed tags against its stored rows before the change, worked out once
    for the policies that watch it."""

    def __init__(self, repositories: Mapping[str, Mapping[str, TagState]], before: Mapping[str, Mapping[str, Any]]):
        self.repositories = repositories
        self.before = before
        self.diffs: dict[str, tuple[list[str], list[str]]] = {}

    def reselect(self, row: Any, policy: Policy) -> Selection | object | None:
        """The policy's selection from its stored one and the change (`strategies.reselect`), or UNKNOWN:
        also when its row was not made on the tags before (they are not known here, their count or the
        selected tag's digest differ)."""
        tags = self.repositories[row.repository]
        if policy.strategy is Strategy.DIGEST:
            return reselect(policy, None, tags, (), ())
        old = self.before.get(row.repository)
        if old is None or policy.strategy is Strategy.NEWEST_BUILD or row.considered + row.ignored != len(old):
            return UNKNOWN
        previous = None
        if row.selected_tag is not None:
            kept = old.get(row.selected_tag)
            if kept is None or kept[1] != row.selected_digest:
                return UNKNOWN
            previous = Selection(row.selected_tag, row.selected_digest, row.considered, row.ignored)
        if row.repository not in self.diffs:
            self.diffs[row.repository] = ([t for t in tags if t not in old], [t for t in old if t not in tags])
        added, removed = self.diffs[row.repository]
        return reselect(policy, previous, tags, added, removed)


def evaluate_stored(session: Session | Connection, owner: Owner, repository: str, policy_id: int) -> list[Event]:
    """Evaluate one policy against its repository's stored snapshot (after it was created or edited)."""
    tags = stored_tags(session, owner.registry_id, repository)
    return reevaluate(session, owner, {repository: tags}, schema.utcnow(), only=policy_id)


def reevaluate_described(session: Session | Connection, registry_id: int, digests: Collection[str]) -> list[Event]:
    """After image metadata for `digests` was stored later than their tags (the background fill): the
    `newest-build` policies of the registry whose repositories serve one of them, evaluated again against the
    stored snapshot — the only strategy that ranks by what an image says. Nothing else is read when no such
    policy watches those repositories.

    The policies' rows are locked (an UPDATE: a write lock on SQLite too) before the tags are read, as a
    poll's commit locks them before it evaluates: whichever of the two evaluates last sees the other's
    commit, so a poll's newer tags are never overwritten by this evaluation of older ones."""
    if not digests:
        return []
    built = (POLICIES.c.registry_id == registry_id) & (POLICIES.c.strategy == Strategy.NEWEST_BUILD.value)
    watched = sorted(set(session.execute(select(POLICIES.c.repository).where(built)).scalars()))
    if not watched:
        return []
    repo, tag = schema.repositories.c, schema.tags.c
    serving_query = (
        select(repo.name)
        .distinct()
        .join(schema.tags, tag.repository_id == repo.id)
        .where(repo.registry_id == registry_id, repo.name.in_(watched))
    )
    serving: set[str] = set()
    for query in schema.matching(session, serving_query, tag.digest, sorted(digests)):
        serving.update(session.execute(query).scalars())
    if not serving:
        return []
    now = schema.utcnow()
    session.execute(update(POLICIES).where(built, POLICIES.c.repository.in_(sorted(serving))).values(evaluated_at=now))
    owner = _registry(session, registry_id)
    if owner is None:
        return []
    tags = {name: stored_tags(session, registry_id, name) for name in sorted(serving)}
    return reevaluate(session, owner, tags, now, strategy=Strategy.NEWEST_BUILD)


class _Registry(NamedTuple):
    registry_id: int
    registry: str
    url: str
    workspace: str
    workspace_id: int


def _registry(session: Session | Connection, registry_id: int) -> _Registry | None:
    """The registry of that id as an event names it (an `Owner`); None once removed."""
    reg, ws = schema.registries.c, schema.workspaces.c
    row = session.execute(
        select(reg.id, reg.name, reg.url, ws.name, reg.workspace_id)
        .join(schema.workspaces, ws.id == reg.workspace_id)
        .where(reg.id == registry_id)
    ).first()
    return _Registry(*row) if row is not None else None


def stored_tags(session: Session | Connection, registry_id: int, repository: str) -> dict[str, TagState]:
    """One repository's stored tags (none when the snapshot does not hold it)."""
    repo, tag = schema.repositories.c, schema.tags.c
    rows = session.execute(
        select(tag.name, tag.digest, tag.pushed_at)
        .join(schema.repositories, repo.id == tag.repository_id)
        .where(repo.registry_id == registry_id, repo.name == repository)
    )
    return {name: TagState(digest, pushed_at) for name, digest, pushed_at in rows}


def _created(
    session: Session | Connection,
    registry_id: int,
    repositories: Mapping[str, Mapping[str, TagState]],
    policies: Sequence[tuple[Any, Policy]],
) -> dict[str, datetime | None]:
    """Creation times of the digests `newest-build` policies rank (none read for the other strategies): those
    read before from memory, the others from `images` (verified: any registry's), then from what this
    registry's provider said (`listed_images`: this registry's only); a digest neither knows yet is asked
    again later. Where more than IN_CHUNK are not in memory (a fresh process), each table is asked once,
    joined to the repositories' stored tags, for the digests it knows: a digest it does not know costs no
    bound value and no row (a baseline not yet described, 1,000 such digests a repository)."""
    ranked = {row.repository for row, policy in policies if policy.strategy is Strategy.NEWEST_BUILD}
    digests = {state.digest for name in ranked for state in repositories[name].values()}
    found = {digest: _created_times[digest] for digest in digests if digest in _created_times}
    images, said = schema.images.c, schema.listed_images.c
    unknown = sorted(digests - found.keys())
    joined = len(unknown) > IN_CHUNK
    known = select(images.digest, images.created)
    queries = [_serving(known, images.digest, registry_id, ranked)] if joined else []
    for query in queries or schema.matching(session, known, images.digest, unknown):
        found.update((digest, created) for digest, created in session.execute(query) if digest in digests)
    if len(_created_times) + len(found) > CREATED_LIMIT:
        _created_times.clear()
    _created_times.update(found)
    unsaid = sorted(digests - found.keys())
    listed = select(said.digest, said.created).where(said.registry_id == registry_id, said.created.is_not(None))
    if not unsaid:
        return found
    queries = [_serving(listed, said.digest, registry_id, ranked)] if joined else []
    for query in queries or schema.matching(session, listed, said.digest, unsaid):
        found.update((digest, created) for digest, created in session.execute(query) if digest not in found)
    return found


def _serving(query: Any, column: Any, registry_id: int, repositories: Iterable[str]) -> Any:
    """`query` limited to the digests the repositories' stored tags point at (they are the ranked tags: the
    commit wrote them before its policies are evaluated)."""
    repo, tag = schema.repositories.c, schema.tags.c
    tagged = (
        select(tag.digest)
        .join(schema.repositories, repo.id == tag.repository_id)
        .where(repo.registry_id == registry_id, repo.name.in_(sorted(repositories)))
    )
    return query.where(column.in_(tagged))


def _changed(row: Any, selection: Selection | None) -> bool:
    if selection is None:
        return row.selected_tag is not None
    return (row.selected_tag, row.selected_digest) != (selection.tag, selection.digest)


def _update(row: Any, selection: Selection | None, tags: int, changed: bool, now: datetime) -> dict[str, Any]:
    """The row's new values: a policy that selects nothing considered no tag and ignored them all."""
    return {
        "_id": row.id,
        "_tag": selection.tag if selection else None,
        "_digest": selection.digest if selection else None,
        "_since": now if changed else row.selected_at,
        "_considered": selection.considered if selection else 0,
        "_ignored": selection.ignored if selection else tags,
        "_now": now,
    }
