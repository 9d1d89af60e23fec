"""Webhooks settings: how often and how patiently a finished job is POSTed, and which hosts may be private."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated

import msgspec

from schemas.settings_env import env, env_vars, load


class WebhookSettings(msgspec.Struct, frozen=True, kw_only=True):
    """Delivery policy of one webhooks process; see ENV_VARS."""

    tries: Annotated[
        int,
        env(
            "CHATBUS_WEBHOOK_TRIES", "Deliveries of a finished job before giving up (default 6).", ge=1, le=20
        ),
    ] = 6
    backoff: Annotated[
        float,
        env(
            "CHATBUS_WEBHOOK_BACKOFF",
            "Seconds before the second delivery, doubled before each next one (default 1: 1, 2, 4 ... s).",
            gt=0,
        ),
    ] = 1.0
    timeout: Annotated[
        float,
        env("CHATBUS_WEBHOOK_TIMEOUT", "Seconds one delivery may take in total (default 10).", gt=0),
    ] = 10.0
    private_hosts: Annotated[
        frozenset[str],
        env(
            "CHATBUS_WEBHOOK_PRIVATE_HOSTS",
            "Comma-separated host names a callback_url may name although they resolve to private addresses "
            "(an automation server on the same network); default none. Addresses are never allowed.",
        ),
    ] = frozenset()

    def wait_before(self, delivery: int) -> float:
        """Seconds between the previous delivery and this one (exponential backoff, capped at an hour)."""
        return 0.0 if delivery <= 1 else min(self.backoff * 2 ** (delivery - 2), 3600.0)

    @property
    def allowed_private(self) -> frozenset[str]:
        """The private host names, compared without case."""
        return frozenset(host.lower() for host in self.private_hosts)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> WebhookSettings:
        """Settings from CHATBUS_WEBHOOK_* variables, defaults for the rest."""
        return load(cls, environ)


ENV_VARS = env_vars(WebhookSettings)
