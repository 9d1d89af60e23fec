"""What the voter (or an admin) may do to an arena battle: decisions that take its state and return the
events to append (see schemas/chat_decide.py for the contract; docs/arena.md for the battle's flow).

A battle's side A is the first alias of its `compare`, side B the second: each side's replies are those
asked of its alias. A vote and a continue are fenced on the whole chat (`chat_fence`), so a vote never
judges a battle that changed meanwhile (a post that landed, a side that failed).
"""

from __future__ import annotations

from typing import get_args

from schemas import now
from schemas.chat import ArenaContinued, ArenaTagged, ArenaVoted, BranchSelected, Side, Vote
from schemas.chat_decide import Conflict, Decision, Invalid, NotFound
from schemas.chat_state import ChatState, Reply
from schemas.ids import new_id
from schemas.party_decide import chat_fence

VOTES: tuple[str, ...] = get_args(Vote)
SIDES: tuple[str, ...] = get_args(Side)
MAX_CATEGORY = 64


def _battle(state: ChatState) -> None:
    """The chat exists and is a battle (Conflict `not_a_battle` otherwise)."""
    if not state.alive:
        raise NotFound(f"no chat {state.chat_id}")
    if not state.arena or state.created is None or len(state.created.compare) != 2:
        raise Conflict(f"chat {state.chat_id} is not an arena battle", code="not_a_battle")


def side_replies(state: ChatState, side: Side) -> list[Reply]:
    """The replies asked of a side's model in the battle, in stream order."""
    assert state.created is not None
    alias = state.created.compare[SIDES.index(side)]
    return [r for r in state.replies.values() if r.request is not None and r.request.model == alias]


def _finished(state: ChatState, side: Side) -> list[Reply]:
    """A side's answered replies, once its latest reply has completed (Conflict `battle_unfinished`)."""
    replies = side_replies(state, side)
    latest = replies[-1] if replies else None
    if latest is None or latest.status in ("requested", "started"):
        raise Conflict(
            f"side {side} has not finished answering yet: vote once both sides have", code="battle_unfinished"
        )
    if latest.status == "failed":
        raise Conflict(f"side {side} failed; start a new battle", code="battle_unfinished")
    if latest.status == "cancelled" or state.answer(latest.reply_id) is None:
        raise Conflict(f"side {side}'s answer was stopped; start a new battle", code="battle_unfinished")
    return [r for r in replies if state.answer(r.reply_id) is not None]


def _tokens(state: ChatState, replies: list[Reply]) -> int:
    return sum(answer.completion_tokens for r in replies if (answer := state.answer(r.reply_id)) is not None)


def vote(state: ChatState, voter_id: str, judged: str) -> Decision:
    """The voter judges the battle (A, B, tie or both_bad) once both sides' latest replies have answered:
    the vote names both models (the reveal) and records each side's answered replies and completion
    tokens, and the battle's category now."""
    _battle(state)
    if judged not in VOTES:
        raise Invalid(f"vote must be one of {', '.join(VOTES)}")
    if state.vote is not None:
        raise Conflict(
            "this battle was voted on already and its models are revealed: one vote per battle",
            code="already_voted",
        )
    replies_a, replies_b = _finished(state, "A"), _finished(state, "B")
    assert state.created is not None
    model_a, model_b = state.created.compare
    event = ArenaVoted(
        event_id=new_id("e"),
        chat_id=state.chat_id,
        at=now(),
        voter_id=voter_id,
        vote=judged,  # type: ignore[arg-type]  # one of VOTES, checked above
        model_a=model_a,
        model_b=model_b,
        replies_a=[r.reply_id for r in replies_a],
        replies_b=[r.reply_id for r in replies_b],
        tokens_a=_tokens(state, replies_a),
        tokens_b=_tokens(state, replies_b),
        category=state.category,
    )
    return Decision(events=(event,), fence=chat_fence(state))


def continue_with(state: ChatState, side: str, by: str) -> Decision:
    """After the vote, go on with one side's model alone, on the branch of that side's last answer."""
    _battle(state)
    if side not in SIDES:
        raise Invalid(f"side must be one of {', '.join(SIDES)}")
    voted = state.vote
    if voted is None:
        raise Conflict("vote first: a battle goes on with one side only after its vote", code="not_voted")
    if state.continued is not None:
        raise Conflict(
            f"this battle went on with side {state.continued.side} already", code="already_continued"
        )
    answered = voted.replies_a if side == "A" else voted.replies_b
    if not answered:
        raise Conflict(f"side {side} has no answer to go on from", code="no_answer")
    model = voted.model_a if side == "A" else voted.model_b
    continued = ArenaContinued(
        event_id=new_id("e"),
        chat_id=state.chat_id,
        at=now(),
        side=side,  # type: ignore[arg-type]  # one of SIDES, checked above
        model=model,
        reply_id=answered[-1],
        by=by,
    )
    selected = BranchSelected(
        event_id=new_id("e"), chat_id=state.chat_id, at=now(), node_id=answered[-1], by=by
    )
    return Decision(events=(continued, selected), fence=chat_fence(state))


def tag(state: ChatState, category: str, by: str) -> Decision:
    """Set the battle's category (the last tag holds; a vote records the one current when it is cast)."""
    _battle(state)
    if len(category) > MAX_CATEGORY:
        raise Invalid(f"a category has at most {MAX_CATEGORY} characters")
    event = ArenaTagged(event_id=new_id("e"), chat_id=state.chat_id, at=now(), category=category, by=by)
    return Decision(events=(event,))  # unfenced: the last tag holds, whatever else happens meanwhile
