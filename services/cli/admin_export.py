"""`chatbus admin export sft | preferences | chats`: training data and chats, read from the log."""

from __future__ import annotations

import enum
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, cast

import typer
from rich.markup import escape

from bus import Bus
from services.cli.connect import run_admin
from services.cli.options import DEFAULT_NATS, NatsOption, iso_time
from services.cli.output import console, progress_bar


class Per(enum.StrEnum):
    """What one SFT line is (the values of logtools.export.Per)."""

    active = "active"
    rated = "rated"


class TableFormat(enum.StrEnum):
    """How training rows are written (the values of logtools.export_files.TableFormat)."""

    jsonl = "jsonl"
    parquet = "parquet"


class MinRating(enum.StrEnum):
    """The least rating an exported reply has."""

    up = "up"


OutOpt = Annotated[Path, typer.Option(help="File to write (.jsonl or .parquet).")]
FormatOpt = Annotated[
    TableFormat | None, typer.Option("--format", help="How to write the rows (default: from --out's suffix).")
]
EmbedOpt = Annotated[bool, typer.Option(help="Images as data URLs instead of sha256 references.")]
ModelOpt = Annotated[str | None, typer.Option(help="Only replies of this model alias.")]
SinceOpt = Annotated[
    datetime | None,
    typer.Option(parser=iso_time, help="Only replies completed at or after this time (ISO)."),
]
UntilOpt = Annotated[
    datetime | None,
    typer.Option(parser=iso_time, help="Only replies completed before this time (ISO)."),
]
RatingOpt = Annotated[MinRating | None, typer.Option(help="`up`: only replies their user rated up.")]
UserOpt = Annotated[str | None, typer.Option(help="Only this user's chats.")]
ConsentOpt = Annotated[
    bool,
    typer.Option(
        "--include-without-consent",
        help="Also users who did not consent to training (default: only those who did; see /v1/me/consent).",
    ),
]


def export_sft(
    out: OutOpt,
    per: Annotated[
        Per, typer.Option(help="`active`: a line per chat's active path; `rated`: per rated reply.")
    ] = Per.active,
    seat: Annotated[
        str | None,
        typer.Option(
            help="Only this bot's replies, each from its seat (a bot's name, bot id or participant id);"
            " one-model chats are left out."
        ),
    ] = None,
    fmt: FormatOpt = None,
    embed_images: EmbedOpt = False,
    model: ModelOpt = None,
    since: SinceOpt = None,
    until: UntilOpt = None,
    min_rating: RatingOpt = None,
    user: UserOpt = None,
    without_consent: ConsentOpt = False,
    nats: NatsOption = DEFAULT_NATS,
) -> None:
    """Supervised fine-tuning data: OpenAI chat format `{"messages": [...]}` (system prompt included).

    A one-model chat gives one line per active path (or rated reply). A chat with bots gives one line
    per bot reply, written from that bot's seat: its system prompt, the others' turns as "Name: ..."
    user turns, its own as assistant, its reply last (--seat: only one bot's). Deleted chats never
    appear; erased ones are gone from the log. Provenance (chat, reply, model, rating, speaker) is
    under `metadata` in JSONL, in columns in Parquet.
    """
    from logtools.export import Per as PerValue
    from logtools.export import sft_rows

    flt = _export_filter(model, since, until, min_rating, user, without_consent)
    chosen = cast(PerValue, per.value)
    rows = _export_table(
        nats, out, fmt, flt, embed_images, lambda log, refs: sft_rows(log, flt, chosen, refs, seat=seat)
    )
    if seat is not None and rows == 0:
        console.print(f"[yellow]no reply of a bot named '{escape(seat)}' passed the filters[/] (see --seat)")


def export_preferences(
    out: OutOpt,
    fmt: FormatOpt = None,
    embed_images: EmbedOpt = False,
    model: ModelOpt = None,
    since: SinceOpt = None,
    until: UntilOpt = None,
    user: UserOpt = None,
    without_consent: ConsentOpt = False,
    arena_ties: Annotated[
        bool,
        typer.Option(
            "--arena-ties",
            help='Also arena ties and both-bad votes: A\'s answer as chosen, marked "tie" or "both_bad".',
        ),
    ] = False,
    nats: NatsOption = DEFAULT_NATS,
) -> None:
    """Paired preference data (DPO): the shared context, a chosen and a rejected reply.

    A pair is two completed replies to the same message (regenerations) that their user rated up
    and down, a side-by-side choice: the chosen reply over each of the others, or an arena vote: the
    winner's last answer over the loser's, excluded voters' votes left out (`metadata.source`: rating,
    choice or arena). `prompt` is what the replies answered (a bot's seat view in a chat with bots);
    `chosen`/`rejected` are assistant messages.
    """
    from logtools.export import preference_rows

    flt = _export_filter(model, since, until, None, user, without_consent)
    _export_table(
        nats, out, fmt, flt, embed_images, lambda log, refs: preference_rows(log, flt, refs, arena_ties)
    )


def export_chats(
    out: Annotated[Path, typer.Option(help="File to write (.json lossless, or .tsv for spreadsheets).")],
    user: UserOpt = None,
    include_deleted: Annotated[bool, typer.Option(help="Also chats that were deleted (hidden).")] = False,
    nats: NatsOption = DEFAULT_NATS,
) -> None:
    """A user's (or every) chat: lossless JSON of every event (`admin import` reads it back) or TSV."""
    from logtools.export import ExportFilter
    from logtools.export_files import chats_format, write_chats

    flt = ExportFilter(user=user, consent_only=False, include_deleted=include_deleted)
    fmt = chats_format(out)  # the file's name says it: no --format to disagree with it
    if fmt is None:
        console.print("[red]--out must end in .json or .tsv[/]")
        raise typer.Exit(2)

    async def then(nbus: Bus, log: Any) -> int:
        return write_chats(log, flt, out, fmt)

    started = time.perf_counter()
    count = _read_log_with_progress(nats, then)
    _summary(count, out, started)


def _export_filter(
    model: str | None,
    since: datetime | None,
    until: datetime | None,
    min_rating: MinRating | None,
    user: str | None,
    without_consent: bool,
) -> Any:
    """The export's filter; the consent default is the API's (CHATBUS_TRAINING_CONSENT_DEFAULT)."""
    from logtools.export import ExportFilter
    from services.api.settings import ApiSettings

    return ExportFilter(
        model=model,
        since=since,
        until=until,
        min_rating="up" if min_rating is MinRating.up else None,
        user=user,
        consent_only=not without_consent,
        consent_default=ApiSettings.from_env().training_consent_default,
    )


def _read_log_with_progress(nats: str, then: Callable[[Bus, Any], Awaitable[Any]]) -> Any:
    from logtools.export import read_log

    with progress_bar("reading the log") as on_progress:

        async def action(nbus: Bus) -> Any:
            log = await read_log(nbus, on_progress)
            skipped = log.rejected
            if skipped.total:
                console.print(
                    f"[yellow]left out {skipped.total} message(s) of the log[/] ({skipped.misfiled} not of"
                    f" their subject, {skipped.unreadable} unreadable), e.g. {escape(skipped.examples[0])}"
                )
            return await then(nbus, log)

        return run_admin(nats, action)


def _export_table(
    nats: str,
    out: Path,
    fmt: TableFormat | None,
    flt: Any,
    embed_images: bool,
    rows: Callable[[Any, Any], Any],
) -> int:
    """Read the log, make the rows (with image references or embedded images), write JSONL or Parquet;
    the row count."""
    from logtools.export_files import TableFormat as Kind
    from logtools.export_files import table_format, write_table

    kind = table_format(out) if fmt is None else cast(Kind, fmt.value)

    async def then(nbus: Bus, log: Any) -> int:
        return await write_table(nbus, log, rows, out, kind, flt, embed_images=embed_images)

    started = time.perf_counter()
    count: int = _read_log_with_progress(nats, then)
    _summary(count, out, started)
    return count


def _summary(count: int, out: Path, started: float) -> None:
    seconds = time.perf_counter() - started
    console.print(f"wrote {count} rows to {out} in {seconds:.1f} s")
