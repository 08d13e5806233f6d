"""Each provider's own listing checks what its API sends against the OCI grammar, like the OCI path does:
invalid repository names and tags are left out and counted, an invalid digest of a wanted tag fails.

Harbor's and Docker Hub's APIs are answered by a canned server (a fake that serves fixed JSON by path);
ECR's answers go through botocore's Stubber, which parses them as ECR's wire protocol; GCR's tag-list
extension is parsed directly.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import Watcher
from tests.fakes.canned import Answer, CannedServer
from tests.fakes.hostile_registry import digest_of
from tests.pollers.test_ecr import run, stubbed
from watcher import errors
from watcher.diff import TagState
from watcher.pollers import poller_for
from watcher.pollers.base import Poller
from watcher.pollers.gcr import read_tag_pages
from watcher.registrations.scope import Scope
from watcher.registrations.spec import RegistrySpec

GOOD = digest_of("good")


class CannedApi(CannedServer):
    """An API answering the JSON `routes` maps each path to; any other path is a 404."""

    def __init__(self, routes: dict[str, Any]) -> None:
        self.routes = routes
        super().__init__(self.route, name="canned-api")

    def route(self, path: str) -> Answer:
        if path not in self.routes:
            return Answer(404, [], b'{"errors": []}')
        return Answer(200, [("Content-Type", "application/json")], json.dumps(self.routes[path]).encode())


def listing_of(poller: Poller) -> dict[str, dict[str, str]]:
    async def go() -> dict[str, dict[str, str]]:
        try:
            found = await poller.listing(Scope.from_options(poller.spec.options))
        finally:
            await poller.aclose()
        return {repo: {tag: state.digest for tag, state in tags.items()} for repo, tags in found.items()}

    return asyncio.run(go())


# -- Harbor ------------------------------------------------------------------------------------------
def harbor_routes(digest: object) -> dict[str, Any]:
    return {
        "/api/v2.0/systeminfo": {"harbor_version": "v2.11.0"},
        "/api/v2.0/projects": [{"name": "team"}],
        "/api/v2.0/projects/team/repositories": [{"name": "team/app"}, {"name": 5}, {"name": "team/../x"}],
        "/api/v2.0/projects/team/repositories/app/artifacts": [
            {"digest": digest, "tags": [{"name": "v1"}, {"name": "v1#frag"}, {"name": [1]}, "loose"]},
        ],
    }


@pytest.fixture
def harbor() -> Iterator[CannedApi]:
    with CannedApi(harbor_routes(GOOD)) as api:
        yield api


def test_harbor_leaves_invalid_names_out(watcher: Watcher, harbor: CannedApi) -> None:
    poller = poller_for(RegistrySpec("h", "oci", harbor.url))
    assert listing_of(poller) == {"team/app": {"v1": GOOD, "loose": GOOD}}
    assert poller.ignored_count == 4
    assert "repository 5 is not a valid OCI repository name: it is a JSON number, not a string" in poller.ignored
    assert any(line.startswith("tag 'v1#frag' of team/app is not a valid OCI tag") for line in poller.ignored)


def test_harbor_fails_on_an_invalid_digest(watcher: Watcher, harbor: CannedApi) -> None:
    harbor.routes.update(harbor_routes("sha256:../../etc"))
    with pytest.raises(errors.BadResponseError, match=r"team/app:v1: the digest 'sha256:../../etc' is not"):
        listing_of(poller_for(RegistrySpec("h", "oci", harbor.url)))


# -- Docker Hub --------------------------------------------------------------------------------------
def hub_routes(digest: object) -> dict[str, Any]:
    tags = [{"name": "v1", "digest": digest}, {"name": "a/../../b", "digest": GOOD}, {"name": [1, 2], "digest": GOOD}]
    return {
        "/v2/repositories/ns/": {"count": 3, "next": None, "results": [{"name": "app"}, {"name": 1}, {"name": "../x"}]},
        "/v2/namespaces/ns/repositories/app/tags": {"count": 3, "next": None, "results": tags},
    }


def test_docker_hub_leaves_invalid_names_out(watcher: Watcher, monkeypatch: pytest.MonkeyPatch) -> None:
    with CannedApi(hub_routes(GOOD)) as api:
        monkeypatch.setenv("WATCHER_DOCKERHUB_API_URL", api.url)
        poller = poller_for(RegistrySpec("hub", "dockerhub", api.url, options={"namespace": "ns"}))
        assert listing_of(poller) == {"ns/app": {"v1": GOOD}}
        assert poller.ignored_count == 4
        assert "tag [1, 2] of ns/app is not a valid OCI tag: it is a JSON array, not a string" in poller.ignored
        assert any(line.startswith("repository 'ns/../x' is not a valid") for line in poller.ignored)

        api.routes.update(hub_routes("not-a-digest; rm -rf /"))
        with pytest.raises(errors.BadResponseError, match="ns/app:v1: the digest 'not-a-digest; rm -rf /'"):
            listing_of(poller_for(RegistrySpec("hub", "dockerhub", api.url, options={"namespace": "ns"})))


# -- ECR ---------------------------------------------------------------------------------------------
def image(digest: str, *tags: str) -> dict[str, Any]:
    return {"registryId": "123456789012", "repositoryName": "team/app", "imageDigest": digest, "imageTags": list(tags)}


def test_ecr_leaves_invalid_tags_out_and_fails_on_an_invalid_digest(watcher: Watcher) -> None:
    poller, stub = stubbed()
    params = {"registryId": "123456789012", "maxResults": 1000, "repositoryName": "team/app"}
    params["filter"] = {"tagStatus": "TAGGED"}
    stub.add_response("describe_images", {"imageDetails": [image(GOOD, "v1", "a/../../b", ".hidden")]}, params)
    stub.add_response("describe_images", {"imageDetails": [image("sha256:short", "v2")]}, params)
    assert run(poller.tags("team/app", lambda _tag: True)) == {"v1": TagState(GOOD)}
    assert poller.ignored_count == 2
    with pytest.raises(errors.BadResponseError, match="team/app:v2: the digest 'sha256:short'"):
        run(poller.tags("team/app", lambda _tag: True))


# -- GCR ---------------------------------------------------------------------------------------------
def test_gcr_tag_lists_keep_only_what_the_check_accepts() -> None:
    pages = [
        {
            "tags": ["v1", 7, "v1#frag", None],
            "manifest": {GOOD: {"tag": ["v1", ["nested"], "a/../../b"], "timeUploadedMs": "1"}},
        }
    ]
    seen: list[object] = []

    def keep(tag: object) -> bool:
        seen.append(tag)
        return tag == "v1"

    names, known = read_tag_pages(pages, "p/app", keep)
    assert names == ["v1"]
    assert list(known) == ["v1"]
    assert seen == ["v1", 7, "v1#frag", None, "v1", ["nested"], "a/../../b"]
