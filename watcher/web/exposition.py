"""Prometheus's text format (0.0.4), written directly: a family's header, then one line per sample.

prometheus_client builds a `Sample` per series and then validates and escapes every label name and value
of every sample at each scrape; with a thousand registries that was most of a scrape's time. Here label
names are fixed per family (checked once, when the family is declared), values are escaped as the format
says, and a counter's stored labels (`watcher.read.counters`, a JSON object) are turned into their text once per
process, not once per scrape. A stored counter may lack a label its family has (it was counted before the
label existed): it is shown with the family's default for it (`Family.defaults`), or empty.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from prometheus_client.utils import floatToGoString

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
_LABEL = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
#: label texts kept per process, (sample name, stored labels) -> `name{...}`; cleared when it grows past this
_CACHE_LIMIT = 200_000
_series: dict[tuple[str, str], str] = {}


@dataclass(frozen=True)
class Family:
    """A metric family: its name (a counter's with `_total`), type, help text and label names, and the values
    shown for labels a stored counter lacks."""

    name: str
    kind: str
    text: str
    labels: tuple[str, ...] = ()
    defaults: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        if not _NAME.match(self.name) or not all(_LABEL.match(label) for label in self.labels):
            raise ValueError(f"not a valid metric family: {self.name} {self.labels}")
        if not {label for label, _ in self.defaults} <= set(self.labels):
            raise ValueError(f"not a valid metric family: {self.name} has a default for a label it lacks")

    def header(self) -> str:
        text = self.text.replace("\\", r"\\").replace("\n", r"\n")
        return f"# HELP {self.name} {text}\n# TYPE {self.name} {self.kind}\n"


def escape(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def series(name: str, label_names: Sequence[str], values: Sequence[str]) -> str:
    """`name{a="x",b="y"}` (or `name` with no labels)."""
    if not label_names:
        return name
    return name + "{" + ",".join(f'{k}="{escape(v)}"' for k, v in zip(label_names, values, strict=True)) + "}"


def stored_series(name: str, label_names: Sequence[str], stored: str, defaults: Mapping[str, str] | None = None) -> str:
    """`name{...}` for a counter's stored labels (a JSON object), in `label_names`' order, a label it lacks
    as `defaults` say or empty; computed once per process for each series (a name's defaults never change)."""
    key = (name, stored)
    text = _series.get(key)
    if text is None:
        labels = {**(defaults or {}), **json.loads(stored)}
        text = series(name, label_names, [str(labels.get(k, "")) for k in label_names])
        if len(_series) >= _CACHE_LIMIT:
            _series.clear()
        _series[key] = text
    return text


def number(value: float) -> str:
    """As prometheus_client writes a value (Go's float format); its plain `repr` below a million (exactly the
    same text there), which is most values, at half the cost."""
    if -1e6 < value < 1e6:
        return repr(float(value))
    return floatToGoString(value)


def sample(series_text: str, value: float) -> str:
    return f"{series_text} {number(value)}\n"


def samples(family: Family, rows: Iterable[tuple[str, float]]) -> list[str]:
    """The lines of a counter's stored series (labels as stored, value): `stored_series` and `sample` in
    one loop, as a scrape writes thousands of them."""
    known = _series.get
    name, label_names, defaults = family.name, family.labels, dict(family.defaults)
    return [
        f"{known((name, labels)) or stored_series(name, label_names, labels, defaults)} "
        f"{repr(float(value)) if -1e6 < value < 1e6 else floatToGoString(value)}\n"
        for labels, value in rows
    ]
