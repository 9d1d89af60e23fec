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
from services.cli.settings import LOCAL_CONTEXT, nats_tls, with_local_credentials

ADMIN_CONNECT_SECONDS = 10.0  # an admin command gives up on NATS after this long, saying why


async def connect(url: str, name: str, inbox_prefix: str = "_INBOX", *, give_up: float | None = None) -> Bus:
    """Connect to NATS (with `chatbus up`'s local URL and credentials for the default URL), or exit 2
    saying why and what to do. `give_up`: seconds to try before that (None: until it answers)."""
    url = with_local_credentials(url)
    try:
        tls = nats_tls()
        nbus = await bus.connect(url, name=name, inbox_prefix=inbox_prefix, first_connect=give_up, tls=tls)
    except Exception as exc:  # noqa: BLE001 - any failure to connect ends the command the same way
        console.print(f"[red]Cannot connect to NATS at {redact(url)}: {exc}.[/]", soft_wrap=True)
        if "authorization" in str(exc).lower():
            console.print(
                "NATS refused the user or password: pass them in the URL (--nats or CHATBUS_NATS_URL, "
                "nats://USER:PASSWORD@HOST:4222). On the machine running `chatbus up`, leave --nats unset: "
                f"the command reads <data dir>/{LOCAL_CONTEXT}.",
                soft_wrap=True,
            )
        else:
            console.print(
                "Is it running? Start it (`chatbus up`, or nats-server), or point --nats / CHATBUS_NATS_URL "
                "at it.",
                soft_wrap=True,
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
        nbus = await connect(url, "admin", give_up=ADMIN_CONNECT_SECONDS)
        try:
            if declare:
                await bus.declare_all(nbus.js)
            return await action(nbus)
        finally:
            await nbus.close()

    return asyncio.run(main())
