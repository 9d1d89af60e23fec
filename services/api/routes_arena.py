"""Arena routes: start a blind battle between two models drawn from the pool, vote on it (the reveal), go
on with one side, tag its category. Every write on a battle is a decision on the chat's state
(schemas/arena_decide.py, schemas/chat_decide.py); docs/arena.md tells the flow."""

from __future__ import annotations

from datetime import datetime, timedelta

import msgspec
from aiohttp import web

import bus
import schemas
from logtools.chat_log import read_chat_state
from schemas import arena_decide
from schemas import chat_decide as decide
from schemas.api import AcceptedResponse, PostMessageRequest
from schemas.api_arena import (
    BattleCreated,
    BattleRequest,
    CategoryRequest,
    ContinueRequest,
    ContinueResponse,
    VoteRequest,
    VoteResponse,
)
from schemas.blind import LABELS
from schemas.chat import ArenaContinued, ArenaVoted, ChatCreated, MessagePosted, ReplyRequested
from schemas.chat_decide import Ask, Refused
from schemas.chat_state import ChatState
from schemas.ids import new_id
from schemas.queries import BattlePairs, PairCounts, VoteCount, VotesSince
from schemas.sampling import SamplingParams
from schemas.streams import CHAT
from services.api.access import chat_access
from services.api.arena_pool import draw, pool_now
from services.api.auth import principal_of
from services.api.errors import ApiError, json_response
from services.api.inputs import read_body
from services.api.keys import BUS, MODEL_DEFAULTS, SETTINGS
from services.api.projector import query
from services.api.refusal import refusal
from services.api.routes_chats import checked_draft, decided

MAX_TITLE_CHARS = 80
UNAVAILABLE = (
    "the arena needs two served models in its pool; an admin sets the pool with `chatbus admin arena pool`"
)


async def create_battle(request: web.Request) -> web.StreamResponse:
    """Start a battle (201): the prompt goes to two models drawn from the pool, answered side by side as
    "A" and "B"; nothing in the answer names them."""
    principal = principal_of(request)
    body = await read_body(request, BattleRequest)
    js = request.app[BUS].js
    draft = await checked_draft(request, PostMessageRequest(content=body.content, images=body.images))
    pool = await pool_now(js)
    if len(pool) < 2:
        raise ApiError(409, "arena_unavailable", UNAVAILABLE)
    met = await query(
        request,
        "arena.pairs",
        BattlePairs(models=pool, min_seq=await bus.last_seq(js, CHAT.name)),
        PairCounts,
    )
    drawn = draw(pool, {(pair.model_a, pair.model_b): pair.battles for pair in met.pairs})
    asks = await _battle_asks(request, drawn, body.params)
    created = ChatCreated(
        event_id=new_id("e"),
        chat_id=new_id("c"),
        at=schemas.now(),
        owner_id=principal.user_id,
        title=_title(body.content),
        compare=list(drawn),
        origin="arena",
        arena=True,
        category=body.category,
    )
    appended = await bus.append_event(js, created, expected_subject_seq=0)
    state = ChatState(created.chat_id)
    state.apply(appended.seq, created)
    decision, seq = await decided(
        request, created.chat_id, lambda state: decide.post_message(state, draft, *asks), state
    )
    answer = BattleCreated(
        chat_id=created.chat_id,
        message_id=decision.one(MessagePosted).message_id,
        reply_ids=[event.reply_id for event in decision.events if isinstance(event, ReplyRequested)],
        labels=list(LABELS),
        category=body.category,
        seq=seq,
    )
    return json_response(answer, status=201, headers={"Location": f"/v1/chats/{created.chat_id}"})


async def _battle_asks(
    request: web.Request, drawn: tuple[str, str], params: SamplingParams | None
) -> list[Ask]:
    """One ask per side, both with the same sampling: the body's, else chatbus's defaults — never a model's
    own defaults, which the `reply.requested` frames would show and which would tell the sides apart —
    with `max_new_tokens` held to the lower of the two models' caps (a refusal naming one cap would)."""
    served = [await request.app[MODEL_DEFAULTS].of(alias) for alias in drawn]
    caps = [one.max_new_tokens for one in served if one is not None and one.max_new_tokens]
    if any(one is None for one in served):  # drawn a moment ago: it just stopped being served
        raise ApiError(409, "arena_unavailable", "a drawn model stopped being served: start the battle again")
    params = params or SamplingParams()
    if caps and params.max_new_tokens > min(caps):
        params = msgspec.structs.replace(params, max_new_tokens=min(caps))
    by = principal_of(request).user_id
    return [Ask(model=alias, params=params, by=by) for alias in drawn]


def _title(content: str) -> str:
    """A battle's title: its prompt's first line (spaces collapsed, cut short), as other chats get theirs."""
    first = next((line for line in content.splitlines() if line.strip()), "")
    return " ".join(first.split())[:MAX_TITLE_CHARS] or "Arena battle"


async def vote(request: web.Request) -> web.StreamResponse:
    """The owner's vote on their battle, once both sides answered: it reveals both models (200)."""
    access = await chat_access(request, write=True)
    body = await read_body(request, VoteRequest)
    voter = principal_of(request).user_id
    state = await read_chat_state(request.app[BUS].js, access.chat_id)
    try:
        arena_decide.vote(state, voter, body.vote)  # a refusal (already voted, ...) before the cap's 429
    except Refused as exc:
        raise refusal(exc) from None
    await _within_cap(request, voter)
    decision, seq = await decided(
        request, access.chat_id, lambda state: arena_decide.vote(state, voter, body.vote), state
    )
    voted = decision.one(ArenaVoted)
    return json_response(
        VoteResponse(vote=voted.vote, models={"A": voted.model_a, "B": voted.model_b}, seq=seq)
    )


async def _within_cap(request: web.Request, voter: str) -> None:
    """429 `vote_cap` when the voter cast CHATBUS_ARENA_DAILY_VOTES votes since 00:00 UTC (0: no cap)."""
    cap = request.app[SETTINGS].arena_daily_votes
    if not cap:
        return
    now = schemas.now()
    midnight = datetime(now.year, now.month, now.day, tzinfo=now.tzinfo)
    js = request.app[BUS].js
    asked = VotesSince(voter_id=voter, since=midnight, min_seq=await bus.last_seq(js, CHAT.name))
    cast = await query(request, "arena.votes", asked, VoteCount)
    if cast.votes >= cap:
        resets = midnight + timedelta(days=1)
        raise ApiError(
            429,
            "vote_cap",
            f"you have cast {cast.votes} arena votes today; the cap is {cap} a day; it resets at "
            f"{resets.isoformat().replace('+00:00', 'Z')}",
            {"Retry-After": str(int((resets - now).total_seconds()) + 1)},
        )


async def continue_battle(request: web.Request) -> web.StreamResponse:
    """After the vote, go on with one side's model alone (200): later posts ask it only."""
    access = await chat_access(request, write=True)
    body = await read_body(request, ContinueRequest)
    by = principal_of(request).user_id
    decision, seq = await decided(
        request, access.chat_id, lambda state: arena_decide.continue_with(state, body.side, by)
    )
    return json_response(ContinueResponse(model=decision.one(ArenaContinued).model, seq=seq))


async def tag_battle(request: web.Request) -> web.StreamResponse:
    """Set a battle's category: its owner, or an admin for any battle (200)."""
    access = await chat_access(request, write=False)  # the owner, or an admin (who may read any chat)
    body = await read_body(request, CategoryRequest)
    by = principal_of(request).user_id
    _, seq = await decided(request, access.chat_id, lambda state: arena_decide.tag(state, body.category, by))
    return json_response(AcceptedResponse(seq=seq))
