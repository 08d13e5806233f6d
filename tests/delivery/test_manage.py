"""A subscription's state, read from its newest success, failure and dead letter."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from watcher.read.subscriptions import shown_url, state_of

T0 = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)


def test_failing_means_bad_news_newer_than_the_last_success() -> None:
    later, naive = T0 + timedelta(seconds=1), (T0 + timedelta(seconds=1)).replace(tzinfo=None)  # SQLite's
    assert state_of(None, None, None) == "ok"  # never tried
    assert state_of(T0, None, None) == "ok"
    assert state_of(None, T0, None) == "failing"  # failed, never delivered
    assert state_of(None, None, T0) == "failing"
    assert state_of(T0, later, None) == "failing"
    assert state_of(T0, None, naive) == "failing"  # a dead letter after the last success
    assert state_of(later, T0, T0) == "ok"  # delivered since


def test_a_url_is_shown_without_what_may_be_a_credential() -> None:
    assert shown_url("https://ce.example.com:8443/in?token=x", "cloudevents") == "https://ce.example.com:8443/in?…"
    assert shown_url("https://hooks.slack.com/services/T/B/x", "slack") == "https://hooks.slack.com/…"
    assert shown_url("https://x.logic.azure.com/workflows/1?sig=x", "teams") == "https://x.logic.azure.com/…"
    assert shown_url("http://127.0.0.1:9/hook", "cloudevents-structured") == "http://127.0.0.1:9/hook"
