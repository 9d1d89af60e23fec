"""Reaching NATS from a command: a connection that fails with a clear message, and one admin action."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from typing import Any

import typer

import bus
from bus import Bus
from services.cli.output import console
from services.cli.settings import with_local_credentials


async def connect(url: str, name: str, inbox_prefix: str = "_INBOX") -> Bus:
    """Connect to NATS (with `chatbus up`'s local credentials for the default URL), or exit 2 saying why."""
    url = with_local_credentials(url)
    try:
        nbus = await bus.connect(url, name=name, inbox_prefix=inbox_prefix)
    except Exception as exc:
        console.print(
            f"[red]Cannot reach NATS at {redact(url)}: {exc}.[/] Start it (`chatbus up`) or pass --nats."
        )
        raise typer.Exit(2) from exc
    return nbus


def redact(url: str) -> str:
    """The URL(s) with any credentials replaced by `***`."""
    return ",".join(re.sub(r"//[^/@]*@", "//***@", one) for one in url.split(","))


def run_admin(url: str, action: Callable[[Bus], Awaitable[Any]], *, declare: bool = True) -> Any:
    """Connect, create the streams that are missing (unless `declare` is False), run `action` and
    close; its result."""

    async def main() -> Any:
        nbus = await connect(url, "admin")
        try:
            if declare:
                await bus.declare_all(nbus.js)
            return await action(nbus)
        finally:
            await nbus.close()

    return asyncio.run(main())
