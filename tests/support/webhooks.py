"""`tests.support.hooks.Hook` for the formats that do not send the secret itself: `SignedHook` signs the
body (`X-Hub-Signature-256`, github and cloudevents), `PubSubHook` sends a Google OIDC token made by the
fake certificate endpoint (gcr-pubsub). Both keep `Hook.post`'s meaning of `secret`: `""` authenticates as
the registry would, None sends nothing, anything else is a wrong credential (a wrong key / a wrong token)."""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass
from typing import Any, Self

import httpx

from tests.conftest import Watcher
from tests.fakes.google_certs import FakeGoogleCerts
from tests.support.hooks import Hook


def signature(body: bytes, secret: str) -> str:
    """`X-Hub-Signature-256`, as GitHub computes it."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def _content(body: dict[str, Any] | list[Any] | bytes) -> bytes:
    return body if isinstance(body, bytes) else json.dumps(body).encode()


@dataclass
class _Hook(Hook):
    """`Hook.enable` typed for the subclasses."""

    @classmethod
    def enable(cls, watcher: Watcher, broker: str, client: httpx.Client, format: str, name: str = "r1") -> Self:
        made = super().enable(watcher, broker, client, format, name)
        assert isinstance(made, cls)
        return made


@dataclass
class SignedHook(_Hook):
    def post(
        self,
        body: dict[str, Any] | list[Any] | bytes,  # a CloudEvents batch is a list
        secret: str | None = "",
        content_type: str = "application/json",
        header: str | None = None,
    ) -> httpx.Response:
        """Signed with the hook's secret (`""`), another key, or not at all (None); `header` is sent as the
        signature header's value instead."""
        content = _content(body)
        headers = {"Content-Type": content_type, "X-GitHub-Event": "package"}
        if header is not None:
            headers["X-Hub-Signature-256"] = header
        elif secret is not None:
            headers["X-Hub-Signature-256"] = signature(content, self.secret if secret == "" else secret)
        return self.client.post(self.url, content=content, headers=headers)


@dataclass
class PubSubHook(_Hook):
    certs: FakeGoogleCerts | None = None
    #: the push service account's
    email: str = ""

    def token(self, **change: Any) -> str:
        """A push token as Google signs it for the push account and this receiver (unless changed)."""
        assert self.certs is not None
        claims: dict[str, Any] = {"audience": self.url, "email": self.email} | change
        return self.certs.token(**claims)

    def post(
        self, body: dict[str, Any] | bytes, secret: str | None = "", content_type: str = "application/json"
    ) -> httpx.Response:
        """With a valid push token (`""`), `secret` as the bearer token, or no Authorization (None)."""
        headers = {"Content-Type": content_type}
        if secret is not None:
            headers["Authorization"] = f"Bearer {self.token() if secret == '' else secret}"
        return self.client.post(self.url, content=_content(body), headers=headers)
