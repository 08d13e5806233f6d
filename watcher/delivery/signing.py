"""Standard Webhooks signatures (https://www.standardwebhooks.com): what lets a receiver trust a delivery.

Each HTTP delivery carries `webhook-id` (the event's id: a receiver de-duplicates on it), `webhook-timestamp`
(seconds since the epoch: a receiver refuses old ones, so a captured request cannot be replayed later) and
`webhook-signature: v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">` keyed by the secret's bytes (the
base64 after `whsec_`), so any of the specification's libraries verifies it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

from watcher.delivery.subscriptions import SECRET_PREFIX


def signature(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` header's value for one request."""
    key = base64.b64decode(secret.removeprefix(SECRET_PREFIX))
    signed = f"{message_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


def headers(secret: str, message_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """The three Standard Webhooks headers."""
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature(secret, message_id, timestamp, body),
    }
