"""Each read-model row shape is declared once (a row struct): the tables' columns, the fold's rows and
what queries read back must all agree with it. No bus here: the fold and the store are fed directly."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import pytest

from bus import Sequenced
from schemas.bot import BotSpec
from schemas.chat import (
    ArenaTagged,
    ArenaVoted,
    BranchSelected,
    ChatCreated,
    ChatDeleted,
    ChatErased,
    ChatRenamed,
    ChatRestored,
    ChoiceMade,
    FeedbackGiven,
    Floor,
    FloorPaused,
    FloorResumed,
    FloorSet,
    FloorStopped,
    MessagePosted,
    ParticipantJoined,
    ParticipantLeft,
    ParticipantMuted,
    ReplyCancelled,
    ReplyCompleted,
    ReplyFailed,
    ReplyRequested,
    ReplyRetrying,
    ReplyStarted,
    SpeakerNamed,
)
from schemas.identity import (
    ApiKeyIssued,
    ApiKeyRevoked,
    TrainingConsentSet,
    UserCreated,
    UserErased,
    UserRoleChanged,
)
from schemas.job import JobSpec
from schemas.queries import FloorInfo, ParticipantInfo, Rating
from services.projector import tables
from services.projector.batch import Changes, touched
from services.projector.fold import Fold, fold
from services.projector.rows import FeedbackRow
from services.projector.store import ArrowBatch, Store
from services.projector.tables import MESSAGES, Row, Table

AT = datetime(2025, 3, 4, 5, 6, 7, 890000, tzinfo=UTC)


def _chat(chat_id: str, n: int) -> list[Any]:
    """A chat's events, every kind but erasure: created, a message and two replies, changes to each."""
    e = {"chat_id": chat_id, "at": AT}
    return [
        ChatCreated(event_id=f"{chat_id}-e{n}", owner_id="ann", title="t", model="m", **e),
        MessagePosted(
            event_id=f"{chat_id}-e{n + 1}",
            message_id=f"{chat_id}-m",
            author_id="ann",
            content="hi",
            images=["a" * 64],
            **e,
        ),
        ReplyRequested(
            event_id=f"{chat_id}-e{n + 2}",
            reply_id=f"{chat_id}-r1",
            message_id=f"{chat_id}-m",
            model="m",
            requested_by="ann",
            **e,
        ),
        ReplyRequested(
            event_id=f"{chat_id}-e{n + 3}",
            reply_id=f"{chat_id}-r2",
            message_id=f"{chat_id}-m",
            model="m",
            requested_by="ann",
            **e,
        ),
        ReplyStarted(
            event_id=f"{chat_id}-e{n + 4}", reply_id=f"{chat_id}-r1", attempt=1, worker_id="w", model="m", **e
        ),
        ReplyCompleted(
            event_id=f"{chat_id}-e{n + 5}",
            reply_id=f"{chat_id}-r1",
            attempt=1,
            worker_id="w",
            model="m",
            text="hello",
            prompt_tokens=3,
            completion_tokens=2,
            finish_reason="stop",
            queue_ms=1.5,
            images_seen=["a" * 64],
            **e,
        ),
        ReplyCancelled(event_id=f"{chat_id}-e{n + 6}", reply_id=f"{chat_id}-r2", by="ann", **e),
        ReplyFailed(
            event_id=f"{chat_id}-e{n + 7}", reply_id=f"{chat_id}-r2", attempt=1, worker_id="w", error="x", **e
        ),
        BranchSelected(event_id=f"{chat_id}-e{n + 8}", node_id=f"{chat_id}-r1", by="ann", **e),
        FeedbackGiven(
            event_id=f"{chat_id}-e{n + 9}", reply_id=f"{chat_id}-r1", user_id="ann", rating="up", **e
        ),
        ChatRenamed(event_id=f"{chat_id}-e{n + 10}", title="u", by="ann", **e),
        ChatDeleted(event_id=f"{chat_id}-e{n + 11}", by="ann", **e),
    ]


def _party(chat_id: str, n: int) -> list[Any]:
    """A bot joins the chat and speaks; the moderator's every action; a side-by-side choice."""
    e = {"chat_id": chat_id, "at": AT}
    p = f"{chat_id}-p"
    return [
        ParticipantJoined(
            event_id=f"{chat_id}-e{n}",
            participant_id=p,
            bot=BotSpec(name="Zen Sage", model="m"),
            by="ann",
            **e,
        ),
        FloorSet(event_id=f"{chat_id}-e{n + 1}", floor=Floor(policy="auto", rounds=2), by="ann", **e),
        ReplyRequested(
            event_id=f"{chat_id}-e{n + 2}",
            reply_id=f"{chat_id}-r3",
            message_id=f"{chat_id}-r1",
            model="m",
            requested_by="conductor",
            speaker=p,
            **e,
        ),
        ParticipantMuted(event_id=f"{chat_id}-e{n + 3}", participant_id=p, by="ann", **e),
        FloorPaused(event_id=f"{chat_id}-e{n + 4}", by="ann", **e),
        FloorResumed(event_id=f"{chat_id}-e{n + 5}", by="ann", **e),
        FloorStopped(event_id=f"{chat_id}-e{n + 6}", by="ann", **e),
        SpeakerNamed(event_id=f"{chat_id}-e{n + 7}", participant_id=p, by="ann", **e),
        FloorStopped(event_id=f"{chat_id}-e{n + 8}", by="ann", **e),
        ChoiceMade(
            event_id=f"{chat_id}-e{n + 9}",
            message_id=f"{chat_id}-m",
            reply_id=f"{chat_id}-r2",
            rejected=[f"{chat_id}-r1"],
            by="ann",
            **e,
        ),
        ParticipantLeft(event_id=f"{chat_id}-e{n + 10}", participant_id=p, by="ann", **e),
    ]


def _battle(chat_id: str) -> list[Any]:
    """An arena battle created (the vote and a tag come in a later batch: they change a stored row)."""
    return [
        ChatCreated(
            event_id=f"{chat_id}-e0",
            chat_id=chat_id,
            at=AT,
            owner_id="ann",
            title="b",
            compare=["m", "n"],
            origin="arena",
            arena=True,
            category="code",
        )
    ]


def _battle_judged(chat_id: str) -> list[Any]:
    e = {"chat_id": chat_id, "at": AT}
    vote = {"model_a": "m", "model_b": "n", "replies_a": [], "replies_b": [], "tokens_a": 1, "tokens_b": 2}
    return [
        ArenaTagged(event_id=f"{chat_id}-e1", category="math", by="root", **e),
        ArenaVoted(event_id=f"{chat_id}-e2", voter_id="ann", vote="tie", category="math", **vote, **e),
        ArenaVoted(event_id=f"{chat_id}-e3", voter_id="ann", vote="A", **vote, **e),  # the first one holds
    ]


def _identity(user_id: str) -> list[Any]:
    return [
        UserCreated(event_id=f"{user_id}-e1", at=AT, user_id=user_id, display_name=user_id),
        UserRoleChanged(event_id=f"{user_id}-e2", at=AT, user_id=user_id, role="admin"),
        TrainingConsentSet(event_id=f"{user_id}-e3", at=AT, user_id=user_id, allowed=True, by=user_id),
        ApiKeyIssued(
            event_id=f"{user_id}-e4", at=AT, key_id=f"{user_id}-k", user_id=user_id, key_sha256="0" * 64
        ),
        ApiKeyRevoked(event_id=f"{user_id}-e5", at=AT, key_id=f"{user_id}-k", user_id=user_id),
    ]


def _job(chat_id: str, first: bool) -> list[Any]:
    """A job's reply: requested, an attempt retried (first batch); the second attempt done (second)."""
    e = {"chat_id": chat_id, "at": AT, "reply_id": f"{chat_id}-j"}
    if first:
        job = JobSpec(job_id=f"{chat_id}--j", session_id="s1", deadline_at=AT, batch_id="b1", custom_id="x")
        return [
            ReplyRequested(
                event_id=f"{chat_id}-j1",
                message_id=f"{chat_id}-m",
                model="m",
                requested_by="ann",
                job=job,
                **e,
            ),
            ReplyStarted(event_id=f"{chat_id}-j2", attempt=1, worker_id="w", model="m", **e),
            ReplyRetrying(
                event_id=f"{chat_id}-j3", attempt=1, worker_id="w", code="c", error="x", retry_in_s=1.0, **e
            ),
        ]
    return [
        ReplyStarted(event_id=f"{chat_id}-j4", attempt=2, worker_id="w", model="m", **e),
        ReplyCompleted(
            event_id=f"{chat_id}-j5",
            attempt=2,
            worker_id="w",
            model="m",
            text="done",
            prompt_tokens=1,
            completion_tokens=1,
            finish_reason="stop",
            **e,
        ),
    ]


def _batches() -> list[list[Sequenced]]:
    """Batches with every event type the fold handles: creates, then changes to the stored rows
    (a restore, a rating replaced), then erasures of a chat and a user that exist besides."""
    first = _chat("c1", 0) + _identity("ann") + _chat("c2", 100) + _party("c2", 150) + _identity("bob")
    first += _battle("c3") + _job("c1", True)
    second = (
        _party("c1", 20)
        + _battle_judged("c3")
        + _job("c1", False)
        + [
            ChatRestored(event_id="c1-e50", chat_id="c1", at=AT, by="ann"),
            FeedbackGiven(
                event_id="c1-e51",
                chat_id="c1",
                at=AT,
                reply_id="c1-r1",
                user_id="ann",
                rating=None,
                comment="meh",
            ),
            ChatRenamed(event_id="c1-e52", chat_id="c1", at=AT, title="v", by="ann"),
            UserRoleChanged(event_id="ann-e6", at=AT, user_id="ann", role="user"),
        ]
    )
    third = [
        ChatErased(event_id="c2-e200", chat_id="c2", at=AT, by="ann"),
        UserErased(event_id="bob-e9", at=AT, user_id="bob", by="bob"),
    ]
    seq = 0
    out = []
    for batch in (first, second, third):
        out.append([(seq := seq + 1, event) for event in batch])
    return out


def _assert_rows_are(table: Table[Any], rows: list[Row]) -> None:
    """Every row has exactly the table's columns, with values of its struct's types."""
    for row in rows:
        missing, extra = set(table.names) - row.keys(), row.keys() - set(table.names)
        assert not missing and not extra, f"{table.name} row: missing {missing}, extra {extra}"
        msgspec.convert(row, table.row)


def _assert_changes_are_rows(changes: Changes) -> None:
    for table in tables.MUTABLE:
        _assert_rows_are(table, changes.inserts[table.name])
        _assert_rows_are(table, changes.updates[table.name])
    _assert_rows_are(MESSAGES, changes.messages)


def test_the_batches_cover_every_event_the_fold_handles() -> None:
    folded = {type(event) for batch in _batches() for _, event in batch}
    assert folded == set(Fold({t.name: {} for t in tables.MUTABLE}).handlers())


def test_tables_are_their_row_structs() -> None:
    for table in tables.ALL:
        stored = tuple(name for name in table.row.__struct_fields__ if name not in table.computed)
        assert table.names == stored, table.name
        assert table.key == table.names[0]
        assert all(name in table.names for name in table.indexes)


def test_live_fold_rows_are_table_rows_and_read_back_as_structs(tmp_path: Path) -> None:
    """The live path: load what a batch touches, fold, write; every row the fold makes has its table's
    columns, and every table reads back as its struct, equal to the fold's rows."""
    store = Store.open(tmp_path / "rows.duckdb")
    try:
        for batch in _batches():
            changes = fold(batch, store.load(touched(batch)), store.dead_chats)
            _assert_changes_are_rows(changes)
            store.write(ArrowBatch.of(changes, "CHAT", batch[-1][0]))
        for table in tables.ALL:
            described = store.con.execute(
                "SELECT column_name, data_type, is_nullable FROM information_schema.columns"
                " WHERE table_name = ? ORDER BY ordinal_position",
                [table.name],
            ).fetchall()
            assert described == [(c.name, c.sql, "YES" if c.nullable else "NO") for c in table.columns]
            fetched = store.con.execute(f"SELECT {table.select()} FROM {table.name}").fetchall()
            assert all(isinstance(table.read(values), table.row) for values in fetched)
        # The first chat survived, restored and renamed; the second was erased with all its rows.
        chats = [
            tables.CHATS.read(v)
            for v in store.con.execute(
                f"SELECT {tables.CHATS.select()} FROM chats ORDER BY chat_id"
            ).fetchall()
        ]
        assert [(c.chat_id, c.title, c.deleted, c.message_count, c.created_at) for c in chats] == [
            ("c1", "v", False, 1, AT),
            ("c3", "b", False, 0, AT),  # the battle
        ]
        ratings = store.con.execute(f"SELECT {tables.FEEDBACK.select(Rating)} FROM feedback").fetchall()
        assert [tables.FEEDBACK.read_part(Rating, v) for v in ratings] == [
            Rating(reply_id="c1-r1", rating=None, comment="meh", tags=[])
        ]
        # The party rows: read where the live fold stored them (the second batch changed loaded rows).
        con = store.con
        participants = con.execute(f"SELECT {tables.PARTICIPANTS.select(ParticipantInfo)} FROM participants")
        assert [tables.PARTICIPANTS.read_part(ParticipantInfo, v) for v in participants.fetchall()] == [
            ParticipantInfo(
                participant_id="c1-p", bot_id="", name="Zen Sage", model="m", muted=True, has_left=True
            )
        ]
        floors = con.execute(f"SELECT {tables.FLOORS.select(FloorInfo)} FROM floors").fetchall()
        assert [tables.FLOORS.read_part(FloorInfo, v) for v in floors] == [
            FloorInfo(policy="auto", rounds=2, max_bot_turns=10, delay_s=0.0, paused=False, stopped=True)
        ]
        assert con.execute("SELECT message_id, reply_id, rejected FROM choices").fetchall() == [
            ("c1-m", "c1-r2", ["c1-r1"])
        ]
        assert con.execute(
            "SELECT speaker, speaker_name FROM replies WHERE reply_id = 'c1-r3'"
        ).fetchall() == [("c1-p", "Zen Sage")]
        assert con.execute("SELECT chat_id, model_a, model_b, category, vote FROM battles").fetchall() == [
            ("c3", "m", "n", "math", "tie")
        ]
        assert con.execute("SELECT job_id, owner_id, session_id, status, batch_id FROM jobs").fetchall() == [
            ("c1--j", "ann", "s1", "done", "b1")
        ]
    finally:
        store.close()


def test_replay_fold_rows_are_table_rows() -> None:
    """The replay path folds in place over the rows it holds: the same rows."""
    held: dict[str, dict[str, Row]] = {t.name: {} for t in tables.MUTABLE}
    for batch in _batches():
        state = Fold(held, set(), {}, in_place=True)
        state.apply(batch)
        for table in tables.MUTABLE:
            held[table.name] = state.tables[table.name].known
            _assert_rows_are(table, list(held[table.name].values()))
        _assert_rows_are(MESSAGES, list(state.messages.values()))


def test_a_table_refuses_a_part_that_is_not_its_columns_or_a_type_it_cannot_store() -> None:
    class Renamed(msgspec.Struct, frozen=True, kw_only=True):
        reply_id: str
        stars: int

    class Retyped(msgspec.Struct, frozen=True, kw_only=True):
        reply_id: str
        rating: int

    class Odd(msgspec.Struct, frozen=True, kw_only=True):
        key: str
        blob: bytes

    assert Table("feedback", FeedbackRow, parts=(Rating,)).select(Rating) == "reply_id, rating, comment, tags"
    for part in (Renamed, Retyped):
        with pytest.raises(TypeError, match="not made of columns"):
            Table("feedback", FeedbackRow, parts=(part,))
    with pytest.raises(TypeError, match="blob"):
        Table("odd", Odd)
