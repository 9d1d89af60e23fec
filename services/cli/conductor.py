"""`chatbus conductor`: give the bots' turns in chats with bots, until SIGINT or SIGTERM."""

from __future__ import annotations

from typing import Annotated

import typer

from services.cli.options import DEFAULT_NATS, NatsOption
from services.cli.run import serve
from services.cli.settings import setup_logging


def conductor(
    nats: NatsOption = DEFAULT_NATS,
    capacity: Annotated[
        int, typer.Option(min=1, help="Chat events handled at once (each chat's one at a time).")
    ] = 64,
) -> None:
    """Run the conductor: after each event of a chat with bots, ask the next bot to speak as the chat's
    floor says (policy, limits, pause, stop, named speaker, delays).

    Any number may run (on any machine that reaches NATS): they share the events, and fenced appends
    keep them from doubling a turn; a conductor killed mid-decision leaves the event to another.
    """
    from services.conductor import run_conductor

    setup_logging()
    serve(nats, "conductor", lambda nbus, stop: run_conductor(nbus, stop, capacity=capacity))
