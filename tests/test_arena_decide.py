"""The decisions on an arena battle (schemas/arena_decide.py) and the refusals in a battle before its vote
(schemas/chat_decide.py, schemas/party_decide.py), over states folded from events; and the pool's draw.
No bus here: decisions are pure."""

from __future__ import annotations

import random
from collections import Counter
from typing import Any

import pytest

import schemas
from schemas import arena_decide, party_decide
from schemas import chat_decide as decide
from schemas.chat import (
    ArenaContinued,
    ArenaTagged,
    ArenaVoted,
    BranchSelected,
    ChatCreated,
    ChatEvent,
    MessagePosted,
    ReplyCompleted,
    ReplyFailed,
    ReplyRequested,
)
from schemas.chat_decide import Ask, Conflict, Draft, Invalid, NotFound
from schemas.chat_state import ChatState
from schemas.sampling import SamplingParams
from services.api.arena_pool import draw

AT = schemas.now()
ASK_A = Ask(model="alpha", params=SamplingParams(), by="ann")
ASK_B = Ask(model="beta", params=SamplingParams(), by="ann")


class Battle:
    """A battle's state, grown one event at a time (what the log would hold)."""

    def __init__(self, *, arena: bool = True) -> None:
        self.state = ChatState("c1")
        self.seq = 0
        self.add(
            ChatCreated(
                event_id="e0",
                chat_id="c1",
                at=AT,
                owner_id="ann",
                title="t",
                compare=["alpha", "beta"],
                origin="arena" if arena else "chat",
                arena=arena,
                category="code",
            )
        )

    def add(self, *events: ChatEvent) -> None:
        for event in events:
            self.seq += 1
            self.state.apply(self.seq, event)

    def post(self) -> tuple[str, str]:
        """A post both sides are asked to answer: the replies of A and B."""
        decision = decide.post_message(
            self.state, Draft(author_id="ann", content="hi", images=[]), ASK_A, ASK_B
        )
        self.add(*decision.events)
        a, b = (e for e in decision.events if isinstance(e, ReplyRequested))
        return a.reply_id, b.reply_id

    def complete(self, reply_id: str, tokens: int, reason: Any = "stop") -> None:
        model = self.state.replies[reply_id].request.model  # type: ignore[union-attr]
        self.add(
            ReplyCompleted(
                event_id=f"end-{reply_id}",
                chat_id="c1",
                at=AT,
                reply_id=reply_id,
                attempt=1,
                worker_id="w",
                model=model,
                text="x",
                prompt_tokens=1,
                completion_tokens=tokens,
                finish_reason=reason,
            )
        )

    def answered(self) -> tuple[str, str]:
        a, b = self.post()
        self.complete(a, 3)
        self.complete(b, 5)
        return a, b


def _refused(kind: type[Exception], code: str, call: Any) -> str:
    with pytest.raises(kind) as caught:
        call()
    assert getattr(caught.value, "code", "") == code, caught.value
    return str(caught.value)


def test_a_vote_names_both_models_with_each_sides_answers_tokens_and_category() -> None:
    battle = Battle()
    a1, b1 = battle.answered()
    battle.add(ArenaTagged(event_id="t", chat_id="c1", at=AT, category="math", by="ann"))
    decision = arena_decide.vote(battle.state, "ann", "B")
    assert decision.fence is not None and decision.fence.seq == battle.state.last_seq  # the whole chat
    voted = decision.one(ArenaVoted)
    assert (voted.vote, voted.model_a, voted.model_b, voted.voter_id) == ("B", "alpha", "beta", "ann")
    assert (voted.replies_a, voted.replies_b) == ([a1], [b1])
    assert (voted.tokens_a, voted.tokens_b, voted.category) == (3, 5, "math")


def test_a_vote_waits_for_both_sides_and_is_cast_once() -> None:
    battle = Battle()
    _refused(
        Conflict, "battle_unfinished", lambda: arena_decide.vote(battle.state, "ann", "A")
    )  # nothing asked
    a, b = battle.post()
    battle.complete(a, 3)
    message = _refused(Conflict, "battle_unfinished", lambda: arena_decide.vote(battle.state, "ann", "A"))
    assert "side B" in message and "beta" not in message  # a refusal names the side, never the model
    battle.add(
        ReplyFailed(event_id="f", chat_id="c1", at=AT, reply_id=b, attempt=1, worker_id="w", error="boom")
    )
    message = _refused(Conflict, "battle_unfinished", lambda: arena_decide.vote(battle.state, "ann", "A"))
    assert message == "side B failed; start a new battle"
    _refused(Conflict, "arena_battle", battle.post)  # no asking again: a battle judges one prompt
    stopped = Battle()
    a, b = stopped.post()
    stopped.complete(a, 1)
    stopped.complete(b, 0, "cancelled")
    message = _refused(Conflict, "battle_unfinished", lambda: arena_decide.vote(stopped.state, "ann", "tie"))
    assert message == "side B's answer was stopped; start a new battle"
    battle = Battle()
    a, b = battle.answered()
    _refused(Invalid, "", lambda: arena_decide.vote(battle.state, "ann", "C"))
    decision = arena_decide.vote(battle.state, "ann", "both_bad")
    assert (decision.one(ArenaVoted).replies_a, decision.one(ArenaVoted).replies_b) == ([a], [b])
    battle.add(*decision.events)
    message = _refused(Conflict, "already_voted", lambda: arena_decide.vote(battle.state, "ann", "A"))
    assert "revealed" in message


def test_only_a_battle_is_voted_continued_or_tagged() -> None:
    plain = Battle(arena=False)
    plain.answered()
    for call in (
        lambda: arena_decide.vote(plain.state, "ann", "A"),
        lambda: arena_decide.continue_with(plain.state, "A", "ann"),
        lambda: arena_decide.tag(plain.state, "code", "ann"),
    ):
        _refused(Conflict, "not_a_battle", call)
    _refused(NotFound, "", lambda: arena_decide.vote(ChatState("nothing"), "ann", "A"))


def test_continue_after_the_vote_goes_on_with_that_sides_model_on_its_last_answer() -> None:
    battle = Battle()
    _, b2 = battle.answered()
    _refused(Conflict, "not_voted", lambda: arena_decide.continue_with(battle.state, "B", "ann"))
    battle.add(*arena_decide.vote(battle.state, "ann", "A").events)
    _refused(Conflict, "choose_side", lambda: battle.post())  # a voted battle asks which side first
    _refused(Invalid, "", lambda: arena_decide.continue_with(battle.state, "C", "ann"))
    decision = arena_decide.continue_with(battle.state, "B", "ann")
    continued, selected = decision.events
    assert isinstance(continued, ArenaContinued) and isinstance(selected, BranchSelected)
    assert (continued.side, continued.model, continued.reply_id, selected.node_id) == ("B", "beta", b2, b2)
    battle.add(*decision.events)
    _refused(Conflict, "already_continued", lambda: arena_decide.continue_with(battle.state, "A", "ann"))
    assert battle.state.model == "beta" and battle.state.compare == []
    posted = decide.post_message(battle.state, Draft(author_id="ann", content="more", images=[]), ASK_B)
    assert [type(e) for e in posted.events] == [MessagePosted, ReplyRequested]
    assert posted.events[0].parent_id == b2  # type: ignore[union-attr]  # on the chosen side's branch


def test_a_tag_is_the_battles_category_until_the_next() -> None:
    battle = Battle()
    decision = arena_decide.tag(battle.state, "math", "root")
    assert decision.fence is None and decision.one(ArenaTagged).category == "math"
    battle.add(*decision.events)
    assert battle.state.category == "math"
    _refused(Invalid, "", lambda: arena_decide.tag(battle.state, "x" * 65, "ann"))
    assert arena_decide.tag(battle.state, "", "ann").one(ArenaTagged).category == ""


def test_before_the_vote_a_battle_refuses_what_would_change_what_is_judged() -> None:
    battle = Battle()
    a, b = battle.answered()
    message_id = battle.state.tree.nodes[a].parent
    refusals = {
        "regenerate": lambda: decide.regenerate(battle.state, a, ASK_A),
        "edit": lambda: decide.post_message(
            battle.state, Draft(author_id="ann", content="x", images=[], edit_of=message_id), ASK_A, ASK_B
        ),
        "branch": lambda: decide.select_branch(battle.state, b, "ann"),
        "choose": lambda: party_decide.choose(battle.state, a, "ann"),
        "join": lambda: party_decide.join(battle.state, [], "ann"),
        "leave": lambda: party_decide.leave(battle.state, "p1", "ann"),
        "floor": lambda: party_decide.moderate(battle.state, party_decide.FloorAction(action="pause"), "ann"),
    }
    for name, call in refusals.items():
        message = _refused(Conflict, "arena_battle", call)
        assert "vote" in message, name
    _refused(Conflict, "arena_battle", battle.post)  # a battle judges one prompt
    # After the vote the battle is a side-by-side chat (then, continued, a one-model one), but for choosing.
    battle = Battle()
    a, b = battle.answered()
    battle.add(*arena_decide.vote(battle.state, "ann", "tie").events)
    assert decide.select_branch(battle.state, b, "ann").events
    assert decide.regenerate(battle.state, a, ASK_A).events
    _refused(Conflict, "arena_battle", lambda: party_decide.choose(battle.state, a, "ann"))  # the vote chose


def test_the_draw_picks_among_the_pairs_that_met_least_in_both_orders() -> None:
    rng = random.Random(7)
    pool = ["a", "b", "c"]
    assert {draw(pool, {("a", "b"): 2, ("a", "c"): 1, ("b", "c"): 2}, rng) for _ in range(40)} == {
        ("a", "c"),
        ("c", "a"),
    }
    met: Counter[tuple[str, str]] = Counter()
    for _ in range(30):
        side_a, side_b = draw(pool, met, rng)
        assert side_a != side_b
        met[(min(side_a, side_b), max(side_a, side_b))] += 1
        assert max(met.values()) - min(met.get(p, 0) for p in [("a", "b"), ("a", "c"), ("b", "c")]) <= 1
    with pytest.raises(ValueError):
        draw(["a"], {}, rng)
