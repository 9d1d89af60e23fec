"""Batch files: uploaded inputs (`POST /v1/files`, purpose "batch") and a batch's output and errors as
JSONL in OpenAI's batch output format (docs/batches.md). A batch's `output_file_id` / `error_file_id` are
virtual files `<batch_id>-output` / `<batch_id>-errors` whose content is built from the read model."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

import msgspec
from aiohttp import BodyPartReader, web

import bus
import schemas
from bus import JetStream
from identity.accounts import Principal
from schemas.api_batches import FileObject, LineFailure, LineResponse, OutputLine
from schemas.batch import FileUploaded
from schemas.batch_queries import LineResult
from schemas.ids import is_valid_id, new_id
from schemas.openai import ChatCompletion, Choice, OutputMessage, Usage
from schemas.streams import BATCH_FILES_OBJECTS, BATCHES
from schemas.subjects import file_uploaded
from services.api.batches import ERRORS_SUFFIX, OUTPUT_SUFFIX, BatchLog, ended_lines, own_batch
from services.api.errors import ApiError
from services.api.keys import BUS, SETTINGS

log = logging.getLogger(__name__)
JSONL = "application/jsonl"
_encoder = msgspec.json.Encoder()
_CODES = {"cancelled": "batch_cancelled", "expired": "batch_expired"}  # OpenAI's words
_WHY = {
    "cancelled": "the batch was cancelled before this line finished",
    "expired": "the batch's completion window passed before this line finished",
}


def output_line(result: LineResult) -> OutputLine:
    """A line of the output file (answered) or the errors file (ended without an answer)."""
    line_id = f"batch_req_{result.reply_id}"
    if result.status != "done":
        code = _CODES.get(result.status) or result.code or "error"
        failure = LineFailure(code=code, message=_WHY.get(result.status) or result.error or "the line failed")
        return OutputLine(id=line_id, custom_id=result.custom_id, response=None, error=failure)
    body = ChatCompletion(
        id=f"chatcmpl-{result.reply_id}",
        created=int(result.created_at.timestamp()),
        model=result.model,
        choices=[
            Choice(
                message=OutputMessage(content=result.text),
                finish_reason="length" if result.finish_reason == "length" else "stop",
            )
        ],
        usage=Usage(
            prompt_tokens=result.prompt_tokens,
            completion_tokens=result.completion_tokens,
            total_tokens=result.prompt_tokens + result.completion_tokens,
        ),
    )
    response = LineResponse(request_id=result.job_id, body=body)
    return OutputLine(id=line_id, custom_id=result.custom_id, response=response, error=None)


async def send_results(request: web.Request, batch: BatchLog, done: bool) -> web.StreamResponse:
    """Stream a batch's output (done) or errors file as JSONL, in line order: what has ended so far.

    The first page is read before the 200 starts (a projector that does not answer is a 503, not an
    empty file); a later page that fails ends the connection without a clean end, so a client sees a
    broken download rather than a short one."""
    batch_id = batch.created.batch_id
    lines = ended_lines(request, batch_id, batch.created.owner_id, done)
    first = await anext(lines, None)
    response = web.StreamResponse(headers={"Content-Type": JSONL})
    await response.prepare(request)
    try:
        if first is not None:
            await response.write(_encoder.encode(output_line(first)) + b"\n")
            async for result in lines:
                await response.write(_encoder.encode(output_line(result)) + b"\n")
    except (ApiError, bus.BusError, TimeoutError) as exc:
        log.warning("batch %s: download cut short: %r", batch_id, exc)
        if request.transport is not None:
            request.transport.close()
        return response
    await response.write_eof()
    return response


@dataclass(frozen=True)
class BatchFile:
    """A file the caller may read: an upload, or a batch's virtual output or errors."""

    body: FileObject
    batch: BatchLog | None = None  # for a virtual file: its batch
    done: bool = True  # for a virtual file: output (True) or errors


def _virtual(file_id: str) -> tuple[str, bool] | None:
    for suffix, done in ((OUTPUT_SUFFIX, True), (ERRORS_SUFFIX, False)):
        if file_id.endswith(suffix):
            return file_id[: -len(suffix)], done
    return None


async def own_file(js: JetStream, file_id: str, principal: Principal) -> BatchFile:
    """The caller's file (admins: any); another user's, or none, is a 404."""
    missing = ApiError(404, "not_found", f"no file {file_id[:80]!r}")
    if not is_valid_id(file_id):
        raise missing
    virtual = _virtual(file_id)
    if virtual is not None:
        batch_id, done = virtual
        try:
            log = await own_batch(js, batch_id, principal)
        except ApiError:
            raise missing from None
        body = FileObject(
            id=file_id,
            bytes=0,
            created_at=int(log.created.at.timestamp()),
            filename=f"{batch_id}_{'output' if done else 'errors'}.jsonl",
            purpose="batch_output",
        )
        return BatchFile(body=body, batch=log, done=done)
    msg = await bus.last_msg(js, BATCHES.name, file_uploaded(file_id))
    event = None if msg is None else bus.decode_one(msg.subject, msg.data)
    if not isinstance(event, FileUploaded) or not (principal.is_admin or event.owner_id == principal.user_id):
        raise missing
    return BatchFile(body=file_body(event))


def file_body(event: FileUploaded) -> FileObject:
    """The File object of an uploaded file."""
    return FileObject(
        id=event.file_id,
        bytes=event.bytes,
        created_at=int(event.at.timestamp()),
        filename=event.filename,
        purpose=event.purpose,
    )


async def file_content(js: JetStream, file_id: str) -> bytes:
    """An uploaded file's bytes (404 when they were erased)."""
    data = await bus.get_object(js, BATCH_FILES_OBJECTS.bucket, file_id)
    if data is None:
        raise ApiError(404, "not_found", f"file {file_id} has no content any more")
    return data


async def upload_file(request: web.Request, owner_id: str) -> FileUploaded:
    """Store a multipart upload (`purpose=batch`, `file`), at most CHATBUS_BATCH_MAX_BYTES, then append
    `batchfile.uploaded`."""
    if not request.content_type.startswith("multipart/"):
        raise ApiError(415, "unsupported_media_type", "send multipart/form-data with `purpose` and `file`")
    limit, seconds = request.app[SETTINGS].batch_max_bytes, request.app[SETTINGS].upload_seconds
    if request.content_length is not None and request.content_length > limit:
        raise ApiError(413, "too_large", f"a batch file may hold at most {limit} bytes")
    try:
        async with asyncio.timeout(seconds):
            purpose, filename, data = await _read_parts(request, limit)
    except TimeoutError:
        raise ApiError(408, "timeout", f"the body did not arrive within {seconds:g} s") from None
    if purpose != "batch":
        raise ApiError(400, "invalid_request_error", "purpose: only `batch` files are taken", param="purpose")
    if not data:
        raise ApiError(400, "invalid_request_error", "file: an empty or missing file", param="file")
    js = request.app[BUS].js
    file_id = new_id("f")
    await bus.put_object(js, BATCH_FILES_OBJECTS.bucket, file_id, data)
    event = FileUploaded(
        event_id=new_id("e"),
        file_id=file_id,
        at=schemas.now(),
        owner_id=owner_id,
        filename=filename[:256],
        bytes=len(data),
    )
    await bus.append_event(js, event)
    return event


async def _read_parts(request: web.Request, limit: int) -> tuple[str, str, bytes]:
    """The `purpose`, the file's name and its bytes from a multipart body (413 past `limit` bytes)."""
    try:
        return await _parts_of(request, limit)
    except ValueError as exc:  # aiohttp's word for a body that is not the multipart it says it is
        raise ApiError(
            400, "invalid_request_error", f"not a readable multipart/form-data body: {exc}", param="file"
        ) from None


async def _parts_of(request: web.Request, limit: int) -> tuple[str, str, bytes]:
    purpose, filename, data = "", "", b""
    reader = await request.multipart()
    async for part in reader:
        if not isinstance(part, BodyPartReader):
            continue  # a nested multipart: not what the SDKs send
        name = part.name
        chunks, size = [], 0
        while chunk := await part.read_chunk(1 << 16):
            size += len(chunk)
            if size > limit:
                raise ApiError(413, "too_large", f"a batch file may hold at most {limit} bytes")
            chunks.append(chunk)
        if name == "purpose":
            purpose = b"".join(chunks).decode("utf-8", "replace").strip()
        elif name == "file":
            filename, data = part.filename or "input.jsonl", b"".join(chunks)
    return purpose, filename, data
