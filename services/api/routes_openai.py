"""OpenAI-compatible chat completions: a front door to the same thing as every chat, events in the log.

A completion appends what a chat appends (`chat.created` with origin "openai", one `message.posted`
per input message, `reply.requested`), so audit, replay, export and limits cover API traffic too, and
the reply is generated (and kept) even if the client or this API replica goes away mid-stream.
"""

from __future__ import annotations

import time

from aiohttp import web

import bus
from services.api.auth import principal_of
from services.api.errors import ApiError
from services.api.keys import BUS, MODEL_DEFAULTS
from services.api.openai_completion import Completion
from services.api.openai_request import (
    check_supported,
    completion_events,
    read_request,
    read_turns,
    sampling_of,
)
from services.api.reply_watch import ReplyWatch


async def chat_completions(request: web.Request) -> web.StreamResponse:
    """POST /v1/chat/completions: a completion streamed as SSE chunks, or one chat.completion."""
    principal = principal_of(request)
    body = await read_request(request)
    check_supported(body)
    js = request.app[BUS].js
    served = await request.app[MODEL_DEFAULTS].of(body.model)
    if served is None:
        raise ApiError(
            404,
            "model_not_found",
            f"The model `{body.model}` does not exist or no worker serves it now; see GET /v1/models",
            param="model",
        )
    params = sampling_of(body, served.defaults)
    refused = served.refuses(params)
    if refused is not None:  # as OpenAI answers a max_tokens over the model's limit
        param = "max_completion_tokens" if body.max_completion_tokens else "max_tokens"
        raise ApiError(400, "invalid_value", f"{param} is too large: {refused}", param=param)
    system, turns = await read_turns(request, body.messages)
    created, posted, reply = completion_events(principal.user_id, body, system, turns, params)
    watch = ReplyWatch(request.app[BUS], reply.chat_id, reply.reply_id)
    await watch.start()  # before the request is appended: nothing of the reply can be missed
    try:
        await bus.append_event(js, created, expected_subject_seq=0)
        await bus.append_events(js, [*posted, reply])
        completion = Completion(request, watch, reply, int(time.time()))
        if body.stream:
            include_usage = bool(body.stream_options and body.stream_options.include_usage)
            return await completion.stream(include_usage)
        return await completion.whole()
    finally:
        await watch.stop()
