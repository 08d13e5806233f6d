"""The deployment-wide per-host limits (`watcher.registry.sharedlimits`) for the requests botocore sends itself.

httpx-based pollers hold them in their transport; boto3 (ECR) sends its own requests, so the same slots
and pace are taken where botocore sends one HTTP attempt, in its `before-send` and `response-received`
events (the azure SDK's counterpart is `watcher.pollers.acr.SharedSlots`, a pipeline policy). Each attempt,
retries included, holds one of the host's slots while it is in flight and starts when the host's shared
pace allows; a throttled answer (a 429, or one of AWS's throttling error codes, which come as 400) pauses
every process. A slot is never held while another is asked for, so a limit of 1 cannot deadlock.
"""

from __future__ import annotations

import threading
from collections.abc import Collection
from typing import Any
from urllib.parse import urlsplit

from watcher.registry.hostlimits import HostLimits
from watcher.registry.sharedlimits import SharedLimits, Slot


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
