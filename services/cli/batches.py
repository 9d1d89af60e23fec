"""`chatbus batches`: make created batches' lines jobs, cancel cancelled ones, until SIGINT or SIGTERM."""

from __future__ import annotations

from typing import Annotated

import typer

from services.cli.options import DEFAULT_NATS, NatsOption
from services.cli.run import serve
from services.cli.settings import setup_logging


def batches(
    nats: NatsOption = DEFAULT_NATS,
    capacity: Annotated[int, typer.Option(min=1, help="Batches expanded or cancelled at once.")] = 4,
    ack_wait: Annotated[
        float,
        typer.Option(
            min=1.0, help="Seconds before a batch whose expander stopped answering goes to another one."
        ),
    ] = 30.0,
) -> None:
    """Run the batches service: each created batch's lines become jobs (docs/batches.md), and each
    cancelled batch's open lines are cancelled.

    Any number may run: they share the batches; one killed mid-batch leaves it to the next, which makes
    only the lines not yet made (every line is one job, however often it is expanded).
    """
    import msgspec

    from schemas.streams import BATCH_CONSUMERS
    from services.batches import run_batches

    setup_logging()
    consumers = tuple(msgspec.structs.replace(spec, ack_wait=ack_wait) for spec in BATCH_CONSUMERS)
    serve(nats, "batches", lambda nbus, stop: run_batches(nbus, stop, capacity=capacity, consumers=consumers))
