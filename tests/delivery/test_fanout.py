"""Deliveries are written by the relay as it publishes: one per (subscription, event) that matches, in the
stream's order, never for another workspace's subscription, never twice."""

from __future__ import annotations

import pytest
from sqlalchemy import select, update

from tests.conftest import Watcher
from tests.support.fixtures import RegistryEnv
from watcher import schema
from watcher.db import session_scope
from watcher.delivery.subscriptions import SubscriptionSpec, save
from watcher.errors import InputError
from watcher.outbox.relay import relay
from watcher.registrations import workspaces


def deliveries(watcher: Watcher) -> list[tuple[str, str, str]]:
    """(subscription, tag, change) of every delivery, in delivery id order."""
    d, s, e = schema.deliveries.c, schema.subscriptions.c, schema.events.c
    with watcher.engine.connect() as conn:
        rows = conn.execute(
            select(s.name, e.tag, e.change)
            .select_from(schema.deliveries.join(schema.subscriptions).join(schema.events))
            .order_by(d.id)
        )
        return [tuple(row) for row in rows]


@pytest.mark.parametrize("db", ["sqlite", "postgresql"], indirect=True)
def test_the_relay_writes_each_matching_delivery_once_in_stream_order_within_the_workspace(
    watcher: Watcher, registry: RegistryEnv, unique_repo: str
) -> None:
    registry.client.push_image(unique_repo, "v1")
    assert watcher.add_registry("r1", registry.url, "--repository", unique_repo).exit_code == 0
    assert watcher.cli("poll", "r1").exit_code == 0
    with session_scope(watcher.engine) as session:
        workspaces.create(session, "team-b")
        other = workspaces.find_id(session, "team-b")
        hook = "http://127.0.0.1:9/hook"
        save(session, SubscriptionSpec.build("all", hook), workspace_id=1)
        save(session, SubscriptionSpec.build("removals", hook, changes="removed", registry="r1"), workspace_id=1)
        save(session, SubscriptionSpec.build("elsewhere", hook, repository="nothing/*"), workspace_id=1)
        save(session, SubscriptionSpec.build("team-b", hook), workspace_id=other)

    registry.client.push_image(unique_repo, "v2")
    registry.client.push_image(unique_repo, "v3")
    assert watcher.cli("poll", "r1").exit_code == 0
    registry.client.delete(unique_repo, "v2")
    assert watcher.cli("poll", "r1").exit_code == 0
    assert deliveries(watcher) == [
        ("all", "v2", "added"),
        ("all", "v3", "added"),
        ("all", "v2", "removed"),
        ("removals", "v2", "removed"),
    ]
    with session_scope(watcher.engine) as session:  # a relay that died before marking them runs them again
        session.execute(update(schema.events).values(published_at=None))
    relay(watcher.redis)
    assert len(deliveries(watcher)) == 4


def test_a_subscription_is_checked_before_it_is_saved(watcher: Watcher) -> None:
    for kwargs, message in [
        ({"name": "Bad", "url": "http://127.0.0.1/x"}, "subscription name 'Bad' is not valid"),
        ({"name": "a", "url": "ftp://h/x"}, "--url must be http or https"),
        ({"name": "a", "url": "http://u:p@127.0.0.1/x"}, "--url must not hold credentials"),
        ({"name": "a", "url": "http://127.0.0.1/x", "format": "xml"}, "--format 'xml' is not one of"),
        ({"name": "a", "url": "http://127.0.0.1/x", "changes": "added,moved"}, "--change 'moved' is not one of"),
        ({"name": "a", "url": "https://example.com/x", "format": "github-dispatch"}, "needs --url https://api"),
    ]:
        with pytest.raises(InputError, match=message):
            SubscriptionSpec.build(**kwargs)
    with session_scope(watcher.engine) as session, pytest.raises(InputError, match="refused by the network policy"):
        save(session, SubscriptionSpec.build("meta", "http://169.254.169.254/latest"), workspace_id=1)
