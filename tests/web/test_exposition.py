"""The text format `/metrics` writes itself: what prometheus_client's parser reads back, value for value."""

from __future__ import annotations

import math

import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.utils import floatToGoString

from watcher.read.counters import labels_key
from watcher.web.exposition import Family, number
from watcher.web.metrics import counter_text


@pytest.mark.parametrize(
    "value",
    [0.0, 1.0, -5.5, 0.1, 1e-7, 999_999.9, 1e6, 12_345_678.0, 1e21, 2.0**60, math.inf, -math.inf, math.nan, 3],
)
def test_values_are_written_as_prometheus_client_writes_them(value: float) -> None:
    assert number(value) == floatToGoString(value)


def test_label_values_are_escaped_and_read_back_exactly() -> None:
    odd = 'team "a"\\b\nc ü'
    rows = [
        ("watcher_events_total", labels_key({"registry": odd, "change": "added"}), 3.0),
        ("watcher_events_total", labels_key({"registry": "plain"}), 12_345_678.0),  # a label it lacks: empty
        ("watcher_events_total", labels_key({"workspace": "team-b", "registry": "plain", "change": "added"}), 2.0),
        ("watcher_unknown_total", labels_key({"registry": "x"}), 1.0),  # not a family of ours: left out
    ]
    text = "".join(counter_text(rows))
    events = next(f for f in text_string_to_metric_families(text) if f.name == "watcher_events")
    assert events.type == "counter" and events.documentation == "Events detected."
    assert [(s.name, s.labels, s.value) for s in events.samples] == [
        ("watcher_events_total", {"workspace": "default", "registry": odd, "change": "added"}, 3.0),
        ("watcher_events_total", {"workspace": "default", "registry": "plain", "change": ""}, 12_345_678.0),
        ("watcher_events_total", {"workspace": "team-b", "registry": "plain", "change": "added"}, 2.0),
    ]
    assert "watcher_unknown" not in text


def test_a_family_with_an_invalid_name_is_refused_when_declared() -> None:
    with pytest.raises(ValueError):
        Family("watcher-polls", "counter", "Polls.")
    with pytest.raises(ValueError):
        Family("watcher_polls_total", "counter", "Polls.", ("registry name",))
    with pytest.raises(ValueError):  # a default for a label the family does not have
        Family("watcher_polls_total", "counter", "Polls.", ("registry",), (("workspace", "default"),))


def test_a_counter_of_default_is_stored_without_its_workspace_as_before_workspaces() -> None:
    """A registry of `default` keeps counting in the row it had before workspaces existed: one series."""
    assert (
        labels_key({"workspace": "default", "registry": "r1"}) == labels_key({"registry": "r1"}) == '{"registry":"r1"}'
    )
    assert labels_key({"workspace": "team-b", "registry": "r1"}) == '{"registry":"r1","workspace":"team-b"}'
