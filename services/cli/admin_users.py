"""`chatbus admin user ...` and `admin key ...`: accounts, passwords, erasure and API keys."""

from __future__ import annotations

import enum
from typing import Annotated, Any

import typer
from rich.markup import escape

import bus
from bus import Bus
from services.cli.connect import run_admin
from services.cli.options import DEFAULT_NATS, NatsOption
from services.cli.output import console


class Role(enum.StrEnum):
    """What a user may do."""

    admin = "admin"
    user = "user"


def user_add(
    user_id: Annotated[str, typer.Argument(help="Login name: lowercase letters, digits, _ and -.")],
    role: Annotated[Role, typer.Option(help="What the user may do.")] = Role.user,
    nats: NatsOption = DEFAULT_NATS,
) -> None:
    """Create a user account."""
    from identity.accounts import add_user

    async def action(nbus: Bus) -> None:
        await add_user(nbus.js, user_id, role=role.value)

    try:
        run_admin(nats, action)
    except bus.ConcurrencyConflict as exc:
        console.print(f"[red]user {user_id} already exists[/]")
        raise typer.Exit(1) from exc
    except ValueError as exc:
        console.print(f"[red]{escape(str(exc))}[/]")
        raise typer.Exit(2) from exc
    console.print(
        f"user {user_id} ({role.value}) created; issue a key with `chatbus admin key issue {user_id}`"
    )


def user_password(
    user_id: Annotated[str, typer.Argument(help="The user who will log in with it.")],
    password: Annotated[
        str,
        typer.Option(
            prompt="New password", hide_input=True, confirmation_prompt=True, help="At least 8 characters."
        ),
    ],
    nats: NatsOption = DEFAULT_NATS,
) -> None:
    """Set a user's password for the browser login (only its argon2 hash is kept, as an identity event)."""
    from identity.accounts import user_role
    from identity.sessions import password_problem, set_password

    problem = password_problem(password)
    if problem is not None:
        console.print(f"[red]{problem}[/]")
        raise typer.Exit(2)

    async def action(nbus: Bus) -> bool:
        if await user_role(nbus.js, user_id) is None:
            return False
        await set_password(nbus.js, user_id, password, by="admin-cli")
        return True

    if not run_admin(nats, action):
        console.print(f"[red]no user {user_id}[/]: create it first with `chatbus admin user add {user_id}`")
        raise typer.Exit(1)
    console.print(f"password of {user_id} set; they can log in at /v1/login")


def user_unlock(
    user_id: Annotated[str, typer.Argument(help="The user refused with 429 after failed logins.")],
    nats: NatsOption = DEFAULT_NATS,
) -> None:
    """Clear a user's failed-login counts from every address (the limit refuses 15 minutes otherwise)."""
    from identity.attempts import unlock

    async def action(nbus: Bus) -> int:
        return await unlock(nbus.js, user_id)

    cleared = run_admin(nats, action)
    console.print(f"{user_id}: {cleared} login count(s) cleared; they can log in again")


def user_erase(
    user_id: Annotated[str, typer.Argument(help="The user to erase.")],
    yes: Annotated[bool, typer.Option("--yes", help="Do it without asking (there is no undo).")] = False,
    nats: NatsOption = DEFAULT_NATS,
) -> None:
    """Erase a user for good: their chats, ratings, keys, account and uploads are purged from the log.

    A tombstone (`user.<id>.erased`, one per chat too) stays so read models drop their rows; the
    image store purges the pictures no remaining chat uses. Exports and replays afterwards hold none of it.
    """
    from identity.accounts import account_exists
    from identity.erasure import erase_user

    if not yes:
        typer.confirm(f"Erase user {user_id} and everything they wrote? There is no undo", abort=True)

    async def action(nbus: Bus) -> Any:
        if not await account_exists(nbus.js, user_id):  # an erasure cut short can be run again
            return None
        return await erase_user(nbus, user_id, "admin-cli")

    erased = run_admin(nats, action)
    if erased is None:
        console.print(f"[red]no user {user_id}[/]: list them in the read model or check the spelling")
        raise typer.Exit(1)
    console.print(
        f"user {user_id} erased: {len(erased.chats)} chat(s), {len(erased.images_released)} image(s) purged"
    )


def key_issue(
    user_id: Annotated[str, typer.Argument(help="The user the key acts as.")],
    label: Annotated[str, typer.Option(help="A note to recognise the key by.")] = "",
    nats: NatsOption = DEFAULT_NATS,
) -> None:
    """Issue an API key; it is printed once and only its hash is stored."""
    from identity.accounts import issue_key

    async def action(nbus: Bus) -> tuple[str, str]:
        return await issue_key(nbus.js, user_id, label=label)

    try:
        key_id, key = run_admin(nats, action)
    except ValueError as exc:
        console.print(
            f"[red]{escape(str(exc))}[/] Create the user first: `chatbus admin user add {user_id}`."
        )
        raise typer.Exit(2) from exc
    console.print(f"key id {key_id} (revoke with `chatbus admin key revoke {key_id}`)")
    typer.echo(key)


def key_revoke(
    key_id: Annotated[str, typer.Argument(help="The key id printed when it was issued.")],
    nats: NatsOption = DEFAULT_NATS,
) -> None:
    """Revoke an API key: it stops working at once on every API replica."""
    from identity.accounts import revoke_key

    async def action(nbus: Bus) -> None:
        await revoke_key(nbus.js, key_id)

    try:
        run_admin(nats, action)
    except ValueError as exc:
        console.print(f"[red]{escape(str(exc))}[/]")
        raise typer.Exit(2) from exc
    console.print(f"key {key_id} revoked")
