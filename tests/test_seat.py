"""What a bot is shown of a chat with several speakers: its own seat (schemas/seat.py), as pure functions."""

from __future__ import annotations

from typing import Any

import schemas
from schemas.bot import BotSpec
from schemas.chat import (
    ChatCreated,
    ChatEvent,
    ChoiceMade,
    Floor,
    FloorPaused,
    FloorResumed,
    FloorSet,
    MessagePosted,
    ParticipantJoined,
    ParticipantMuted,
    ReplyCompleted,
    ReplyRequested,
)
from schemas.chat_state import ChatState, Turn, fold
from schemas.ids import new_id
from schemas.seat import context_for, context_seen, speaker_name

C = "c1"


def _base(**fields: Any) -> dict[str, Any]:
    return {"event_id": new_id("e"), "chat_id": C, "at": schemas.now(), **fields}


def joined(pid: str, name: str, prompt: str = "", history: int = 0) -> ParticipantJoined:
    bot = BotSpec(name=name, model="smollm2", system_prompt=prompt, history=history)
    return ParticipantJoined(**_base(participant_id=pid, bot=bot, by="ann"))


def posted(mid: str, text: str, parent: str | None = None) -> MessagePosted:
    return MessagePosted(
        **_base(message_id=mid, author_id="ann", author_name="Ann", content=text, parent_id=parent)
    )


def requested(rid: str, mid: str, speaker: str, context: list[str]) -> ReplyRequested:
    return ReplyRequested(
        **_base(reply_id=rid, message_id=mid, model="smollm2", context=context, requested_by="conductor"),
        speaker=speaker,
    )


def completed(rid: str, text: str, speaker: str = "") -> ReplyCompleted:
    return ReplyCompleted(
        **_base(reply_id=rid, attempt=1, worker_id="w", model="smollm2", text=text),
        prompt_tokens=1,
        completion_tokens=1,
        finish_reason="stop",
        speaker=speaker,
    )


def party(*more: ChatEvent) -> ChatState:
    events: list[ChatEvent] = [
        ChatCreated(**_base(owner_id="ann", title="t", system_prompt="A debate.")),
        joined("p1", "Zen Sage", prompt="You are calm."),
        joined("p2", "Hot Head", prompt="You are angry.", history=2),
        posted("m1", "Is tea better than coffee?"),
        requested("r1", "m1", "p1", ["m1"]),
        completed("r1", "Tea, surely."),
        requested("r2", "m1", "p2", ["m1", "r1"]),
        completed("r2", "Coffee!"),
        *more,
    ]
    return fold(C, enumerate(events, 1))


def test_a_bot_sees_its_own_turns_as_assistant_and_others_named_as_user() -> None:
    state = party(requested("r3", "m1", "p1", ["m1", "r1", "r2"]))
    assert context_for(state, state.replies["r3"].request) == [  # type: ignore[arg-type]
        Turn(role="system", content="You are calm.\n\nA debate."),
        Turn(role="user", content="Ann: Is tea better than coffee?"),
        Turn(role="assistant", content="Tea, surely."),
        Turn(role="user", content="Hot Head: Coffee!"),
    ]


def test_consecutive_turns_of_one_role_are_joined_and_keep_their_ids() -> None:
    state = party(requested("r3", "m1", "p2", ["m1", "r1", "r2"]))
    state.participants["p2"].bot = BotSpec(name="Hot Head", model="smollm2")  # all history for this check
    seen = context_seen(state, state.replies["r3"].request)  # type: ignore[arg-type]
    assert [(s.ids, s.turn.role) for s in seen] == [
        ((), "system"),
        (("m1", "r1"), "user"),
        (("r2",), "assistant"),
    ]
    assert seen[1].turn.content == "Ann: Is tea better than coffee?\n\nZen Sage: Tea, surely."


def test_history_keeps_only_the_last_turns() -> None:
    state = party(requested("r3", "m1", "p2", ["m1", "r1", "r2"]))
    turns = context_for(state, state.replies["r3"].request)  # type: ignore[arg-type]
    assert turns == [
        Turn(role="system", content="You are angry.\n\nA debate."),
        Turn(role="user", content="Zen Sage: Tea, surely."),
        Turn(role="assistant", content="Coffee!"),
    ]


def test_the_workers_partial_read_knows_the_speakers_from_the_completions() -> None:
    # The worker reads created, message.posted, participant.joined and reply.*.completed: no requests.
    events: list[ChatEvent] = [
        ChatCreated(**_base(owner_id="ann", title="t")),
        joined("p1", "Zen Sage"),
        joined("p2", "Hot Head"),
        posted("m1", "Hi"),
        completed("r1", "Hello from the sage", speaker="p1"),
    ]
    state = fold(C, enumerate(events, 1))
    request = requested("r2", "m1", "p2", ["m1", "r1"])
    assert [t.content for t in context_for(state, request)] == ["Ann: Hi\n\nZen Sage: Hello from the sage"]
    assert speaker_name(state, "r1") == "Zen Sage" and speaker_name(state, "m1") == "Ann"


def test_a_one_model_chat_is_unchanged_and_names_the_model() -> None:
    events: list[ChatEvent] = [
        ChatCreated(**_base(owner_id="ann", title="t", system_prompt="sys")),
        posted("m1", "Hi"),
        requested("r1", "m1", "", ["m1"]),
        completed("r1", "Hello"),
        requested("r2", "m1", "", ["m1", "r1"]),
    ]
    state = fold(C, enumerate(events, 1))
    assert [t.content for t in context_for(state, state.replies["r2"].request)] == ["sys", "Hi", "Hello"]  # type: ignore[arg-type]
    assert speaker_name(state, "r1") == "smollm2"


def test_the_floor_the_participants_and_choices_fold() -> None:
    state = party(
        FloorSet(**_base(floor=Floor(policy="mention", max_bot_turns=3), by="ann")),
        ParticipantMuted(**_base(participant_id="p2", by="ann")),
        FloorPaused(**_base(by="ann")),
        ChoiceMade(**_base(message_id="m1", reply_id="r1", rejected=["r2"], by="ann")),
    )
    assert state.has_bots and state.floor.paused and state.floor.floor.max_bot_turns == 3
    assert [p.name for p in state.participants.values() if p.speaks] == ["Zen Sage"]
    assert state.participant_named("zensage") is state.participants["p1"]
    assert state.choices["m1"].rejected == ["r2"] and state.tree.leaf() == "r1"
    state.apply(99, FloorResumed(**_base(by="ann")))
    assert not state.floor.paused and state.floor.paused_seq == 99
