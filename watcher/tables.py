"""Plain-text tables and relative times for the CLI: columns as wide as their widest cell, nothing more."""

from __future__ import annotations

from collections.abc import Collection, Iterator, Sequence
from datetime import datetime

from watcher.models import utcnow


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
    """`42s ago`, `in 3m`, `2h ago`, `5d ago`; `never` when there is no time."""
    if moment is None:
        return "never"
    seconds = int(((now or utcnow()) - moment).total_seconds())
    amount = abs(seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if amount >= size:
            text = f"{amount // size}{unit}"
            break
    else:
        text = f"{amount}s"
    return f"{text} ago" if seconds >= 0 else f"in {text}"
