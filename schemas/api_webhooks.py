"""API bodies of webhooks: the caller's signing secret (docs/jobs.md, "Webhooks")."""

from __future__ import annotations

import msgspec


class WebhookSecretResponse(msgspec.Struct, frozen=True, kw_only=True):
    """POST /v1/me/webhook-secret: your new signing secret, shown this once (it replaces any older one)."""

    secret: str
