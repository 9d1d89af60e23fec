"""`chatbus webhooks`: POST finished jobs to their callback URLs, signed, until SIGINT or SIGTERM."""

from __future__ import annotations

from typing import Annotated

import typer

from services.cli.options import DEFAULT_NATS, NatsOption
from services.cli.run import serve
from services.cli.settings import setup_logging


def webhooks(
    nats: NatsOption = DEFAULT_NATS,
    capacity: Annotated[
        int, typer.Option(min=1, help="Finished jobs delivered at once (each waiting out its own backoff).")
    ] = 64,
) -> None:
    """Run the webhooks service: POST each finished job that has a callback_url to it, signed with its
    owner's secret (docs/jobs.md), retried with backoff (CHATBUS_WEBHOOK_*), each delivery recorded.

    Any number may run: they share the finished jobs; one killed mid-delivery leaves the job to the next,
    which goes on from the deliveries recorded in the log.
    """
    from services.webhooks import WebhookSettings, run_webhooks

    setup_logging()
    settings = WebhookSettings.from_env()
    serve(nats, "webhooks", lambda nbus, stop: run_webhooks(nbus, stop, settings, capacity=capacity))
