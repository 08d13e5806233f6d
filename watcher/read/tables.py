"""Plain-text tables and relative times for the CLI: columns as wide as their widest cell, nothing more."""

from __future__ import annotations

from collections.abc import Collection, Iterator, Sequence
from datetime import UTC, datetime

#: a cell whose value is not known (an image not read yet, a registry that says no push time)
UNKNOWN = "—"
#: the most platforms a cell names; an index of more shows these and how many others (`--json` has them all)
PLATFORMS_SHOWN = 4


def table(header: Sequence[str], rows: Sequence[Sequence[str]], *, numeric: Collection[str] = ()) -> Iterator[str]:
    """The header and rows, columns padded to fit (numbers right-aligned); the last column is not padded."""
    widths = [max(len(cell) for cell in column) for column in zip(header, *rows, strict=False)]
    for row in (header, *rows):
        cells = []
        for index, (cell, width, title) in enumerate(zip(row, widths, header, strict=True)):
            last = index == len(header) - 1
            cells.append(cell.rjust(width) if title in numeric else (cell if last else cell.ljust(width)))
        yield "  ".join(cells).rstrip()


def ago(moment: datetime | None, now: datetime | None = None) -> str:
    """`3 min ago`, `in 2 h`, `just now`; `never` for no time at all (the CLI and the console alike)."""
    if moment is None:
        return "never"
    moment = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    seconds = ((now or datetime.now(UTC)) - moment).total_seconds()
    size = abs(seconds)
    if size < 5:
        return "just now"
    amount = f"{int(size)} s"
    for unit, length in (("d", 86400), ("h", 3600), ("min", 60)):
        if size >= length:
            amount = f"{int(size // length)} {unit}"
            break
    return f"{amount} ago" if seconds > 0 else f"in {amount}"


def platforms_cell(platforms: Sequence[str] | None) -> str:
    """`linux/amd64,linux/arm64`: an image's platforms, compact (past `PLATFORMS_SHOWN`, the first ones and
    `+N`); UNKNOWN when they are not known, or the image names none (an artifact)."""
    if not platforms:
        return UNKNOWN
    if len(platforms) <= PLATFORMS_SHOWN:
        return ",".join(platforms)
    return ",".join(platforms[: PLATFORMS_SHOWN - 1]) + f",+{len(platforms) - PLATFORMS_SHOWN + 1}"
