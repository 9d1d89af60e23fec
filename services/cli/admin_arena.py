"""`chatbus admin arena leaderboard | votes | pool | exclude | include`: the arena from the command line.

Everything is read from the log (the votes in CHAT, the pool and the exclusions in ARENA) and changed by
appending the same events an API would (docs/leaderboard.md, docs/arena.md).
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any

import msgspec
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

import schemas
from bus import Bus
from schemas.api_leaderboard import DEFAULT_ROUNDS, MAX_ROUNDS, MIN_ROUNDS
from services.cli.connect import run_admin
from services.cli.options import DEFAULT_NATS, NatsOption, iso_time
from services.cli.output import console

if TYPE_CHECKING:
    from logtools.arena_votes import VoteFilter, Votes

ADMIN = "admin-cli"  # who the events say changed the arena's settings

SinceOpt = Annotated[
    datetime | None, typer.Option(parser=iso_time, help="Only votes cast at or after this time (ISO).")
]
UntilOpt = Annotated[
    datetime | None, typer.Option(parser=iso_time, help="Only votes cast before this time (ISO).")
]
CategoryOpt = Annotated[str | None, typer.Option(help="Only votes on battles of this category.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON (the API's shape) instead of a table.")]
UserArg = Annotated[str, typer.Argument(help="The user (login name) whose votes it is about.")]


def _fail(message: str, code: int = 1) -> typer.Exit:
    console.print(f"[red]{escape(message)}[/]", soft_wrap=True)
    return typer.Exit(code)


def _filter(since: datetime | None, until: datetime | None, category: str | None) -> VoteFilter:
    from logtools.arena_votes import VoteFilter

    if since is not None and until is not None and until <= since:
        raise _fail("--until must be after --since", 2)
    return VoteFilter(since=since, until=until, category=category or None)


def _read(nats: str, flt: VoteFilter) -> Votes:
    from logtools.arena_votes import read_votes

    async def action(nbus: Bus) -> Votes:
        return await read_votes(nbus.js, flt)

    with console.status("reading the votes from the log"):
        votes: Votes = run_admin(nats, action)
    return votes


def _json(value: Any) -> None:
    typer.echo(msgspec.json.format(schemas.encode(value), indent=2).decode())


def arena_leaderboard(
    since: SinceOpt = None,
    until: UntilOpt = None,
    category: CategoryOpt = None,
    length_control: Annotated[
        bool, typer.Option(help="Control for answer length: the token difference as a covariate.")
    ] = False,
    anchor: Annotated[
        str | None, typer.Option(help="The model shown at 1000 (default: the first by name).")
    ] = None,
    rounds: Annotated[
        int,
        typer.Option(min=MIN_ROUNDS, max=MAX_ROUNDS, help="Bootstrap rounds for the 95% intervals."),
    ] = DEFAULT_ROUNDS,
    as_json: JsonOpt = False,
    nats: NatsOption = DEFAULT_NATS,
) -> None:
    """The arena leaderboard: Bradley-Terry ratings (Elo scale) with 95% bootstrap intervals and ranks.

    Counts every vote the filters take except those of excluded voters; a tie and a both-bad vote are half
    a win each. The same votes and options always give the same table (docs/leaderboard.md).
    """
    from logtools.arena_votes import UnknownAnchor, leaderboard_body
    from logtools.leaderboard import LeaderboardError

    flt = _filter(since, until, category)
    votes = _read(nats, flt)
    try:
        with console.status(f"fitting {len(votes.counted)} votes, {rounds} bootstrap rounds"):
            body = leaderboard_body(votes, flt, length_control=length_control, anchor=anchor, rounds=rounds)
    except UnknownAnchor as exc:
        raise _fail(f"{exc} (see `chatbus admin arena votes`)", 2) from exc
    except LeaderboardError as exc:
        raise _fail(f"no leaderboard can be made of these votes: {exc}") from exc
    if as_json:
        _json(body)
        return
    if not body.models:
        console.print(f"no counted votes ({body.excluded_votes} of excluded voters)")
        return
    table = Table(
        "rank", "model", "rating", "95% interval", "battles", "wins", "losses", "ties",
        title=f"arena leaderboard: {body.votes} votes, anchor {escape(body.anchor or '')}",
    )  # fmt: skip
    for row in body.models:
        table.add_row(
            str(row.rank),
            escape(row.model),
            f"{row.rating:.0f}",
            f"{row.lower:.0f} – {row.upper:.0f}",
            *(str(n) for n in (row.battles, row.wins, row.losses, row.ties)),
        )
    Console().print(table)
    notes = [f"{body.excluded_votes} vote(s) of excluded voters left out"] if body.excluded_votes else []
    if body.length_coef is not None:
        notes.append(f"length coefficient {body.length_coef:+.1f} rating points per typical token difference")
    for note in notes:
        console.print(note)


def arena_votes(
    since: SinceOpt = None,
    until: UntilOpt = None,
    category: CategoryOpt = None,
    as_json: JsonOpt = False,
    nats: NatsOption = DEFAULT_NATS,
) -> None:
    """The counted votes, for audit: one per battle, excluded voters' left out (and counted apart)."""
    flt = _filter(since, until, category)
    votes = _read(nats, flt)
    if as_json:
        _json([{"seq": seq, **msgspec.to_builtins(vote)} for seq, vote in votes.counted])
        return
    table = Table("at", "chat", "voter", "A", "B", "vote", "category", "tokens A", "tokens B")
    for _, vote in votes.counted:
        table.add_row(
            vote.at.strftime("%Y-%m-%d %H:%M:%S"),
            vote.chat_id,
            escape(vote.voter_id),
            escape(vote.model_a),
            escape(vote.model_b),
            vote.vote,
            escape(vote.category),
            str(vote.tokens_a),
            str(vote.tokens_b),
        )
    Console().print(table)
    excluded = f", {votes.excluded} of excluded voters left out" if votes.excluded else ""
    console.print(f"{len(votes.counted)} counted vote(s){excluded}")


def _aliases(text: str | None) -> list[str] | None:
    if text is None:
        return None
    return [alias.strip() for alias in text.split(",") if alias.strip()]


def arena_pool(
    include: Annotated[
        str | None,
        typer.Option(help='Only these model aliases, comma-separated ("" for every model served).'),
    ] = None,
    exclude: Annotated[
        str | None, typer.Option(help='Never these model aliases, comma-separated ("" for none).')
    ] = None,
    nats: NatsOption = DEFAULT_NATS,
) -> None:
    """Show or set the pool of models that battles draw from.

    The pool is the models served now, only --include (when not empty), never --exclude; the last
    setting holds. An option left out keeps its list; "" empties it.
    """
    from logtools.arena_votes import read_pool, set_pool
    from schemas.arena import PoolSet

    new_include, new_exclude = _aliases(include), _aliases(exclude)
    for alias in (*(new_include or []), *(new_exclude or [])):
        if not alias.replace("-", "").replace("_", "").isalnum() or len(alias) > 128:
            raise _fail(f"{alias!r} is not a model alias (letters, digits, - and _)", 2)

    async def action(nbus: Bus) -> PoolSet | None:
        current = await read_pool(nbus.js)
        if new_include is None and new_exclude is None:
            return current
        keep_include = current.include if current is not None else []
        keep_exclude = current.exclude if current is not None else []
        await set_pool(
            nbus.js,
            new_include if new_include is not None else keep_include,
            new_exclude if new_exclude is not None else keep_exclude,
            ADMIN,
        )
        return await read_pool(nbus.js)

    pool: PoolSet | None = run_admin(nats, action)
    if pool is None:
        console.print("no pool set: battles draw from every model served (set one with --include/--exclude)")
        return
    typer.echo(f"include: {', '.join(pool.include) or '(every model served)'}")
    typer.echo(f"exclude: {', '.join(pool.exclude) or '(none)'}")
    console.print(f"set by {escape(pool.by)} at {pool.at:%Y-%m-%d %H:%M:%S} UTC")


def _set_excluded(nats: str, user: str, excluded: bool, reason: str) -> None:
    from identity.accounts import is_valid_user_id, user_role
    from logtools.arena_votes import set_excluded

    async def action(nbus: Bus) -> bool:
        if not is_valid_user_id(user) or await user_role(nbus.js, user) is None:
            return False
        await set_excluded(nbus.js, user, excluded, reason, ADMIN)
        return True

    if not run_admin(nats, action):
        raise _fail(f"no user {user}")


def arena_exclude(
    user: UserArg,
    reason: Annotated[str, typer.Option(help="Why (kept with the event, for audit).")] = "",
    nats: NatsOption = DEFAULT_NATS,
) -> None:
    """Leave a user's votes out of the leaderboard and the preference export (they stay in the log)."""
    _set_excluded(nats, user, True, reason)
    console.print(
        f"{user}'s votes are left out of the leaderboard; `chatbus admin arena include {user}` undoes it"
    )


def arena_include(user: UserArg, nats: NatsOption = DEFAULT_NATS) -> None:
    """Count an excluded user's votes again."""
    _set_excluded(nats, user, False, "")
    console.print(f"{user}'s votes count again")
