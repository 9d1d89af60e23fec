"""Jobs: the automation front door's logic (the routes are services/api/routes_jobs.py; docs/jobs.md).

A job is a reply request of a chat of origin "jobs" whose `ReplyRequested.job` says what makes it a job
(schemas/job.py). Its id is `<chat_id>-<reply_id>` (ids never hold "-"), so reading a job needs no lookup
table and works before the read model catches up: the body is folded from the reply's events in the log
(schemas/job_status.py). A `session_id` names one chat of the caller, with an id derived from both, so a
session keeps its history across jobs and the first job of a session creates it (a fenced create: two
first jobs at once make one chat). `submit_job` and `job_body` are what other front doors (Llamalith's
routes) call too.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import timedelta

import msgspec
from aiohttp import web

import bus
import schemas
from bus import JetStream
from identity.accounts import Principal
from identity.webhook_secrets import webhook_secret_of
from logtools.chat_log import read_chat_state
from logtools.job_view import JobLog, body_of, job_id_of, read_job
from netguard import literal_address_refused
from schemas.api_jobs import JobAccepted, JobBody, JobRequest
from schemas.chat import ChatCreated, ChatEvent, MessagePosted, ReplyCancelled, ReplyRequested
from schemas.chat_decide import Ask, Decision, post_fence
from schemas.chat_state import ChatState, context_ids
from schemas.ids import is_valid_id, new_id
from schemas.job import JobSpec
from schemas.openai import InputMessage
from schemas.streams import CHAT
from schemas.subjects import ANY, any_reply_request, chat_event
from services.api.auth import principal_of
from services.api.errors import ApiError
from services.api.inputs import require_json
from services.api.keys import BUS, SETTINGS
from services.api.openai_request import MAX_TITLE_CHARS, Turn, decode_naming_field, read_turns
from services.api.party import usable_bot
from services.api.routes_chats import decided, served_ask

JOBS_ORIGIN = "jobs"
SESSION_CHAT_ID_CHARS = 40


def session_chat_id(owner_id: str, session_id: str) -> str:
    """The chat of a caller's session: derived from both, so any API replica finds it without a lookup."""
    return "s" + hashlib.sha256(f"{owner_id}\0{session_id}".encode()).hexdigest()[: SESSION_CHAT_ID_CHARS - 1]


def split_job_id(job_id: str) -> tuple[str, str]:
    """The chat and reply of a job id; a malformed one is a 404 (no such job)."""
    chat_id, dash, reply_id = job_id.partition("-")
    if not dash or not is_valid_id(chat_id) or not is_valid_id(reply_id) or "-" in reply_id:
        raise ApiError(404, "not_found", f"no job {job_id[:80]!r}")
    return chat_id, reply_id


def bad(param: str, message: str) -> ApiError:
    """A 400 naming the field at fault."""
    return ApiError(400, "bad_request", f"{param}: {message}", param=param)


async def read_job_request(request: web.Request) -> JobRequest:
    """The body of POST /v1/jobs, decoded; a wrong field is a 400 that names it."""
    require_json(request)
    try:
        return decode_naming_field(await request.read(), JobRequest, code="bad_request")
    except ApiError as exc:
        raise (bad(exc.param, exc.message) if exc.param else exc) from None


@dataclass
class Wanted:
    """What a job asks, checked: the model and sampling, the system prompt of a new chat, the turns."""

    ask: Ask
    system_prompt: str | None  # the body's, the bot's or the messages' ("" is one too); None: none asked
    turns: list[Turn]
    spec: JobSpec  # with job_id "" (set once the reply id is drawn)
    history: int = 0  # a bot's: the last turns it sees, as in a chat with bots (schemas/seat.py); 0: all


async def _wanted(request: web.Request, body: JobRequest) -> Wanted:
    """Check a job's body against the caller and the served models (400 naming the field, 404, 409)."""
    if (body.input is None) == (body.messages is None):
        raise bad("input", "give `input` (a string) or `messages` (a list), one of them")
    if body.model is not None and body.bot is not None:
        raise bad("bot", "give `model` or `bot`, not both")
    system, turns = await _turns(request, body.input, body.messages)
    prompt, history = body.system_prompt, 0
    if body.bot is not None:
        bot = (await usable_bot(request, body.bot)).bot
        history = bot.history
        ask = await served_ask(request, bot.model, body.params or bot.params)
        prompt = prompt if prompt is not None else bot.system_prompt
    else:
        ask = await served_ask(request, body.model, body.params)
    if prompt is None and body.messages is not None and system:
        prompt = system
    deadline = None
    if body.deadline_seconds is not None:
        deadline = schemas.now() + timedelta(seconds=body.deadline_seconds)
    if body.callback_url is not None:
        await _check_callback_url(request, body.callback_url)
    spec = JobSpec(
        job_id="",
        session_id=body.session_id or "",
        deadline_at=deadline,
        max_attempts=body.max_attempts or 0,
        callback_url=body.callback_url or "",
    )
    return Wanted(ask=ask, system_prompt=prompt, turns=turns, spec=spec, history=history)


async def _check_callback_url(request: web.Request, url: str) -> None:
    """A callback the webhooks service may POST to, as far as the API can tell without a lookup (400 naming
    `callback_url`: not http(s), credentials in it, a literal address that is not public), from a caller
    who can verify its signature (409 `no_webhook_secret` without a secret)."""
    try:
        refused = literal_address_refused(url)
    except ValueError:  # urlsplit's verdict on a mangled URL (an unclosed "[" or a bad port)
        raise bad("callback_url", "not a URL") from None
    if refused is not None:
        raise bad("callback_url", f"{refused.code}: {refused.message}")
    if await webhook_secret_of(request.app[BUS].js, principal_of(request).user_id) is None:
        raise ApiError(
            409,
            "no_webhook_secret",
            "a job with a callback_url is signed with your webhook secret: POST /v1/me/webhook-secret first",
        )


async def _turns(
    request: web.Request, text: str | None, messages: list[InputMessage] | None
) -> tuple[str, list[Turn]]:
    """The system prompt the messages carry and the turns to post (the last one the user's)."""
    if messages is None:
        limit = request.app[SETTINGS].max_message_chars
        if not text:
            raise bad("input", "an empty prompt")
        if len(text) > limit:
            raise bad("input", f"{len(text)} characters; the limit is {limit}")
        return "", [Turn(role="user", content=text, images=[])]
    try:
        system, turns = await read_turns(request, messages)
    except ApiError as exc:
        raise (bad(exc.param, exc.message) if exc.param and exc.status == 400 else exc) from None
    if turns[-1].role != "user":
        raise bad(f"messages[{len(messages) - 1}]", "the last message must be the user's")
    return system, turns


def job_decision(state: ChatState, wanted: Wanted) -> Decision:
    """The job's events: its turns posted at the end of the chat's active path, then the reply request
    (the job) that sees that path; fenced on the chat's last post, as any post."""
    parent = state.tree.leaf()
    context = context_ids(state, parent)
    posted: list[ChatEvent] = []
    for turn in wanted.turns:
        message = MessagePosted(
            event_id=new_id("e"),
            chat_id=state.chat_id,
            at=schemas.now(),
            message_id=new_id("m"),
            author_id=wanted.ask.by,
            role=turn.role,  # type: ignore[arg-type]
            content=turn.content,
            parent_id=parent,
            images=turn.images,
            author_name=wanted.ask.by if turn.role == "user" else "",
        )
        posted.append(message)
        parent = message.message_id
        context.append(message.message_id)
    if wanted.history:
        context = context[-wanted.history :]
    reply_id = new_id("r")
    reply = ReplyRequested(
        event_id=new_id("e"),
        chat_id=state.chat_id,
        at=schemas.now(),
        reply_id=reply_id,
        message_id=parent or "",
        model=wanted.ask.model,
        params=wanted.ask.params,
        context=context,
        requested_by=wanted.ask.by,
        job=msgspec.structs.replace(wanted.spec, job_id=job_id_of(state.chat_id, reply_id)),
    )
    return Decision(events=(*posted, reply), fence=post_fence(state))  # type: ignore[arg-type]


async def submit_job(request: web.Request, body: JobRequest) -> JobAccepted:
    """Check a job and append it: its chat (a session's, made on its first job, or a new one), its turns
    and its reply request. 400 naming the field, 404 for a bot the caller may not use, 409 for a model
    nobody serves or a session made with another system prompt."""
    principal = principal_of(request)
    wanted = await _wanted(request, body)
    js = request.app[BUS].js
    session = body.session_id
    chat_id = session_chat_id(principal.user_id, session) if session else new_id("c")
    first = next((t.content for t in wanted.turns if t.role == "user" and t.content), "job")
    created = ChatCreated(
        event_id=new_id("e"),
        chat_id=chat_id,
        at=schemas.now(),
        owner_id=principal.user_id,
        title=" ".join(first.split())[:MAX_TITLE_CHARS] or "job",
        model=wanted.ask.model,
        system_prompt=wanted.system_prompt or "",
        origin=JOBS_ORIGIN,
        session_id=session or "",
    )
    if session and await bus.last_msg(js, CHAT.name, chat_event(chat_id, "erased")) is not None:
        raise _session_erased(session)  # asked before creating: nothing of it is written after its tombstone
    made = True
    try:
        appended = await bus.append_event(js, created, expected_subject_seq=0)
    except bus.ConcurrencyConflict:
        if not session:
            raise
        made = False  # the session's chat exists: its first job (maybe a concurrent one) made it
    if made and not session:  # a new chat of a fresh id: nothing else writes to it, nothing to read back
        state = ChatState(chat_id)
        state.apply(appended.seq, created)
    else:
        state = await read_chat_state(js, chat_id)
    if not state.alive or state.owner_id != principal.user_id:
        raise _session_erased(session or chat_id)
    asked = wanted.system_prompt
    if not made and asked is not None and asked != state.system_prompt:
        raise ApiError(
            409,
            "session_exists_with_other_prompt",
            f"session {session!r} has another system prompt; leave `system_prompt` out or use a new session",
        )
    decision, _ = await decided(request, chat_id, lambda state: job_decision(state, wanted), state)
    job = decision.one(ReplyRequested).job
    assert job is not None
    return JobAccepted(
        job_id=job.job_id,
        status_url=f"/v1/jobs/{job.job_id}",
        status="queued",
        session_id=session,
        chat_id=chat_id,
    )


def _session_erased(session: str) -> ApiError:
    return ApiError(409, "session_erased", f"session {session!r} was erased; use another session_id")


def readable(log: JobLog, principal: Principal) -> bool:
    """A job the caller may read: one of theirs (admins read any)."""
    if log.created is None or log.request is None:
        return False
    return principal.is_admin or log.created.owner_id == principal.user_id


async def own_job(js: JetStream, job_id: str, principal: Principal) -> JobLog:
    """The caller's job from the log (another user's, or none: 404)."""
    chat_id, reply_id = split_job_id(job_id)
    log = await read_job(js, chat_id, reply_id)
    if not readable(log, principal):
        raise ApiError(404, "not_found", f"no job {job_id}")
    return log


async def job_body(js: JetStream, job_id: str, principal: Principal) -> JobBody:
    """GET /v1/jobs/{job_id}'s body: the caller's job read from the log (404 when not theirs)."""
    return body_of(await own_job(js, job_id, principal), schemas.now())


async def latest_job_id(js: JetStream, owner_id: str, session_id: str) -> str | None:
    """The id of the session's latest job (the last reply request of the session's chat), if any."""
    chat_id = session_chat_id(owner_id, session_id)
    last = await bus.last_msg(js, CHAT.name, any_reply_request(chat_id, ANY))
    if last is None:
        return None
    event = bus.decode_one(last.subject, last.data)
    if not isinstance(event, ReplyRequested) or event.job is None:
        return None
    return event.job.job_id


async def cancel_job(js: JetStream, log: JobLog, by: str) -> str:
    """Ask the job to stop (`reply.cancelled`: a queued job is skipped, a running one stops): the status it
    had; 409 once it ended."""
    status = log.state.read_status(schemas.now())
    if log.state.finished_at is not None:
        raise ApiError(409, "job_finished", f"the job has already ended ({status})")
    if not log.state.cancel_asked:
        event = ReplyCancelled(
            event_id=new_id("e"), chat_id=log.chat_id, at=schemas.now(), reply_id=log.reply_id, by=by
        )
        await bus.append_event(js, event)
    return status
