"""Which tag of a repository a policy selects: the strategies of Flux's ImagePolicy and Argo CD Image Updater.

Pure: no database, no I/O, so every door (a poll, the API, a test) selects the same way from the same tags.

- `semver RANGE`: the highest version the range admits. Ranges are npm's syntax (`^1.2`, `~1.2.3`,
  `>=1.0 <2.0`, `1.2.x`, `1.2.3 - 2.0`, `||`), read and compared by `nodesemver`, a port of npm's own
  `node-semver`; a comma between comparators means "and", as in Masterminds' syntax (Flux, Argo CD).
  Tags must be full SemVer 2.0 (`1.2` is not a version); one leading `v` is accepted, as Flux and Argo CD
  do. Pre-releases: npm's rule (a pre-release is admitted only when a comparator of the range names a
  pre-release of the same `major.minor.patch`, so `>=1.2.3-rc.1` admits `1.2.3-rc.2`, not `1.3.0-rc.1`).
  With `prerelease` set, a pre-release is also admitted when the range admits it compared plainly *and*
  admits its release (`^1.2` admits `1.3.0-rc.1`, never `2.0.0-rc.1`). Build metadata plays no part in
  the order; two tags of the same precedence (`1.2.3`, `v1.2.3`, `1.2.3+b.7`) are told apart by the tag
  itself, the greatest in code-point order winning, so the choice never depends on the listing's order.
- `numeric asc|desc`: the key read as a decimal number (`-?[0-9]+(.[0-9]+)?`, compared exactly, so a
  nanosecond timestamp does not lose digits to a float); anything else is ignored. `asc` selects the
  highest, `desc` the lowest, as Flux does.
- `alphabetical asc|desc`: code-point order of the key (CalVer, `RELEASE.2024-01-01T00-00-00Z`); `asc`
  selects the last.
- `newest-build`: the latest creation time (or, where the image says none, its push time), then the latest
  push time; a tag with neither is ignored. A time without a zone is taken as UTC.
- `digest TAG`: the one mutable tag, at its current digest.

`filter` is an RE2 pattern (searched, not anchored, as Flux does) that a tag must match; `extract` builds
the sort key from its groups like Go's `Regexp.Expand` (`$ts`, `${ts}`, `$1`, `$$` for a literal `$`).
Ties in any strategy are broken by the tag, so a selection is a function of the set of tags alone.

Speed: a tag's key (its filter match, extracted text, parsed version, and a range's answer for it) is kept
in a bounded dict between selections, as the same tags come back at every change of a repository and
several policies read one repository; a version no greater than the best admitted so far is never tested
against the range. benchmarks/policy_select measures it (10,000 tags: a few ms a policy once the keys are
known, about 40 to 50 ms the first time).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any, Protocol, cast

import nodesemver

from watcher.errors import InputError
from watcher.registry.reference import tag_problem

MAX_RANGE_LENGTH = 256  # npm's own bound on a range; with blanks collapsed the library reads it in a few ms
MAX_PATTERN_LENGTH = 1024  # as a registration's tag regexes
MAX_EXTRACT_LENGTH = 256
_CACHE_LIMIT = 200_000  # parsed tags kept between selections; a dict of that size is a few tens of MB at most

_NUMBER = re.compile(r"-?[0-9]+(?:\.[0-9]+)?")
_REFERENCE = re.compile(r"\$(?:\{(?P<braced>[A-Za-z0-9_]+)\}|(?P<bare>[A-Za-z0-9_]+)|(?P<dollar>\$))")
_EARLIEST = datetime.min.replace(tzinfo=UTC)
_ORDERS = ("asc", "desc")


class Strategy(StrEnum):
    SEMVER = "semver"
    NUMERIC = "numeric"
    ALPHABETICAL = "alphabetical"
    NEWEST_BUILD = "newest-build"
    DIGEST = "digest"


class CandidateLike(Protocol):
    """What `select` reads of a tag: the read model's rows fit without a copy."""

    @property
    def tag(self) -> str: ...
    @property
    def digest(self) -> str: ...
    @property
    def created(self) -> datetime | None: ...
    @property
    def pushed_at(self) -> datetime | None: ...


@dataclass(frozen=True, slots=True)
class Candidate:
    tag: str
    digest: str
    created: datetime | None = None
    pushed_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Selection:
    """The selected tag; `considered` tags took part in the ranking, `ignored` ones were filtered out or have
    no key for the strategy (not a version, not a number, no build time). They add up to the tags given."""

    tag: str
    digest: str
    considered: int
    ignored: int


class _Pattern(Protocol):
    groups: int
    groupindex: Mapping[str, int]

    def search(self, text: str) -> Any: ...


@dataclass(frozen=True)
class Policy:
    """One strategy with its argument, and the optional filter, extract and pre-release flag; checked when
    built, so a policy that exists can always select."""

    strategy: Strategy
    argument: str = ""
    filter: str = ""
    extract: str = ""
    prerelease: bool = False
    _pattern: _Pattern | None = field(default=None, init=False, repr=False, compare=False)
    _template: tuple[str | tuple[str | int], ...] | None = field(default=None, init=False, repr=False, compare=False)
    _range: Any = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        try:
            strategy = Strategy(self.strategy)
        except ValueError:
            raise InputError(
                f"unknown strategy {self.strategy!r}: one of {', '.join(s.value for s in Strategy)}", field="strategy"
            ) from None
        object.__setattr__(self, "strategy", strategy)
        for name, option in (("argument", strategy.value), ("filter", "filter"), ("extract", "extract")):
            value = getattr(self, name)
            if not isinstance(value, str):
                raise InputError(
                    f"--{option} must be text (quote it in YAML), not {type(value).__name__}", field=option
                )
            if "\x00" in value:  # no tag holds one, and PostgreSQL could not even store it
                raise InputError(f"--{option} must not contain a NUL character", field=option)
            if not value.isascii():
                try:
                    value.encode()
                except UnicodeEncodeError:
                    raise InputError(f"--{option} is not valid Unicode text", field=option) from None
        if not isinstance(self.prerelease, bool):
            raise InputError("--prerelease is true or false", field="prerelease")
        option = f"--{strategy.value}"
        if strategy is Strategy.SEMVER:
            object.__setattr__(self, "_range", _semver_range(self.argument))
        elif strategy in (Strategy.NUMERIC, Strategy.ALPHABETICAL):
            if self.argument not in _ORDERS:
                raise InputError(f"{option} takes asc or desc, not {self.argument!r}", field=strategy.value)
        elif strategy is Strategy.NEWEST_BUILD:
            if self.argument:
                raise InputError(f"{option} takes no argument, not {self.argument!r}", field=strategy.value)
        else:
            problem = tag_problem(self.argument)
            if problem is not None:
                raise InputError(f"{option} {self.argument!r} is not a valid tag: it {problem}", field=strategy.value)
        if self.prerelease and strategy is not Strategy.SEMVER:
            raise InputError("--prerelease applies to --semver only", field="prerelease")
        if self.filter:
            if strategy is Strategy.DIGEST:
                raise InputError("--digest follows one tag: --filter has no use there", field="filter")
            if len(self.filter) > MAX_PATTERN_LENGTH:
                raise InputError(f"--filter is longer than {MAX_PATTERN_LENGTH} characters", field="filter")
            from watcher.registrations.scope import compile_pattern  # RE2, only where a filter is given

            object.__setattr__(self, "_pattern", cast(_Pattern, compile_pattern(self.filter, "--filter")))
        if self.extract:
            if strategy in (Strategy.DIGEST, Strategy.NEWEST_BUILD):
                raise InputError(f"{option} sorts by no key: --extract has no use there", field="extract")
            if self._pattern is None:
                raise InputError("--extract takes its groups from --filter: give a --filter", field="extract")
            object.__setattr__(self, "_template", _template(self.extract, self._pattern))

    @classmethod
    def from_options(
        cls,
        *,
        semver: str | None = None,
        numeric: str | None = None,
        alphabetical: str | None = None,
        newest_build: bool = False,
        digest: str | None = None,
        filter: str | None = None,
        extract: str | None = None,
        prerelease: bool = False,
    ) -> Policy:
        """The policy the CLI's options (or an API body, an `apply` entry) describe: exactly one strategy."""
        given = [
            (strategy, value)
            for strategy, value in (
                (Strategy.SEMVER, semver),
                (Strategy.NUMERIC, numeric),
                (Strategy.ALPHABETICAL, alphabetical),
                (Strategy.NEWEST_BUILD, "" if newest_build else None),
                (Strategy.DIGEST, digest),
            )
            if value is not None and value is not False
        ]
        if not given:
            raise InputError(
                "a policy needs one strategy: --semver RANGE, --numeric asc|desc, --alphabetical asc|desc, "
                "--newest-build or --digest TAG",
                field="strategy",
            )
        if len(given) > 1:
            names = " and ".join(f"--{strategy.value}" for strategy, _ in given)
            raise InputError(f"a policy takes one strategy, not {names}", field="strategy")
        strategy, argument = given[0]
        return cls(strategy, argument, filter or "", extract or "", prerelease)

    @classmethod
    def stored(cls, row: Any) -> Policy:
        """The policy a row of `watcher.schema.policies` describes (checked again: rows are written from
        valid ones only)."""
        return cls(row.strategy, row.argument, row.filter, row.extract, row.prerelease)

    def options(self) -> dict[str, Any]:
        """The inverse of `from_options`: what to store, or show, to build this policy again."""
        result: dict[str, Any] = {self.strategy.value.replace("-", "_"): self.argument or True}
        if self.filter:
            result["filter"] = self.filter
        if self.extract:
            result["extract"] = self.extract
        if self.prerelease:
            result["prerelease"] = True
        return result

    def describe(self) -> str:
        """One line for a person: `semver ^1.2 (pre-releases) filter '^rel-' extract '$v'`."""
        parts = [self.strategy.value] + ([self.argument] if self.argument else [])
        if self.prerelease:
            parts.append("(pre-releases)")
        if self.filter:
            parts.append(f"filter {self.filter!r}")
        if self.extract:
            parts.append(f"extract {self.extract!r}")
        return " ".join(parts)


def _semver_range(text: str) -> Any:
    if not text.strip():
        raise InputError("--semver needs a range (`*` admits any version)", field="semver")
    if len(text) > MAX_RANGE_LENGTH:
        raise InputError(f"--semver is longer than {MAX_RANGE_LENGTH} characters", field="semver")
    # One space between comparators: the library's trimming regexes are quadratic in runs of blanks.
    normal = " ".join(text.replace(",", " ").split())
    try:
        return nodesemver.make_range(normal, False)
    except (ValueError, TypeError, IndexError, AttributeError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InputError(
            f"--semver {text!r} is not a valid range ({reason}); npm syntax: ^1.2, ~1.2.3, >=1.0 <2.0, 1.2.x",
            field="semver",
        ) from None


def _template(extract: str, pattern: _Pattern) -> tuple[str | tuple[str | int], ...]:
    """`extract` compiled against the filter's groups: a literal is a str, a group a 1-tuple (name or number)."""
    if len(extract) > MAX_EXTRACT_LENGTH:
        raise InputError(f"--extract is longer than {MAX_EXTRACT_LENGTH} characters", field="extract")
    parts: list[str | tuple[str | int]] = []
    position = 0
    for match in _REFERENCE.finditer(extract):
        literal = extract[position : match.start()]
        if "$" in literal:
            break
        parts.append(literal)
        position = match.end()
        if match["dollar"]:
            parts.append("$")
            continue
        name = match["braced"] or match["bare"]
        if name.isdigit():
            number = int(name)
            if number > pattern.groups:
                raise InputError(
                    f"--extract {extract!r} names group {number}; --filter has {pattern.groups}", field="extract"
                )
            parts.append((number,))
        elif name in pattern.groupindex:
            parts.append((name,))
        else:
            known = ", ".join(sorted(pattern.groupindex)) or "none"
            raise InputError(
                f"--extract {extract!r} names group {name!r}; --filter's named groups: {known}", field="extract"
            )
    rest = extract[position:]
    if "$" in rest:
        raise InputError(
            f"--extract {extract!r} has a '$' that names no group: write $name, ${{name}} or $$ for a '$'",
            field="extract",
        )
    parts.append(rest)
    return tuple(part for part in parts if part != "")


# Keys are kept between selections: the same tags come back at every change of a repository, and several
# policies read one repository. Each cache is a plain dict, emptied whole when it reaches _CACHE_LIMIT.
_INVALID = object()  # filtered out, or no key for the strategy
_MISSING = object()
_versions: dict[str, Any] = {}  # text -> the library's version, or _INVALID (shared by every range)
_keys: dict[tuple[str, str, str, str], Any] = {}  # (kind, filter, extract, tag) -> the strategy's key
_V_DIGITS = frozenset(f"v{digit}" for digit in "0123456789")


def _version(text: str) -> Any:
    found = _versions.get(text)
    if found is None:
        try:
            found = nodesemver.make_semver(text, False) if text[:1].isdigit() or text[:2] in _V_DIGITS else _INVALID
        except ValueError:
            found = _INVALID
        if len(_versions) >= _CACHE_LIMIT:
            _versions.clear()
        _versions[text] = found
    return found


def _key(policy: Policy, kind: str, tag: str) -> Any:
    """The sort key of one tag for `kind` ("text", "number", or "semver …"), or _INVALID."""
    text = tag
    pattern = policy._pattern
    if pattern is not None:
        match = pattern.search(tag)
        if match is None:
            return _INVALID
        template = policy._template
        if template is not None:
            text = "".join(part if isinstance(part, str) else (match.group(part[0]) or "") for part in template)
    if kind == "text":
        return text
    if kind == "number":
        if _NUMBER.fullmatch(text) is None:
            return _INVALID
        # int is the quicker; Decimal has no digit limit (an extract can repeat a group well past int's 4300)
        return int(text) if "." not in text and len(text) <= 1000 else Decimal(text)
    version = _version(text)
    if version is _INVALID:
        return _INVALID
    # [the release triple (the library orders by it first, numerically), the version, admitted: None until asked]
    return [(version.major, version.minor, version.patch), version, None]


def _cached_key(policy: Policy, kind: str, tag: str) -> Any:
    if policy._pattern is None and kind == "text":
        return tag
    cache_key = (kind, policy.filter, policy.extract, tag)
    found = _keys.get(cache_key, _MISSING)
    if found is _MISSING:
        found = _key(policy, kind, tag)
        if len(_keys) >= _CACHE_LIMIT:
            _keys.clear()
        _keys[cache_key] = found
    return found


def _known(
    policy: Policy, kind: str, candidates: Iterable[CandidateLike], seen: list[int]
) -> Iterator[tuple[CandidateLike, Any]]:
    """The candidates with a key for `kind`, each with its key; `seen[0]` counts them all."""
    for candidate in candidates:
        seen[0] += 1
        found = _cached_key(policy, kind, candidate.tag)
        if found is not _INVALID:
            yield candidate, found


def select(policy: Policy, candidates: Iterable[CandidateLike]) -> Selection | None:
    """The candidate `policy` selects, with how many took part; None when none qualifies."""
    strategy = policy.strategy
    if strategy is Strategy.DIGEST:
        return _select_digest(policy.argument, candidates)
    if strategy is Strategy.SEMVER:
        return _select_semver(policy, candidates)
    kind = _kind(policy)
    descending = policy.argument == "desc"
    newest_build = strategy is Strategy.NEWEST_BUILD
    best: CandidateLike | None = None
    best_key: Any = None
    seen = [0]
    considered = 0
    for candidate, found in _known(policy, kind, candidates, seen):
        tag = candidate.tag
        key: tuple[Any, ...]
        if newest_build:
            when = _utc(candidate.created) or _utc(candidate.pushed_at)
            if when is None:
                continue
            key = (when, _utc(candidate.pushed_at) or _EARLIEST, tag)
        else:
            key = (found, tag)
        considered += 1
        if best is None or (key < best_key if descending else key > best_key):
            best, best_key = candidate, key
    if best is None:
        return None
    return Selection(best.tag, best.digest, considered, seen[0] - considered)


class _Unknown:
    """`reselect`'s answer when the changes alone do not decide: rank every tag (`select`)."""

    def __repr__(self) -> str:
        return "UNKNOWN"


UNKNOWN = _Unknown()


class HasDigest(Protocol):
    @property
    def digest(self) -> str: ...


def reselect(
    policy: Policy,
    previous: Selection | None,
    tags: Mapping[str, HasDigest],
    added: Iterable[str],
    removed: Iterable[str],
) -> Selection | _Unknown | None:
    """What `select` would answer for `tags`, from `previous` — its answer for the tags before a change that
    added the tags `added` and removed `removed` (any other tag may have moved to another digest) — without
    ranking the tags the change left alone; UNKNOWN where the change alone cannot tell.

    Why it is the same answer: `semver`, `numeric` and `alphabetical` rank a tag by its name alone (a moved
    tag keeps its rank), and each selects the greatest of the tags it admits in a total order. So while the
    previous selection is still there, the greatest of it and the added tags is the greatest of all; the
    counts change by the added and removed tags that have a key. With nothing selected before, nothing is
    selected while no added tag qualifies (then `select`'s counts are 0 and every tag). `digest` is one
    lookup. `newest-build` ranks by what each digest's image says, which may have become known since:
    always UNKNOWN. (tests/policies/test_reselect.py checks the equality on generated changes.)"""
    strategy = policy.strategy
    total = len(tags)
    if strategy is Strategy.DIGEST:
        state = tags.get(policy.argument)
        return Selection(policy.argument, state.digest, 1, total - 1) if state is not None else None
    if strategy is Strategy.NEWEST_BUILD:
        return UNKNOWN
    fresh = [Candidate(tag, tags[tag].digest) for tag in added]
    if previous is None:
        return None if select(policy, fresh) is None else UNKNOWN
    kept = tags.get(previous.tag)
    if kept is None:
        return UNKNOWN
    best = select(policy, [Candidate(previous.tag, kept.digest), *fresh])
    if best is None:  # the stored selection does not qualify: not `select`'s answer for the tags before
        return UNKNOWN
    considered = previous.considered + best.considered - 1 - _considered(policy, removed)
    if not 0 < considered <= total:
        return UNKNOWN
    return Selection(best.tag, best.digest, considered, total - considered)


def _considered(policy: Policy, tags: Iterable[str]) -> int:
    """How many of `tags` have a key for the policy (`semver`, `numeric`, `alphabetical`)."""
    kind = _kind(policy)
    return sum(1 for tag in tags if _cached_key(policy, kind, tag) is not _INVALID)


def _kind(policy: Policy) -> str:
    """What a tag's cached key is for the strategy: "text", "number", or "semver [+]RANGE"."""
    if policy.strategy is Strategy.SEMVER:
        return f"semver {'+' if policy.prerelease else ''}{policy.argument}"
    return "number" if policy.strategy is Strategy.NUMERIC else "text"


def _select_semver(policy: Policy, candidates: Iterable[CandidateLike]) -> Selection | None:
    """The greatest admitted version: a candidate no greater than the best so far is never tested against
    the range, and a test's answer is kept with the tag's key."""
    kind = _kind(policy)
    admits = _admits(policy)
    best: CandidateLike | None = None
    best_triple: tuple[int, int, int] = (-1, -1, -1)
    best_version: Any = None
    seen = [0]
    considered = 0
    for candidate, found in _known(policy, kind, candidates, seen):
        tag = candidate.tag
        considered += 1
        triple, version, admitted = found
        if triple < best_triple:
            continue
        if triple == best_triple:
            order = version.compare(best_version)
            if order < 0 or (order == 0 and tag <= best.tag):  # type: ignore[union-attr]
                continue
        if admitted is None:
            admitted = found[2] = admits(version)
        if admitted:
            best, best_triple, best_version = candidate, triple, version
    if best is None:
        return None
    return Selection(best.tag, best.digest, considered, seen[0] - considered)


def _admits(policy: Policy) -> Callable[[Any], bool]:
    """Whether the policy's range admits a version (see the module's note on pre-releases)."""
    range_ = policy._range
    if not policy.prerelease:
        return lambda version: bool(range_.test(version))

    def admits(version: Any) -> bool:
        if range_.test(version):
            return True
        if not version.prerelease or not range_.test(version, include_prerelease=True):
            return False
        return bool(range_.test(_version(f"{version.major}.{version.minor}.{version.patch}")))

    return admits


def _select_digest(tag: str, candidates: Iterable[CandidateLike]) -> Selection | None:
    found: CandidateLike | None = None
    total = 0
    for candidate in candidates:
        total += 1
        if candidate.tag == tag and found is None:
            found = candidate
    if found is None:
        return None
    return Selection(found.tag, found.digest, 1, total - 1)


def _utc(moment: datetime | None) -> datetime | None:
    if moment is None or moment.tzinfo is not None:
        return moment
    return moment.replace(tzinfo=UTC)
