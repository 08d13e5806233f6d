"""The limits (`watcher.registry.hostlimits`, `watcher.registry.sharedlimits`) for the requests an SDK sends itself.

httpx-based pollers hold them in their transport; boto3 (ECR) and the azure SDK (ACR with Azure AD) send
their own requests, so the same slots and pace are taken where the SDK sends one HTTP attempt: in
botocore's `before-send` and `response-received` events (`BotocoreSlots`), in azure-core's per-retry
pipeline policies (`AzureSlots`, and `AzureMeter`, the registry's own rate limit and request counts).
Each attempt, retries included, holds one of the host's slots while it is in flight and starts when the
host's shared pace allows; a throttled answer (a 429, one of AWS's throttling error codes, which come as
400, or a spent quota) pauses every process. A slot is never held while another is asked for, so a limit
of 1 cannot deadlock.

No SDK is imported here, so that a poll of one provider loads no other's: the azure policies are plain
classes with azure-core's `SansIOHTTPPolicy` hooks, which `watcher.pollers.acr` makes policies by
mixing that class in.
"""

from __future__ import annotations

import threading
from collections.abc import Collection
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from watcher.registry.hostlimits import HostLimits, Pacer
from watcher.registry.requestcounts import RequestCounts
from watcher.registry.sharedlimits import SharedLimits, Slot

if TYPE_CHECKING:
    from azure.core.pipeline import PipelineRequest, PipelineResponse


class BotocoreSlots:
    """botocore's event hooks that hold one shared slot per HTTP attempt of a client's calls.

    botocore runs an attempt's `before-send` and `response-received` in the calling thread, so the slot
    waits between them in a thread-local. `after-call(-error)` frees one an attempt left behind (an answer
    that failed to parse skips `response-received`)."""

    def __init__(self, limits: HostLimits, throttle_codes: Collection[str]) -> None:
        self._shared = SharedLimits(limits)
        self._throttle_codes = frozenset(throttle_codes)
        self._local = threading.local()

    def register(self, client: Any) -> None:
        """Hooks into every call of `client` (a boto3 client)."""
        service = client.meta.service_model.service_id.hyphenize()
        events = client.meta.events
        events.register(f"before-send.{service}", self._before_send)
        events.register(f"response-received.{service}", self._received)
        events.register(f"after-call.{service}", self._finished)
        events.register(f"after-call-error.{service}", self._finished)

    def _before_send(self, request: Any, **_: Any) -> None:
        self._free()
        self._local.slot = self._shared.enter(urlsplit(request.url).netloc)
        # None: botocore sends the request itself

    def _received(
        self, response_dict: dict[str, Any] | None = None, parsed_response: dict[str, Any] | None = None, **_: Any
    ) -> None:
        if response_dict is None:  # no answer (a dropped connection): nothing to hold back for
            self._free()
            return
        error = (parsed_response or {}).get("Error")
        code = error.get("Code") if isinstance(error, dict) else None
        self._free(response_dict.get("status_code"), response_dict.get("headers"), code in self._throttle_codes)

    def _finished(self, **_: Any) -> None:
        self._free()

    def _free(self, status: int | None = None, headers: Any = None, throttled: bool = False) -> None:
        slot: Slot | None = getattr(self._local, "slot", None)
        self._local.slot = None
        self._shared.leave(slot, status, headers, throttled=throttled)

    def close(self) -> None:
        self._shared.close()


class AzureMeter:
    """Counts every HTTP request to the registry by its status (each retry too: the policy runs per attempt)
    and spaces them by the registry's rate limit."""

    def __init__(self, requests_per_second: float) -> None:
        self.counts = RequestCounts()
        self._pacer = Pacer(requests_per_second)

    def on_request(self, request: PipelineRequest) -> None:
        self._pacer.wait_blocking()

    def on_response(self, request: PipelineRequest, response: PipelineResponse) -> None:
        self.counts.add(response.http_response.status_code)

    def on_exception(self, request: PipelineRequest) -> None:
        self.counts.add(None)


class AzureSlots:
    """Holds one of the host's deployment-wide slots while a request is sent, so every process's requests
    to the registry keep together to its limits; a 429 or a spent quota in the answer holds back every
    process. After the retry and authentication policies: one slot per attempt, the token exchanges' too,
    and never two held at once. Sans-I/O, as the same instance serves the exchange client's pipeline too
    (a chained policy has one `next`)."""

    KEY = "watcher.shared_slot"

    def __init__(self, limits: HostLimits) -> None:
        self.shared = SharedLimits(limits)

    def on_request(self, request: PipelineRequest) -> None:
        request.context[self.KEY] = self.shared.enter(urlsplit(request.http_request.url).netloc)

    def on_response(self, request: PipelineRequest, response: PipelineResponse) -> None:
        answer = response.http_response
        self.shared.leave(request.context.pop(self.KEY, None), answer.status_code, answer.headers)

    def on_exception(self, request: PipelineRequest) -> None:
        self.shared.leave(request.context.pop(self.KEY, None))

    def close(self) -> None:
        self.shared.close()
