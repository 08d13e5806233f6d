"""Validation of emitted events against the official CloudEvents shape and CDEvents 0.5.1 schemas."""

from __future__ import annotations

import json
import re
from functools import cache
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator, FormatChecker
from referencing import Registry, Resource

SCHEMAS = Path(__file__).parent.parent / "data" / "cdevents-0.5.1"
TYPES = {
    "dev.cdevents.artifact.published.0.3.0": "artifactpublished.json",
    "dev.cdevents.artifact.deleted.0.2.0": "artifactdeleted.json",
    # a custom event: the official schema of every custom event, and then the one the watcher serves
    "dev.cdeventsx.watcher-policy.selected.0.1.0": "custom/schema.json",
}
#: the schema of `watcher-policy.selected` the service serves at its events' `schemaUri`
OURS = Path(__file__).parent.parent.parent / "watcher" / "outbox" / "watcher-policy-selected-0.1.0.json"


@cache
def _registry() -> Registry:
    resources = []
    for path in [*SCHEMAS.glob("*.json"), *(SCHEMAS / "links").glob("*.json")]:
        schema = json.loads(path.read_text())
        if "$id" in schema:
            resources.append((schema["$id"], Resource.from_contents(schema)))
    return Registry().with_resources(resources)


#: the CloudEvents 1.0 context attributes and `data`: any other attribute is an extension
CORE_ATTRIBUTES = {"specversion", "id", "source", "type", "datacontenttype", "dataschema", "subject", "time", "data"}
#: CloudEvents 1.0, "Attribute Naming Convention": lower-case ASCII letters or digits, at most 20 (SHOULD)
EXTENSION_NAME = re.compile(r"[a-z0-9]{1,20}")


def validate_cloudevent(document: dict[str, Any]) -> None:
    """Raise if the CloudEvent envelope or its CDEvent payload is not what the contract promises."""
    for key in ("specversion", "id", "source", "type", "subject", "time", "datacontenttype", "data"):
        assert key in document, f"cloudevent lacks {key}"
    assert document["specversion"] == "1.0"
    assert document["datacontenttype"] == "application/json"
    for name in document.keys() - CORE_ATTRIBUTES:
        assert EXTENSION_NAME.fullmatch(name), f"extension attribute {name!r} is not a CloudEvents attribute name"
        assert isinstance(document[name], str) and document[name], f"extension attribute {name!r} is not a string"
    assert "workspace" in document, "cloudevent lacks the extension attribute workspace"
    cdevent = document["data"]
    assert cdevent["context"]["type"] == document["type"]
    assert cdevent["context"]["id"] == document["id"]
    schema = json.loads((SCHEMAS / TYPES[document["type"]]).read_text())
    Draft202012Validator(schema, registry=_registry(), format_checker=FormatChecker()).validate(cdevent)
    if document["type"].startswith("dev.cdeventsx."):
        assert cdevent["context"]["schemaUri"] == document["dataschema"]
        Draft202012Validator(json.loads(OURS.read_text()), format_checker=FormatChecker()).validate(cdevent)
