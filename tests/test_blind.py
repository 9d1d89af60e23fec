"""schemas/blind.py: what an arena battle's voter reads of it before the vote (pure, no bus)."""

from __future__ import annotations

from datetime import UTC, datetime

import msgspec

import schemas
from logtools.audit import audit_entries
from schemas.blind import (
    BLIND_ERROR,
    BlindFeed,
    blind_chat,
    blind_event,
    blind_for,
    blind_messages,
    blind_page,
    blind_reply,
)
from schemas.chat import (
    ArenaVoted,
    ChatCreated,
    ChatEvent,
    MessagePosted,
    ReplyCompleted,
    ReplyFailed,
    ReplyRequested,
    ReplyStarted,
)
from schemas.queries import ChatDetail, ChatPage, ChatRow, MessagesAnswer, ReplyRow

AT = datetime(2026, 1, 1, tzinfo=UTC)
A, B = "lynx-model", "lynx-model-large"  # one alias inside the other: scrubbing must not leave a piece
WA, WB = "wk-lynx-1", "wk-lynx-2"


def _battle(owner: str = "ann", arena: bool = True) -> ChatCreated:
    return ChatCreated(
        event_id="e0", chat_id="c1", at=AT, owner_id=owner, title="t", compare=[A, B], arena=arena
    )


def _events() -> list[ChatEvent]:
    return [
        _battle(),
        MessagePosted(event_id="e1", chat_id="c1", at=AT, message_id="m1", author_id="ann", content="hi"),
        ReplyRequested(
            event_id="e2", chat_id="c1", at=AT, reply_id="r1", message_id="m1", model=A, requested_by="ann"
        ),
        ReplyRequested(
            event_id="e3", chat_id="c1", at=AT, reply_id="r2", message_id="m1", model=B, requested_by="ann"
        ),
        ReplyStarted(event_id="e4", chat_id="c1", at=AT, reply_id="r1", attempt=1, worker_id=WA, model=A),
        ReplyCompleted(
            event_id="e5",
            chat_id="c1",
            at=AT,
            reply_id="r1",
            attempt=1,
            worker_id=WA,
            model=A,
            text="an answer",
            prompt_tokens=3,
            completion_tokens=2,
            finish_reason="stop",
        ),
        ReplyFailed(
            event_id="e6",
            chat_id="c1",
            at=AT,
            reply_id="r2",
            attempt=1,
            worker_id=WB,
            error=f"{B} on {WB}: oom",
        ),
    ]


def _vote() -> ArenaVoted:
    return ArenaVoted(
        event_id="e9",
        chat_id="c1",
        at=AT,
        voter_id="ann",
        vote="A",
        model_a=A,
        model_b=B,
        replies_a=["r1"],
        replies_b=["r2"],
        tokens_a=2,
        tokens_b=0,
    )


def _text(value: object) -> str:
    return msgspec.json.encode(value).decode()


def test_a_battle_is_blind_to_its_voter_only_and_only_until_the_vote() -> None:
    assert blind_for(_battle(), False, "ann") is not None
    assert blind_for(_battle(), True, "ann") is None  # revealed
    assert blind_for(_battle(), False, "root") is None  # an admin reading someone else's battle
    assert blind_for(_battle(arena=False), False, "ann") is None  # a side-by-side chat names its models
    assert blind_for(None, False, "ann") is None


def test_blind_events_name_no_alias_and_no_worker() -> None:
    blind = blind_for(_battle(), False, "ann")
    assert blind is not None
    seen = [blind_event(e, blind) for e in _events()]
    text = _text(seen)
    for secret in (A, B, WA, WB):
        assert secret not in text, secret
    created, _, first, second, started, done, failed = seen
    assert isinstance(created, ChatCreated) and (created.model, created.compare) == ("", ["A", "B"])
    assert isinstance(first, ReplyRequested) and isinstance(second, ReplyRequested)
    assert (first.model, second.model) == ("A", "B")
    assert isinstance(started, ReplyStarted) and (started.model, started.worker_id) == ("A", "")
    assert isinstance(done, ReplyCompleted) and done.text == "an answer"
    assert isinstance(failed, ReplyFailed) and failed.error == BLIND_ERROR


def _reply(reply_id: str, model: str, worker: str, error: str = "", speaker: str = "") -> ReplyRow:
    return ReplyRow(
        reply_id=reply_id,
        chat_id="c1",
        message_id="m1",
        model=model,
        status="failed" if error else "completed",
        attempt=1,
        worker_id=worker,
        text="" if error else "an answer",
        prompt_tokens=3,
        completion_tokens=2,
        finish_reason="stop",
        error=error,
        queue_ms=0.0,
        first_token_ms=0.0,
        generation_ms=0.0,
        requested_at=AT,
        completed_at=AT,
        seq=4,
        speaker=speaker,
        speaker_name=model,
    )


def test_blind_rows_name_no_alias_and_no_worker() -> None:
    blind = blind_for(_battle(), False, "ann")
    assert blind is not None
    row = ChatRow(
        chat_id="c1",
        owner_id="ann",
        title="t",
        model="",
        system_prompt="",
        created_at=AT,
        updated_at=AT,
        deleted=False,
        message_count=1,
        origin="arena",
        compare=[A, B],
    )
    detail = blind_chat(ChatDetail(**msgspec.structs.asdict(row)), blind)
    assert isinstance(detail, ChatDetail) and (detail.model, detail.compare) == ("", ["A", "B"])
    other = msgspec.structs.replace(row, chat_id="c2", origin="chat")
    page = blind_page(ChatPage(items=[row, other]), {"c1": blind})
    assert [r.compare for r in page.items] == [["A", "B"], [A, B]]  # only the battle is blinded

    answer = MessagesAnswer(
        messages=[], replies=[_reply("r1", A, WA), _reply("r2", B, WB, f"{B} died on {WB}")]
    )
    blinded = blind_messages(answer, blind)
    assert A not in _text(blinded) and WA not in _text(blinded) and WB not in _text(blinded)
    first, second = blinded.replies
    assert (first.model, first.speaker_name, first.worker_id, first.text) == ("A", "A", "", "an answer")
    assert (second.model, second.error) == ("B", BLIND_ERROR)
    # A bot's reply keeps its bot's name (no alias in it, scrubbed all the same).
    bot = blind_reply(msgspec.structs.replace(_reply("r3", A, WA), speaker="p1", speaker_name="Zen"), blind)
    assert (bot.model, bot.speaker_name) == ("A", "Zen")


def test_a_feed_turns_to_the_truth_at_the_vote() -> None:
    feed = BlindFeed(blind_for(_battle(), False, "ann"))
    before = [feed.see(e) for e in _events()]
    vote = feed.see(_vote())
    after = feed.see(_events()[4])
    assert A not in _text(before) and WA not in _text(before)
    assert vote == _vote()  # the vote names both models
    assert after == _events()[4]  # and from it on, the truth
    truth = BlindFeed(None)
    assert [truth.see(e) for e in _events()] == _events()


def test_the_audit_of_an_unvoted_battle_is_blind_to_its_voter_alone() -> None:
    stored = [(seq, schemas.encode(e)) for seq, e in enumerate(_events(), 1)]
    mine = _text(audit_entries(stored, "ann"))
    assert all(secret not in mine for secret in (A, B, WA, WB)), mine
    assert "an answer" in mine
    assert all(secret in _text(audit_entries(stored, "root")) for secret in (A, B, WA, WB))
    assert all(secret in _text(audit_entries(stored)) for secret in (A, B, WA, WB))  # the CLI: the log
    voted = [*stored, (len(stored) + 1, schemas.encode(_vote()))]
    revealed = audit_entries(voted, "ann")
    assert all(secret in _text(revealed) for secret in (A, B, WA, WB))
    assert revealed[-1].what == f"voted A (A: {A}, B: {B})"
