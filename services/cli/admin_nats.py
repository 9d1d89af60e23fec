"""`chatbus admin worker-user ALIAS`: the NATS user of one alias's workers, for the server's config."""

from __future__ import annotations

import secrets
import sys
from typing import Annotated

import typer

from services.cli.output import console


def admin_worker_user(
    alias: Annotated[str, typer.Argument(help="The model alias whose workers connect as this user.")],
    password: Annotated[
        str | None, typer.Option(help="The user's password (default: a new random one, printed once).")
    ] = None,
) -> None:
    """Print a nats-server user `worker-<alias>` that may do only what that alias's workers need.

    Add it to the `users` of deploy/nats/accounts.conf (or your server's `authorization`), reload the
    server, and start those workers with `--nats nats://worker-<alias>:PASSWORD@HOST:4222`. Unlike the
    `worker` user, it beats presence, pulls and acks only for its alias (README, Security).
    """
    from schemas.ids import is_valid_id
    from schemas.permissions import conf_user, worker_permissions, worker_user

    if not is_valid_id(alias):
        console.print(f"[red]{alias!r} is not an alias[/] ([A-Za-z0-9_-], at most 64 characters)")
        raise typer.Exit(2)
    secret = password if password is not None else secrets.token_urlsafe(24)
    sys.stdout.write(conf_user(worker_user(alias), secret, worker_permissions(alias)))
