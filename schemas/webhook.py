"""How a webhook is signed and checked: the one home of the rule (docs/jobs.md, "Webhooks").

A delivery carries `Chatbus-Webhook-Id: <job_id>.<delivery>`, `Chatbus-Timestamp: <unix seconds>` and
`Chatbus-Signature: v1=<hex HMAC-SHA256(secret, timestamp + "." + raw body)>` (the shape of Stripe's and
Standard Webhooks' signatures). A receiver recomputes the HMAC, compares in constant time and refuses a
timestamp more than five minutes away from its clock (a replayed old delivery).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping

ID_HEADER = "Chatbus-Webhook-Id"
TIMESTAMP_HEADER = "Chatbus-Timestamp"
SIGNATURE_HEADER = "Chatbus-Signature"
SIGNATURE_VERSION = "v1"
TOLERANCE_S = 300  # how far a delivery's timestamp may be from the receiver's clock


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """The `Chatbus-Signature` value of a body sent at `timestamp` (unix seconds)."""
    mac = hmac.new(secret.encode(), str(timestamp).encode() + b"." + body, hashlib.sha256)
    return f"{SIGNATURE_VERSION}={mac.hexdigest()}"


def webhook_headers(secret: str, webhook_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """The headers a delivery is sent with."""
    return {
        ID_HEADER: webhook_id,
        TIMESTAMP_HEADER: str(timestamp),
        SIGNATURE_HEADER: signature(secret, timestamp, body),
        "Content-Type": "application/json",
    }


def verify_webhook(secret: str, headers: Mapping[str, str], body: bytes, now: float) -> bool:
    """The reference check a receiver makes: a signature of this body by this secret, sent within
    TOLERANCE_S of `now` (unix seconds). `headers` as received (an aiohttp/requests mapping ignores case)."""
    stamp = headers.get(TIMESTAMP_HEADER, "")
    given = headers.get(SIGNATURE_HEADER, "")
    if not stamp.isdigit() or abs(now - int(stamp)) > TOLERANCE_S:
        return False
    return hmac.compare_digest(signature(secret, int(stamp), body), given)
