"""Batch routes: submit, read, list and cancel batches, download their results, and the files the
openai SDK's batch flow uses (docs/batches.md). The logic is services/api/batches.py, batch_input.py and
batch_files.py. Every route reaches the caller's own batches and files only (another user's is a 404);
admins read any. Errors are in OpenAI's shape, as the SDKs expect."""

from __future__ import annotations

import msgspec
from aiohttp import web

from schemas.api_batches import CHAT_COMPLETIONS, Batch, BatchList, CreateBatchRequest, FileObject, Metadata
from schemas.batch_lines import looks_like_jsonl
from services.api.auth import principal_of
from services.api.batch_files import (
    JSONL,
    file_body,
    file_content,
    own_file,
    send_results,
    upload_file,
)
from services.api.batch_input import JSONL_TYPES, PLAIN_TYPES, BatchRefused, check_input, read_limited
from services.api.batches import (
    BatchLog,
    batch_bodies,
    cancel_batch,
    own_batch,
    owned_batches,
    parse_window,
    read_batch,
    store_batch,
)
from services.api.errors import ApiError, json_response
from services.api.inputs import query_int, query_str
from services.api.keys import BUS, SETTINGS
from services.api.openai_request import decode_naming_field
from services.api.route_spec import Param, Route


def _metadata(text: str | None) -> dict[str, str] | None:
    """The `metadata` query parameter: a JSON object of strings (400 otherwise)."""
    if text is None:
        return None
    try:
        return msgspec.json.decode(text, type=Metadata)
    except msgspec.DecodeError as exc:
        raise ApiError(400, "invalid_request_error", f"metadata: {exc}", param="metadata") from None


async def create_batch(request: web.Request) -> web.StreamResponse:
    """POST /v1/batches: a JSONL or plain-text body, or JSON naming an uploaded file; the Batch object."""
    principal = principal_of(request)
    js = request.app[BUS].js
    default_model = request.app[SETTINGS].default_model
    input_file_id = ""
    if request.content_type == "application/json":
        body = decode_naming_field(await request.read(), CreateBatchRequest)
        if body.endpoint != CHAT_COMPLETIONS:
            raise ApiError(
                400, "invalid_request_error", f"endpoint: only {CHAT_COMPLETIONS}", param="endpoint"
            )
        window, metadata, model = body.completion_window, body.metadata, default_model
        upload = await own_file(js, body.input_file_id, principal)
        if upload.batch is not None:
            raise ApiError(
                400, "invalid_request_error", "input_file_id: not an uploaded file", param="input_file_id"
            )
        raw, input_file_id = await file_content(js, body.input_file_id), body.input_file_id
        plain = not looks_like_jsonl(raw)
    elif request.content_type in JSONL_TYPES or request.content_type in PLAIN_TYPES:
        window = query_str(request, "completion_window", 16) or "24h"
        metadata = _metadata(query_str(request, "metadata", 16_384))
        model = query_str(request, "model", 128) or default_model
        raw, plain = await read_limited(request), request.content_type in PLAIN_TYPES
    else:
        raise ApiError(
            415,
            "unsupported_media_type",
            "send JSONL (application/jsonl), plain text (text/plain), or JSON {input_file_id, ...}",
        )
    parse_window(window)
    try:
        plan = await check_input(request, raw, plain, model)
    except BatchRefused as refused:
        return refused.response()
    created = await store_batch(
        js,
        principal.user_id,
        plan,
        model=model,
        window=window,
        metadata=metadata,
        input_file_id=input_file_id,
    )
    log = BatchLog(created=created, expanded=None, cancelled=None)
    return json_response((await batch_bodies(request, [log]))[0])


async def get_batch(request: web.Request) -> web.StreamResponse:
    """GET /v1/batches/{batch_id}: the Batch object now."""
    log = await own_batch(request.app[BUS].js, request.match_info["batch_id"], principal_of(request))
    return json_response((await batch_bodies(request, [log]))[0])


async def list_batches(request: web.Request) -> web.StreamResponse:
    """GET /v1/batches: the caller's batches, newest first, `limit` after the batch `after`."""
    js = request.app[BUS].js
    limit = query_int(request, "limit", 20, low=1, high=100)
    after = query_str(request, "after", 64)
    mine = await owned_batches(js, principal_of(request))
    if after is not None:
        ids = [event.batch_id for event in mine]
        mine = mine[ids.index(after) + 1 :] if after in ids else []
    page = mine[:limit]
    logs = [log for event in page if (log := await read_batch(js, event.batch_id)) is not None]
    data = await batch_bodies(request, logs) if logs else []
    body = BatchList(
        data=data,
        first_id=data[0].id if data else None,
        last_id=data[-1].id if data else None,
        has_more=len(mine) > limit,
    )
    return json_response(body)


async def cancel(request: web.Request) -> web.StreamResponse:
    """POST /v1/batches/{batch_id}/cancel: stop it (its open lines are cancelled); 409 once ended."""
    principal = principal_of(request)
    js = request.app[BUS].js
    log = await own_batch(js, request.match_info["batch_id"], principal)
    await cancel_batch(js, log, principal.user_id, (await batch_bodies(request, [log]))[0])
    log = await own_batch(js, log.created.batch_id, principal)
    return json_response((await batch_bodies(request, [log]))[0])


async def output(request: web.Request) -> web.StreamResponse:
    """GET /v1/batches/{batch_id}/output: the answered lines as JSONL, in line order."""
    log = await own_batch(request.app[BUS].js, request.match_info["batch_id"], principal_of(request))
    return await send_results(request, log, done=True)


async def errors(request: web.Request) -> web.StreamResponse:
    """GET /v1/batches/{batch_id}/errors: the lines that failed, expired or were cancelled, as JSONL."""
    log = await own_batch(request.app[BUS].js, request.match_info["batch_id"], principal_of(request))
    return await send_results(request, log, done=False)


async def create_file(request: web.Request) -> web.StreamResponse:
    """POST /v1/files: upload a batch input (multipart `purpose=batch`, `file`); the File object."""
    return json_response(file_body(await upload_file(request, principal_of(request).user_id)))


async def get_file(request: web.Request) -> web.StreamResponse:
    """GET /v1/files/{file_id}: an uploaded file's, or a batch's output or errors', File object."""
    found = await own_file(request.app[BUS].js, request.match_info["file_id"], principal_of(request))
    return json_response(found.body)


async def get_file_content(request: web.Request) -> web.StreamResponse:
    """GET /v1/files/{file_id}/content: the bytes of an upload, or a batch's output or errors JSONL."""
    js = request.app[BUS].js
    found = await own_file(js, request.match_info["file_id"], principal_of(request))
    if found.batch is not None:
        return await send_results(request, found.batch, done=found.done)
    return web.Response(body=await file_content(js, found.body.id), content_type=JSONL)


_ID = "/v1/batches/{batch_id}"
# The batches' part of the route table (services/api/routes.py).
BATCH_ROUTES: tuple[Route, ...] = (
    Route(
        "POST",
        "/v1/batches",
        create_batch,
        "batches.create",
        body=CreateBatchRequest,
        answer=Batch,
        dialect="openai",
        request_media="application/jsonl",
        params=(
            Param("model", "string", "With a JSONL or text body: the model of lines that name none."),
            Param(
                "completion_window",
                "string",
                "With a JSONL or text body: `24h`, `<n>h` or `<n>m`, <= 7 days.",
            ),
            Param("metadata", "string", "With a JSONL or text body: a JSON object of strings."),
        ),
    ),
    Route(
        "GET",
        "/v1/batches",
        list_batches,
        "batches.list",
        answer=BatchList,
        dialect="openai",
        params=(
            Param("limit", "integer", "Page size, 1 to 100 (default 20)."),
            Param("after", "string", "The last batch id of the previous page."),
        ),
    ),
    Route("GET", _ID, get_batch, "batches.get", answer=Batch, dialect="openai"),
    Route("POST", f"{_ID}/cancel", cancel, "batches.cancel", answer=Batch, dialect="openai"),
    Route("GET", f"{_ID}/output", output, "batches.output", dialect="openai"),
    Route("GET", f"{_ID}/errors", errors, "batches.errors", dialect="openai"),
    Route(
        "POST",
        "/v1/files",
        create_file,
        "files.create",
        answer=FileObject,
        dialect="openai",
        request_media="multipart/form-data",
    ),
    Route("GET", "/v1/files/{file_id}", get_file, "files.get", answer=FileObject, dialect="openai"),
    Route("GET", "/v1/files/{file_id}/content", get_file_content, "files.content", dialect="openai"),
)
