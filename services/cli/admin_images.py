"""`chatbus admin images collect`: purge the images no live chat uses."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from bus import Bus
from services.cli.connect import run_admin
from services.cli.options import DEFAULT_NATS, NatsOption
from services.cli.output import console, progress_bar


def images_collect(
    grace_hours: Annotated[
        float, typer.Option(help="Keep unreferenced images younger than this (not yet attached).")
    ] = 24.0,
    dry_run: Annotated[bool, typer.Option(help="Only report what would be purged.")] = False,
    nats: NatsOption = DEFAULT_NATS,
) -> None:
    """Purge images that no live chat references (only deleted or erased chats used them).

    Removes their bytes from the object store and their stored events from the IMAGE stream, and
    appends an `image.<sha256>.purged` event for each.
    """
    from datetime import timedelta

    from services.image_store.collect import collect_images

    with progress_bar("purging") as on_progress:

        async def action(nbus: Bus) -> Any:
            return await collect_images(
                nbus,
                by="admin-cli",
                grace=timedelta(hours=grace_hours),
                dry_run=dry_run,
                on_progress=on_progress,
            )

        report = run_admin(nats, action)
    verb = "would purge" if dry_run else "purged"
    console.print(
        f"{report.images} images: {report.referenced} referenced, {report.too_young} younger than "
        f"{grace_hours:g} h; {verb} {len(report.purged)} ({report.purged_bytes} bytes)"
    )
    for sha in report.purged:
        console.print(f"  {sha}")
