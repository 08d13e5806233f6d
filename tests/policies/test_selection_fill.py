"""Creation times that arrive after a policy was evaluated: the background fill stores a baseline digest's
metadata, and the newest-build policy that ranks it is evaluated again, with one `selected` event in the
outbox when its selection changed — on the real registry, through the real fill and relay."""

from __future__ import annotations

import hashlib
import json

import pytest
from sqlalchemy import select

from tests.conftest import Watcher
from tests.support.fixtures import RegistryEnv
from tests.support.registry import OCI_MANIFEST, RegistryClient, seed_layer
from watcher import schema
from watcher.db import session_scope
from watcher.outbox.relay import relay
from watcher.policies import Policy, evaluation
from watcher.policies.store import PolicySpec, save
from watcher.polling import imagefill
from watcher.polling import poll as polling
from watcher.read.policies import policy, selection_history
from watcher.schema import DEFAULT_WORKSPACE_ID


def push_built(client: RegistryClient, repo: str, tag: str, created: str) -> str:
    """A one-layer image whose config says it was built at `created`; its manifest digest."""
    raw, layer = seed_layer(f"built at {created}\n")
    config = {
        "architecture": "amd64",
        "os": "linux",
        "created": created,
        "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(raw).hexdigest()]},
    }
    body = json.dumps(config).encode()
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": client.upload_blob(repo, body),
            "size": len(body),
        },
        "layers": [
            {
                "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                "digest": client.upload_blob(repo, layer),
                "size": len(layer),
            }
        ],
    }
    return client.put_manifest(repo, tag, json.dumps(manifest).encode(), OCI_MANIFEST)


def evaluated_at(watcher: Watcher, name: str) -> object:
    with watcher.engine.connect() as conn:
        return conn.execute(select(schema.policies.c.evaluated_at).where(schema.policies.c.name == name)).scalar()


def test_the_fill_re_evaluates_newest_build_once_the_baselines_creation_times_are_stored(
    watcher: Watcher, registry: RegistryEnv, unique_repo: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`built` (2026) is in the baseline, so nothing is known of it when the policy is evaluated; `late`
    (1970), pushed afterwards, is described by its poll and selected. The fill then stores `built`'s creation
    time: the newest-build policy selects it — one `selected` event, relayed once — while the alphabetical
    policy on the same repository is not touched, and a fill with nothing new writes nothing."""
    built = push_built(registry.client, unique_repo, "built", "2026-11-30T12:00:00Z")
    assert watcher.add_registry("r1", registry.url, "--repository", unique_repo).exit_code == 0
    assert polling.poll("r1").baseline
    with session_scope(watcher.engine) as session:
        for name, options in (("app", {"newest_build": True}), ("abc", {"alphabetical": "asc"})):
            save(session, PolicySpec.build(name, "r1", unique_repo, **options), workspace_id=DEFAULT_WORKSPACE_ID)
    registry.client.push_image(unique_repo, "late")  # created 1970, read by its poll before its event
    polling.poll("r1")
    with session_scope(watcher.engine) as session:
        assert [row.tag for row in selection_history(session, "app", workspace_id=DEFAULT_WORKSPACE_ID)] == ["late"]
    untouched = evaluated_at(watcher, "abc")

    filled = imagefill.fill(watcher.engine, watcher.redis)
    assert (filled.stored, filled.selected) == (1, 1)
    assert imagefill.fill(watcher.engine, watcher.redis).selected == 0
    with session_scope(watcher.engine) as session:
        view = policy(session, "app", workspace_id=DEFAULT_WORKSPACE_ID)
        history = selection_history(session, "app", workspace_id=DEFAULT_WORKSPACE_ID)
    assert (view.tag, view.digest, view.considered, view.ignored) == ("built", built, 2, 0)
    assert [(row.tag, row.previous_tag) for row in history] == [("built", "late"), ("late", "")]
    assert evaluated_at(watcher, "abc") == untouched

    relay(watcher.redis, engine=watcher.engine, settings=None, wait_seconds=5)
    selected = [(e["tag"], e["previous_tag"]) for e in watcher.stream_entries() if e["change"] == "selected"]
    assert selected.count(("built", "late")) == 1

    # a process that knows few creation times asks each table once, joined to the stored tags: the same answer
    with session_scope(watcher.engine) as session:
        rows = session.execute(select(schema.policies).where(schema.policies.c.name == "app")).all()
        policies = [(row, Policy.stored(row)) for row in rows]
        registry_id = rows[0].registry_id
        tags = {unique_repo: evaluation.stored_tags(session, registry_id, unique_repo)}
        answers = []
        for chunk in (evaluation.IN_CHUNK, 0):  # 0: more unknown digests than a chunk, so joined
            monkeypatch.setattr(evaluation, "IN_CHUNK", chunk)
            evaluation._created_times.clear()
            answers.append(evaluation._created(session, registry_id, tags, policies))
    assert answers[0] == answers[1] and len(answers[0]) == 2
