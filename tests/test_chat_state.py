"""The chat's rules as pure functions: the state folded from events, what a model sees, and decisions.

No bus here: events are built in memory, folded, and the state, contexts and decisions are checked.
"""

from __future__ import annotations

from typing import Any

import pytest

import schemas
from schemas import chat_decide as decide
from schemas.chat import (
    BranchSelected,
    ChatCreated,
    ChatDeleted,
    ChatErased,
    ChatEvent,
    ChatRenamed,
    ChatRestored,
    FeedbackGiven,
    MessagePosted,
    ReplyCancelled,
    ReplyCompleted,
    ReplyFailed,
    ReplyRequested,
    ReplyRetrying,
    ReplyStarted,
    WebhookAttempted,
)
from schemas.chat_decide import Ask, Draft, NotFound
from schemas.chat_state import ChatState, Turn, context_ids, conversation, fold
from schemas.ids import new_id
from schemas.sampling import SamplingParams
from schemas.seat import context_for

C = "c1"
ASK = Ask(model="demo", params=SamplingParams(), by="ann")


def _base(**fields: Any) -> dict[str, Any]:
    return {"event_id": new_id("e"), "chat_id": C, "at": schemas.now(), **fields}


def created(system: str = "", origin: str = "chat") -> ChatCreated:
    return ChatCreated(**_base(owner_id="ann", title="t", system_prompt=system, origin=origin))


def message(
    mid: str, parent: str | None = None, edit_of: str | None = None, images: list[str] | None = None
) -> MessagePosted:
    return MessagePosted(
        **_base(message_id=mid, author_id="ann", content=f"text {mid}", parent_id=parent, edit_of=edit_of),
        images=images or [],
    )


def requested(rid: str, mid: str, context: list[str] | None = None, imported: bool = False) -> ReplyRequested:
    return ReplyRequested(
        **_base(reply_id=rid, message_id=mid, model="demo", context=context or [], requested_by="ann"),
        imported=imported,
    )


def started(rid: str, attempt: int = 1) -> ReplyStarted:
    return ReplyStarted(**_base(reply_id=rid, attempt=attempt, worker_id=f"w{attempt}", model="demo"))


def completed(rid: str, reason: str = "stop", attempt: int = 1, text: str | None = None) -> ReplyCompleted:
    return ReplyCompleted(
        **_base(reply_id=rid, attempt=attempt, worker_id=f"w{attempt}", model="demo"),
        text=text if text is not None else f"answer {rid}",
        prompt_tokens=1,
        completion_tokens=1,
        finish_reason=reason,  # type: ignore[arg-type]
    )


def failed(rid: str, attempt: int = 1) -> ReplyFailed:
    return ReplyFailed(**_base(reply_id=rid, attempt=attempt, worker_id="w", error="boom"))


def state_of(*events: ChatEvent) -> ChatState:
    return fold(C, enumerate(events, 1))


def test_the_state_holds_the_chat_facts() -> None:
    state = state_of(created("Be brief.", origin="openai"))
    assert state.alive and (state.owner_id, state.origin, state.system_prompt) == (
        "ann",
        "openai",
        "Be brief.",
    )
    state.apply(2, ChatRenamed(**_base(title="new", by="ann")))
    state.apply(3, ChatDeleted(**_base(by="ann")))
    assert state.title == "new" and state.deleted and state.alive  # a deleted chat can be restored
    state.apply(4, ChatRestored(**_base(by="root")))
    assert not state.deleted
    state.apply(9, ChatErased(**_base(by="root")))
    assert state.erased and not state.alive and state.last_seq == 9
    assert not ChatState(C).alive  # never created


def test_reply_status_follows_attempts_and_the_first_end() -> None:
    state = state_of(created(), message("m1"), requested("r1", "m1"))
    reply = state.replies["r1"]
    assert (reply.status, reply.open) == ("requested", True)
    state.apply(4, started("r1", attempt=2))
    state.apply(5, started("r1", attempt=1))  # an older attempt does not move it back
    assert (reply.status, reply.attempt, reply.worker_id) == ("started", 2, "w2")
    state.apply(6, completed("r1", attempt=2))
    state.apply(7, failed("r1", attempt=2))  # an end is final
    assert (reply.status, reply.open) == ("completed", False)

    state.apply(8, requested("r2", "m1"))
    state.apply(9, ReplyCancelled(**_base(reply_id="r2", by="ann")))
    assert state.replies["r2"].stop_asked and not state.replies["r2"].open
    state.apply(10, completed("r2", reason="cancelled"))
    assert state.replies["r2"].status == "cancelled"
    state.apply(11, requested("r3", "m1"))
    state.apply(12, failed("r3"))
    assert state.replies["r3"].status == "failed" and state.answer("r3") is None


def test_a_retried_job_waits_again_from_its_attempt_and_a_webhook_changes_nothing() -> None:
    state = state_of(created(origin="jobs"), message("m1"), requested("r1", "m1"), started("r1"))
    retry = _base(reply_id="r1", attempt=1, worker_id="w1", code="engine_error", error="x", retry_in_s=1.0)
    state.apply(5, ReplyRetrying(**retry))
    reply = state.replies["r1"]
    assert (reply.status, reply.attempt, reply.open) == ("requested", 1, True)
    state.apply(6, started("r1", attempt=2))
    state.apply(7, completed("r1", attempt=2))
    state.apply(8, ReplyRetrying(**retry))  # a late retry of an older attempt: the end holds
    state.apply(9, WebhookAttempted(**_base(reply_id="r1", delivery=1, status=200, final=True)))
    assert (reply.status, reply.attempt, state.answer("r1") is not None) == ("completed", 2, True)
    assert state.origin == "jobs"


def test_only_non_error_completions_enter_later_contexts_and_the_first_one_counts() -> None:
    state = state_of(
        created(),
        message("m1"),
        requested("r1", "m1"),
        completed("r1", reason="error"),
        requested("r2", "m1"),
        completed("r2", reason="cancelled", text="partial"),
        completed("r2", text="later"),
        requested("r3", "m1"),
    )
    assert state.turn("r1") is None and state.turn("r3") is None  # an error, a pending reply
    assert state.turn("r2") == Turn(role="assistant", content="partial")  # a cancelled reply's text counts


def test_context_ids_follow_the_active_path_through_edits_and_regenerations() -> None:
    state = state_of(
        created(),
        message("m1"),
        requested("r1", "m1"),
        completed("r1"),
        message("m2", parent="r1"),
        requested("r2", "m2"),  # pending: not in contexts
        requested("r1b", "m1"),  # a regeneration: a sibling of r1
        completed("r1b"),
    )
    assert context_ids(state, "m2") == ["m1", "r1", "m2"]
    assert state.tree.leaf() == "r1b" and state.tree.siblings("r1b") == ["r1", "r1b"]
    state.apply(9, message("m2e", parent="r1", edit_of="m2"))
    assert context_ids(state, "m2e") == ["m1", "r1", "m2e"] and state.tree.siblings("m2e") == ["m2", "m2e"]
    state.apply(10, message("m0", edit_of="m1"))  # an edit of a first message forks at the root
    assert context_ids(state, "m0") == ["m0"] and state.tree.active_path() == ["m0"]
    assert context_ids(state, None) == [] and context_ids(state, "unknown") == []


def test_legacy_parentless_messages_follow_the_active_leaf() -> None:
    state = state_of(created(), message("m1"), requested("r1", "m1"), completed("r1"), message("m2"))
    assert state.tree.path_to("m2") == ["m1", "r1", "m2"]
    state.apply(6, requested("r1b", "m1"))
    state.apply(7, BranchSelected(**_base(node_id="r1", by="ann")))
    state.apply(8, message("m3"))  # after the selected leaf, not after the newest node
    assert context_ids(state, "m3") == ["m1", "r1", "m2", "m3"]


def test_a_model_sees_the_system_prompt_then_exactly_its_requests_context() -> None:
    state = state_of(
        created("Be brief."),
        message("m1", images=["a" * 64]),
        requested("r1", "m1", ["m1"]),
        completed("r1"),
        message("m2", parent="r1"),
        requested("r2", "m2", ["m2", "m1", "gone"]),  # an order of its own, and an id the log lost
        completed("r1", text="a later completion of r1 is not its answer"),
    )
    assert context_for(state, state.replies["r2"].request) == [  # type: ignore[arg-type]
        Turn(role="system", content="Be brief."),
        Turn(role="user", content="text m2"),
        Turn(role="user", content="text m1", images=("a" * 64,)),
    ]
    assert conversation(state, ["m1", "r1"])[-1] == Turn(role="assistant", content="answer r1")
    assert conversation(state_of(created(), message("m1")), ["m1"]) == [Turn(role="user", content="text m1")]


def test_the_workers_partial_read_still_gives_the_context() -> None:
    # The worker reads created, message.posted and reply.*.completed only: no requests, no tree of replies.
    state = state_of(created("sys"), message("m1"), completed("r1"), message("m2", parent="r1"))
    request = requested("r2", "m2", ["m1", "r1", "m2"])
    assert [t.content for t in context_for(state, request)] == ["sys", "text m1", "answer r1", "text m2"]


def test_imported_replies_enter_later_contexts() -> None:
    state = state_of(created(), message("m1"), requested("r1", "m1", imported=True), completed("r1"))
    decision = decide.post_message(state, Draft(author_id="ann", content="next", images=[]), ASK)
    assert decision.one(ReplyRequested).context == ["m1", "r1", decision.one(MessagePosted).message_id]


def test_unreadable_events_still_move_the_fences() -> None:
    state = state_of(created(), message("m1"))
    assert state.last_post_seq == 2
    state.skip(7, f"chat.{C}.message.posted")
    state.skip(8, f"chat.{C}.something.new")
    assert (state.last_post_seq, state.last_seq, state.erased) == (7, 8, False)
    state.skip(9, f"chat.{C}.erased")
    assert state.erased


def test_images_a_chat_holds() -> None:
    a, b = "a" * 64, "b" * 64
    state = state_of(created(), message("m1", images=[b, a]), message("m2", images=[a]))
    assert list(state.held_images()) == [b, a]
    state.apply(4, ChatDeleted(**_base(by="ann")))
    assert state.held_images() == {} and list(state.held_images(deleted_too=True)) == [b, a]
    state.apply(5, ChatErased(**_base(by="ann")))
    assert state.held_images(deleted_too=True) == {}


def test_ratings_are_the_owners_latest() -> None:
    def rate(user: str, rating: str | None) -> FeedbackGiven:
        return FeedbackGiven(**_base(reply_id="r1", user_id=user, rating=rating))

    state = state_of(created(), message("m1"), requested("r1", "m1"), rate("ann", "up"), rate("bob", "down"))
    assert state.ratings["r1"].rating == "up"
    state.apply(6, rate("ann", None))
    assert state.ratings["r1"].rating is None


# ------------------------------------------------------------------------------------------ decisions


def test_posting_follows_the_leaf_fenced_on_the_last_post() -> None:
    state = state_of(created(), message("m1"), requested("r1", "m1"), completed("r1"))
    decision = decide.post_message(state, Draft(author_id="ann", content="two", images=["x" * 64]), ASK)
    posted, reply = decision.events
    assert isinstance(posted, MessagePosted) and isinstance(reply, ReplyRequested)
    assert (posted.parent_id, posted.edit_of, posted.images) == ("r1", None, ["x" * 64])
    assert (reply.message_id, reply.context, reply.model) == (
        posted.message_id,
        ["m1", "r1", posted.message_id],
        "demo",
    )
    assert decision.fence == decide.Fence(f"chat.{C}.message.posted", 2)
    for seq, event in enumerate(decision.events, 5):
        state.apply(seq, event)
    assert state.tree.active_path() == ["m1", "r1", posted.message_id, reply.reply_id]
    assert decide.post_fence(state).seq == 5


def test_the_first_post_has_no_parent_and_an_empty_chat_no_fence_yet() -> None:
    decision = decide.post_message(state_of(created()), Draft(author_id="ann", content="hi", images=[]), ASK)
    posted = decision.one(MessagePosted)
    assert posted.parent_id is None and decision.one(ReplyRequested).context == [posted.message_id]
    assert decision.fence is not None and decision.fence.seq == 0


def test_an_edit_is_a_sibling_under_the_edited_messages_parent() -> None:
    state = state_of(created(), message("m1"), requested("r1", "m1"), completed("r1"), message("m2", "r1"))
    edit = decide.post_message(state, Draft(author_id="ann", content="m2'", images=[], edit_of="m2"), ASK)
    posted = edit.one(MessagePosted)
    assert (posted.parent_id, posted.edit_of) == ("r1", "m2")
    assert edit.one(ReplyRequested).context == ["m1", "r1", posted.message_id]
    first = decide.post_message(state, Draft(author_id="ann", content="m1'", images=[], edit_of="m1"), ASK)
    assert first.one(MessagePosted).parent_id is None and first.one(ReplyRequested).context == [
        first.one(MessagePosted).message_id
    ]
    for missing in ("r1", "nope"):  # a reply is no message
        with pytest.raises(NotFound, match=f"no message {missing} in chat {C}"):
            decide.post_message(state, Draft(author_id="ann", content="x", images=[], edit_of=missing), ASK)


def test_nothing_is_decided_on_a_chat_that_is_gone() -> None:
    gone = state_of(created(), message("m1"), requested("r1", "m1"), ChatErased(**_base(by="root")))
    with pytest.raises(NotFound, match=f"no chat {C}"):
        decide.post_message(gone, Draft(author_id="ann", content="x", images=[]), ASK)
    with pytest.raises(NotFound, match=f"no chat {C}"):
        decide.regenerate(gone, "r1", ASK)


def test_regenerating_asks_again_for_the_same_message_and_path() -> None:
    state = state_of(
        created(),
        message("m1"),
        requested("r1", "m1"),
        completed("r1"),
        message("m2", "r1"),
        requested("r2", "m2"),
    )
    again = decide.regenerate(
        state, "r2", Ask(model="other", params=SamplingParams(temperature=0.2), by="ann")
    )
    (reply,) = again.events
    assert isinstance(reply, ReplyRequested) and again.fence is None
    assert (reply.message_id, reply.context, reply.model, reply.params.temperature) == (
        "m2",
        ["m1", "r1", "m2"],
        "other",
        0.2,
    )
    assert decide.regenerated_message(state, "r1") == "m1"
    for missing in ("m1", "nope"):
        with pytest.raises(NotFound, match=f"no reply {missing} in chat {C}"):
            decide.regenerate(state, missing, ASK)


def test_selecting_a_branch_needs_a_node_of_the_chat() -> None:
    state = state_of(created(), message("m1"), requested("r1", "m1"))
    (selected,) = decide.select_branch(state, "m1", "ann").events
    assert isinstance(selected, BranchSelected) and (selected.node_id, selected.by) == ("m1", "ann")
    with pytest.raises(NotFound, match=f"no message or reply nope in chat {C}"):
        decide.select_branch(state, "nope", "ann")


def test_erasing_stops_open_replies_and_releases_every_image() -> None:
    a, b = "a" * 64, "b" * 64
    state = state_of(
        created(),
        message("m1", images=[a]),
        requested("r1", "m1"),
        completed("r1"),
        requested("r2", "m1"),
        started("r2"),
        requested("r3", "m1"),
        ReplyCancelled(**_base(reply_id="r3", by="ann")),
        message("m2", images=[b, a]),
        requested("r4", "m2"),
    )
    erasure = decide.erase(state, "root")
    assert [c.reply_id for c in erasure.cancels] == ["r2", "r4"]
    assert erasure.tombstone.chat_id == C and erasure.tombstone.by == "root"
    assert erasure.images == [a, b]
