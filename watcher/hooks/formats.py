"""Every webhook format this release receives, by name: what the receiver and `watcher registry webhook` look
up."""

from __future__ import annotations

from watcher.hooks import (
    acr,
    cloudevents,
    distribution,
    dockerhub,
    ecr_eventbridge,
    gcr_pubsub,
    github,
    harbor,
    quay,
)
from watcher.hooks.format import HookFormat

RECEIVED = (
    *(distribution.FORMAT, harbor.FORMAT, dockerhub.FORMAT, acr.FORMAT, quay.FORMAT, ecr_eventbridge.FORMAT),
    *(github.FORMAT, cloudevents.FORMAT, gcr_pubsub.FORMAT),
)
FORMATS: dict[str, HookFormat] = {one.name: one for one in RECEIVED}
