"""Who speaks next (schemas/floor.py), on folded events: every policy, the limits and the moderator."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import schemas
from schemas.bot import BotSpec
from schemas.chat import (
    ChatCreated,
    ChatDeleted,
    ChatEvent,
    Floor,
    FloorPaused,
    FloorResumed,
    FloorSet,
    FloorStopped,
    MessagePosted,
    ParticipantJoined,
    ParticipantLeft,
    ParticipantMuted,
    Policy,
    ReplyCancelled,
    ReplyCompleted,
    ReplyFailed,
    SpeakerNamed,
)
from schemas.chat_state import ChatState
from schemas.floor import CONDUCTOR, Idle, Speak, Wait, first_mentioned, next_turn
from schemas.ids import new_id
from schemas.seat import context_for
from schemas.subjects import one_chat

C = "c1"
NOW = schemas.now()


def _base(**fields: Any) -> dict[str, Any]:
    return {"event_id": new_id("e"), "chat_id": C, "at": NOW, **fields}


def joined(pid: str, name: str, delay: float = 0.0) -> ParticipantJoined:
    return ParticipantJoined(
        **_base(participant_id=pid, bot=BotSpec(name=name, model=f"m-{pid}", delay_s=delay), by="ann")
    )


def floor_set(policy: Policy, **limits: Any) -> FloorSet:
    return FloorSet(**_base(floor=Floor(policy=policy, **limits), by="ann"))


def posted(text: str) -> MessagePosted:
    return MessagePosted(**_base(message_id=new_id("m"), author_id="ann", author_name="Ann", content=text))


def completed(reply_id: str, text: str, speaker: str, finish: str = "stop") -> ReplyCompleted:
    return ReplyCompleted(
        **_base(reply_id=reply_id, attempt=1, worker_id="w", model="m", text=text),
        prompt_tokens=1,
        completion_tokens=1,
        finish_reason=finish,  # type: ignore[arg-type]
        speaker=speaker,
    )


class Chat:
    """A chat folded event by event, with the conductor's turns played through."""

    def __init__(self, policy: Policy = "round_robin", bots: int = 2, **limits: Any) -> None:
        self.state = ChatState(C)
        names = ["Zen Sage", "Hot Head", "Quiet One"]
        self.add(ChatCreated(**_base(owner_id="ann", title="t")))
        for i in range(bots):
            self.add(joined(f"p{i + 1}", names[i]))
        self.add(floor_set(policy, **limits))

    def add(self, *events: ChatEvent) -> Chat:
        for event in events:
            self.state.apply(self.state.last_seq + 1, event)
        return self

    def speak(self, text: str = "ok", ending: str = "completed") -> str | None:
        """Append the next turn, if any, and end it; the speaker's participant id."""
        turn = next_turn(self.state, NOW)
        if not isinstance(turn, Speak):
            return None
        request = turn.request
        self.add(request)
        if ending == "failed":
            self.add(ReplyFailed(**_base(reply_id=request.reply_id, attempt=1, worker_id="w", error="x")))
        else:
            self.add(
                completed(
                    request.reply_id, text, request.speaker, "cancelled" if ending == "cancelled" else "stop"
                )
            )
        return request.speaker

    def run(self, limit: int = 50) -> list[str]:
        """Play turns until the floor says nothing more."""
        speakers: list[str] = []
        while len(speakers) < limit and (speaker := self.speak()) is not None:
            speakers.append(speaker)
        return speakers


def test_round_robin_gives_each_bot_its_rounds_in_join_order_after_a_message() -> None:
    chat = Chat("round_robin", bots=2, rounds=3).add(posted("Tea or coffee?"))
    assert chat.run() == ["p1", "p2", "p1", "p2", "p1", "p2"]
    assert next_turn(chat.state, NOW) == Idle("rounds done")
    chat.add(posted("And water?"))
    assert chat.run() == ["p1", "p2"] * 3


def test_the_request_follows_the_leaf_sees_the_path_and_is_fenced_on_the_chat() -> None:
    chat = Chat("round_robin").add(posted("Hi"))
    chat.speak("Hello from the sage")
    leaf = chat.state.tree.leaf()
    turn = next_turn(chat.state, NOW)
    assert isinstance(turn, Speak)
    request = turn.request
    assert (request.message_id, request.speaker, request.model) == (leaf, "p2", "m-p2")
    assert request.requested_by == CONDUCTOR
    assert request.context == chat.state.tree.active_path()
    assert turn.decision.fence is not None
    assert (turn.decision.fence.subject, turn.decision.fence.seq) == (one_chat(C), chat.state.last_seq)
    chat.add(request)
    assert context_for(chat.state, request)[-1].content == "Ann: Hi\n\nZen Sage: Hello from the sage"


def test_nothing_without_bots_a_message_or_while_a_reply_is_open() -> None:
    chat = Chat("auto", bots=0)
    chat.add(posted("Hi"))
    assert next_turn(chat.state, NOW) == Idle("no bots")
    chat = Chat("auto")
    assert next_turn(chat.state, NOW) == Idle("nothing said yet")
    chat.add(posted("Hi"))
    turn = next_turn(chat.state, NOW)
    assert isinstance(turn, Speak)
    chat.add(turn.request)
    assert next_turn(chat.state, NOW) == Idle("a reply is open")
    chat.add(ReplyCancelled(**_base(reply_id=turn.request.reply_id, by="ann")))  # asked to stop: not open
    assert isinstance(next_turn(chat.state, NOW), Speak)
    chat.add(ChatDeleted(**_base(by="ann")))
    assert next_turn(chat.state, NOW) == Idle("no chat")


def test_max_bot_turns_stops_auto_and_failed_or_cancelled_turns_count() -> None:
    chat = Chat("auto", bots=3, max_bot_turns=4).add(posted("Go"))
    assert chat.speak(ending="failed") == "p1"
    assert chat.speak(ending="cancelled") == "p2"
    assert chat.run() == ["p3", "p1"]
    assert next_turn(chat.state, NOW) == Idle("max_bot_turns reached")


def test_max_bot_turns_caps_round_robin_rounds_too() -> None:
    chat = Chat("round_robin", bots=2, rounds=5, max_bot_turns=3).add(posted("Go"))
    assert chat.run() == ["p1", "p2", "p1"]


def test_a_muted_bot_is_skipped_and_unmuted_comes_back() -> None:
    chat = Chat("round_robin", bots=3, rounds=2)
    chat.add(ParticipantMuted(**_base(participant_id="p2", muted=True, by="ann")), posted("Go"))
    assert chat.run() == ["p1", "p3", "p1", "p3"]
    chat.add(ParticipantMuted(**_base(participant_id="p2", muted=False, by="ann")), posted("Again"))
    assert chat.run() == ["p1", "p2", "p3"] * 2
    chat.add(ParticipantLeft(**_base(participant_id="p1", by="ann")), posted("Once more"))
    assert chat.run() == ["p2", "p3"] * 2


def test_manual_speaks_only_when_named_and_a_name_is_used_once() -> None:
    chat = Chat("manual", bots=2).add(posted("Hi"))
    assert next_turn(chat.state, NOW) == Idle("manual: waiting for the moderator")
    chat.add(SpeakerNamed(**_base(participant_id="p2", by="ann")))
    assert chat.run() == ["p2"]
    chat.add(SpeakerNamed(**_base(participant_id="p2", by="ann")))
    assert chat.run() == ["p2"]


def test_a_named_speaker_goes_next_under_round_robin_then_the_order_goes_on_from_it() -> None:
    chat = Chat("round_robin", bots=3, rounds=1).add(posted("Hi"))
    chat.add(SpeakerNamed(**_base(participant_id="p3", by="ann")))
    assert chat.run() == ["p3", "p1", "p2"]


def test_a_named_muted_bot_does_not_speak() -> None:
    chat = Chat("manual", bots=2).add(posted("Hi"))
    chat.add(
        ParticipantMuted(**_base(participant_id="p1", by="ann")),
        SpeakerNamed(**_base(participant_id="p1", by="ann")),
    )
    assert chat.run() == []


def test_pause_holds_every_turn_and_resume_goes_on_where_it_stopped() -> None:
    chat = Chat("round_robin", bots=2, rounds=2).add(posted("Go"))
    assert chat.speak() == "p1"
    chat.add(FloorPaused(**_base(by="ann")))
    assert next_turn(chat.state, NOW) == Idle("paused")
    chat.add(SpeakerNamed(**_base(participant_id="p1", by="ann")))
    assert next_turn(chat.state, NOW) == Idle("paused")  # the named one speaks after the resume
    chat.add(FloorResumed(**_base(by="ann")))
    assert chat.run() == ["p1", "p2", "p1"]


def test_stop_holds_until_a_human_posts_or_the_moderator_names_a_speaker() -> None:
    chat = Chat("auto", bots=2, max_bot_turns=10).add(posted("Go"))
    assert chat.run(limit=2) == ["p1", "p2"]
    chat.add(FloorStopped(**_base(by="ann")))
    assert next_turn(chat.state, NOW) == Idle("stopped")
    chat.add(SpeakerNamed(**_base(participant_id="p2", by="ann")))
    assert chat.run() == ["p2"]
    assert next_turn(chat.state, NOW) == Idle("stopped")
    chat.add(posted("Go on"))
    assert chat.speak() is not None


def test_mention_routes_to_the_bot_named_by_the_last_turn() -> None:
    chat = Chat("mention", bots=3).add(posted("What do you think, @hot head?"))
    assert chat.speak("I say @Quiet One should answer. Or @Zen Sage.") == "p2"
    assert chat.speak("@HotHead, you again: also @Quiet One") == "p3"
    assert chat.speak("No one.") == "p2"
    assert next_turn(chat.state, NOW) == Idle("nobody mentioned")


def test_mention_never_hands_the_word_to_the_speaker_itself_nor_to_a_muted_bot() -> None:
    chat = Chat("mention", bots=3).add(posted("@Zen Sage?"))
    assert chat.speak("@ZenSage says: @Quiet One") == "p1"
    assert chat.speak() == "p3"
    chat.add(ParticipantMuted(**_base(participant_id="p1", by="ann")), posted("@Zen Sage and then @Hot Head"))
    assert chat.speak() == "p2"


def test_mention_names_match_at_a_word_boundary_and_the_longest_name_wins() -> None:
    chat = Chat("mention", bots=2)
    zen, hot = chat.state.participants["p1"], chat.state.participants["p2"]
    assert first_mentioned("hi @zensage!", [zen, hot]) is zen
    assert first_mentioned("hi @Zen   Sage", [zen, hot]) is zen
    assert first_mentioned("hi @ZenSages", [zen, hot]) is None
    assert first_mentioned("mail zen@sage.org", [zen, hot]) is None
    assert first_mentioned("@ Zen Sage", [zen, hot]) is None
    assert first_mentioned("@Hot Head then @Zen Sage", [zen, hot]) is hot
    chat.add(joined("p3", "Zen"))
    short = chat.state.participants["p3"]
    assert first_mentioned("@Zen Sage", [short, zen]) is zen
    assert first_mentioned("@Zen, Sage", [short, zen]) is short


def test_the_delay_is_the_longer_of_the_floors_and_the_bots_after_the_last_turn_ended() -> None:
    chat = Chat("round_robin", bots=0, delay_s=2.0)
    chat.add(joined("p1", "Zen Sage", delay=5.0), joined("p2", "Hot Head"), posted("Go"))
    assert next_turn(chat.state, NOW) == Wait(NOW + timedelta(seconds=5), "p1")
    assert isinstance(next_turn(chat.state, NOW + timedelta(seconds=5)), Speak)
    turn = next_turn(chat.state, NOW + timedelta(seconds=5))
    assert isinstance(turn, Speak)
    chat.add(turn.request, completed(turn.request.reply_id, "x", "p1"))
    assert next_turn(chat.state, NOW) == Wait(NOW + timedelta(seconds=2), "p2")


def test_changing_the_policy_while_it_runs_applies_at_the_next_turn() -> None:
    chat = Chat("auto", bots=2, max_bot_turns=10).add(posted("Go"))
    assert chat.run(limit=1) == ["p1"]
    chat.add(floor_set("manual"))
    assert chat.run() == []
    chat.add(floor_set("round_robin", rounds=2))  # 4 turns since the message: 3 more, on from p1
    assert chat.run() == ["p2", "p1", "p2"]
