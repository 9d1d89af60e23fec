"""Training data and chat exports, read from the log (the source of truth, after every erasure).

- `sft`: OpenAI chat fine-tuning lines `{"messages": [...]}`: one per chat's active path, or one per
  rated reply (the path to it); images as `sha256:<hex>` references or embedded data URLs.
- `preferences`: DPO pairs from sibling replies a rating ranks: shared `prompt`, `chosen`, `rejected`.
- `chats`: lossless JSON (every event of each chat, re-importable) or TSV for spreadsheets.

Filters: model alias, time range, minimum rating, one user, and consent (only users who allowed
training, the default). Deleted chats are left out; erased ones are no longer in the log.
"""

from __future__ import annotations

import base64
import gc
import io
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import msgspec
import pyarrow as pa
import pyarrow.parquet as pq

import bus
from bus import Sequenced, decode_bulk
from schemas.chat import ChatCreated, ChatEvent, ReplyCompleted, ReplyRequested
from schemas.chat_state import ChatState, Turn, conversation
from schemas.identity import TrainingConsentSet
from schemas.streams import CHAT, IDENTITY, IMAGES_OBJECTS
from schemas.subjects import ALL_CHATS, ANY, user_event

Progress = Callable[[int, int], None]
Per = Literal["active", "rated"]


@dataclass
class ExportFilter:
    """Which chats and replies an export takes."""

    model: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    min_rating: Literal["up"] | None = None
    user: str | None = None
    consent_only: bool = True
    consent_default: bool = False
    include_deleted: bool = False


@dataclass
class Chat:
    """One chat: its state (schemas/chat_state.py) and every event of it, for the lossless export."""

    state: ChatState
    events: list[tuple[int, ChatEvent]] = field(default_factory=list)

    @property
    def created(self) -> ChatCreated:
        """The chat's creation (a chat is only made from it)."""
        assert self.state.created is not None
        return self.state.created

    def fold(self, seq: int, event: ChatEvent) -> None:
        """Keep the event and apply it to the state."""
        self.events.append((seq, event))
        self.state.apply(seq, event)

    def target(self, reply_id: str) -> ReplyCompleted | None:
        """The reply's answer if it is whole (stopped or hit its length, not cancelled): a training target."""
        answer = self.state.answer(reply_id)
        return answer if answer is not None and answer.finish_reason in ("stop", "length") else None

    def whole(self, reply_id: str) -> ReplyCompleted:
        """The target of a reply known to have one."""
        done = self.target(reply_id)
        assert done is not None
        return done

    def rating(self, reply_id: str) -> str | None:
        given = self.state.ratings.get(reply_id)
        return given.rating if given is not None else None


@dataclass
class Log:
    """Every chat and each user's training consent, as the log has them now; and the messages left
    out (unreadable, or an event on a subject it does not belong to: bus/decode.py)."""

    chats: dict[str, Chat]
    consent: dict[str, bool]
    events: int
    rejected: bus.Rejected = field(default_factory=bus.Rejected)


async def _read(
    nbus: bus.Bus,
    stream: str,
    subjects: list[str],
    progress: Callable[[int], None],
    rejected: bus.Rejected,
) -> list[Sequenced]:
    """Every event of the stream on `subjects` with its sequence, in order (the bulk reader, decoding
    a batch at a time; events this version cannot read, or misfiled, are skipped and counted)."""
    reader = bus.BulkReader(nbus, stream, subjects)
    await reader.start()
    out: list[Sequenced] = []
    read = 0
    try:
        total = reader.initial_pending
        while read < total:
            batch = await reader.next_batch(20_000, 30.0)
            if batch is None:
                raise TimeoutError(f"reading {stream}: got {read} of {total}")
            out.extend(decode_bulk(batch, rejected))
            read += len(batch)
            progress(len(batch))
            if batch.pending == 0:
                break
    finally:
        await reader.stop()
    return out


async def read_log(nbus: bus.Bus, on_progress: Progress | None = None) -> Log:
    """Fold CHAT and the consent events of IDENTITY."""
    chat_total = (await nbus.js.stream_info(CHAT.name)).state.messages
    done = 0

    def progress(n: int) -> None:
        nonlocal done
        done += n
        if on_progress is not None:
            on_progress(done, chat_total)

    chats: dict[str, Chat] = {}
    rejected = bus.Rejected()
    # The fold keeps millions of objects and makes few cycles: the cyclic GC would cost half its time.
    # One collection at the end moves them to the oldest generation at once; left in the youngest,
    # they would be scanned again, generation by generation, while the rows are written.
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        for seq, event in await _read(nbus, CHAT.name, [ALL_CHATS], progress, rejected):
            if isinstance(event, ChatCreated) and event.chat_id not in chats:
                chats[event.chat_id] = Chat(ChatState(event.chat_id))
            chat = chats.get(getattr(event, "chat_id", ""))
            if chat is not None and isinstance(event, ChatEvent):
                chat.fold(seq, event)
    finally:
        gc.collect()
        if gc_was_enabled:
            gc.enable()
    consent: dict[str, bool] = {}
    consents = await _read(nbus, IDENTITY.name, [user_event(ANY, "consent")], lambda n: None, rejected)
    for _, given in consents:
        if isinstance(given, TrainingConsentSet):
            consent[given.user_id] = given.allowed
    return Log(chats=chats, consent=consent, events=done, rejected=rejected)


def _chats(log: Log, flt: ExportFilter) -> Iterator[Chat]:
    for chat in log.chats.values():
        owner = chat.created.owner_id
        if chat.state.deleted and not flt.include_deleted:
            continue
        if flt.user is not None and owner != flt.user:
            continue
        if flt.consent_only and not log.consent.get(owner, flt.consent_default):
            continue
        yield chat


def _reply_ok(chat: Chat, reply_id: str, flt: ExportFilter) -> bool:
    done = chat.target(reply_id)
    if done is None:
        return False
    if flt.model is not None and done.model != flt.model:
        return False
    if flt.since is not None and done.at < flt.since:
        return False
    if flt.until is not None and done.at >= flt.until:
        return False
    return flt.min_rating is None or chat.rating(reply_id) == flt.min_rating


ImageRef = Callable[[str], str]


def _openai(turn: Turn, image_ref: ImageRef) -> dict[str, Any]:
    """A turn as an OpenAI chat message: images as `image_url` parts before the text."""
    if not turn.images:
        return {"role": turn.role, "content": turn.content}
    parts: list[dict[str, Any]] = [
        {"type": "image_url", "image_url": {"url": image_ref(sha)}} for sha in turn.images
    ]
    if turn.content:
        parts.append({"type": "text", "text": turn.content})
    return {"role": turn.role, "content": parts}


def _messages(chat: Chat, path: list[str], image_ref: ImageRef) -> list[dict[str, Any]]:
    """OpenAI chat messages of a path: what a model after it sees (schemas/chat_state.py's rule)."""
    return [_openai(turn, image_ref) for turn in conversation(chat.state, path)]


@dataclass(frozen=True)
class SftRow:
    """One training example and where it came from."""

    chat_id: str
    user_id: str
    reply_id: str
    model: str
    rating: str | None
    messages: list[dict[str, Any]]


def sft_rows(log: Log, flt: ExportFilter, per: Per, image_ref: ImageRef) -> Iterator[SftRow]:
    """Active paths (ending at their last usable reply) or the path to each rated reply."""
    for chat in _chats(log, flt):
        if per == "active":
            path = chat.state.tree.active_path()
            last = next((n for n in reversed(path) if chat.target(n) is not None), None)
            if last is None or not _reply_ok(chat, last, flt):
                continue
            targets = [last]
        else:
            targets = [
                r for r in chat.state.ratings if chat.rating(r) is not None and _reply_ok(chat, r, flt)
            ]
        for reply_id in targets:
            path = chat.state.tree.path_to(reply_id)
            yield SftRow(
                chat_id=chat.created.chat_id,
                user_id=chat.created.owner_id,
                reply_id=reply_id,
                model=chat.whole(reply_id).model,
                rating=chat.rating(reply_id),
                messages=_messages(chat, path, image_ref),
            )


@dataclass(frozen=True)
class PreferenceRow:
    """A DPO pair: the shared context (ending with the user's message), a chosen and a rejected reply."""

    chat_id: str
    user_id: str
    prompt: list[dict[str, Any]]
    chosen: list[dict[str, Any]]
    rejected: list[dict[str, Any]]
    chosen_reply_id: str
    rejected_reply_id: str
    chosen_model: str
    rejected_model: str


def preference_rows(log: Log, flt: ExportFilter, image_ref: ImageRef) -> Iterator[PreferenceRow]:
    """Every (up, down) pair among the completed sibling replies to one message."""
    for chat in _chats(log, flt):
        by_message: dict[str, list[str]] = {}
        requests: dict[str, ReplyRequested] = {}
        for reply_id, reply in chat.state.replies.items():
            if reply.request is not None and chat.target(reply_id) is not None:
                requests[reply_id] = reply.request
                by_message.setdefault(reply.request.message_id, []).append(reply_id)
        for message_id, replies in by_message.items():
            rated = {r: chat.rating(r) for r in replies}
            ups = [r for r in replies if rated[r] == "up" and _reply_ok(chat, r, _unrated(flt))]
            downs = [r for r in replies if rated[r] == "down" and _reply_ok(chat, r, _unrated(flt))]
            if not ups or not downs:
                continue
            prompt = _messages(chat, chat.state.tree.path_to(message_id), image_ref)
            for up in ups:
                for down in downs:
                    if requests[up].context != requests[down].context:
                        continue  # they did not answer the same conversation
                    chosen, rejected = chat.whole(up), chat.whole(down)
                    if chosen.text == rejected.text:
                        continue  # nothing to prefer
                    yield PreferenceRow(
                        chat_id=chat.created.chat_id,
                        user_id=chat.created.owner_id,
                        prompt=prompt,
                        chosen=[{"role": "assistant", "content": chosen.text}],
                        rejected=[{"role": "assistant", "content": rejected.text}],
                        chosen_reply_id=up,
                        rejected_reply_id=down,
                        chosen_model=chosen.model,
                        rejected_model=rejected.model,
                    )


def _unrated(flt: ExportFilter) -> ExportFilter:
    """The filter without its rating condition (a pair needs both ratings)."""
    return ExportFilter(**{**flt.__dict__, "min_rating": None})


def hash_ref(sha: str) -> str:
    """An image referenced by hash (fetch it with GET /v1/images/{sha256})."""
    return f"sha256:{sha}"


async def embedded_refs(nbus: bus.Bus, log: Log, flt: ExportFilter) -> ImageRef:
    """Data URLs of every image the exported chats use, read from the object store."""
    urls: dict[str, str] = {}
    for chat in _chats(log, flt):
        for sha in chat.state.images:
            if sha in urls:
                continue
            data = await bus.get_object(nbus.js, IMAGES_OBJECTS.bucket, sha)
            if data is not None:
                urls[sha] = f"data:{_media_type(data)};base64,{base64.b64encode(data).decode()}"
    return lambda sha: urls.get(sha, hash_ref(sha))


def _media_type(data: bytes) -> str:
    if data.startswith(b"\x89PNG"):
        return "image/png"
    if data.startswith(b"GIF8"):
        return "image/gif"
    if data[:4] == b"RIFF":
        return "image/webp"
    return "image/jpeg"


def write_rows(rows: Iterator[Any], out: Path, fmt: Literal["jsonl", "parquet"]) -> int:
    """Write dataclass rows as JSONL or Parquet (nested lists as JSON text columns); the row count."""
    if fmt == "jsonl":
        count = 0
        encode = msgspec.json.Encoder().encode
        with out.open("wb") as handle:
            for row in rows:
                handle.write(encode(_jsonl(row)) + b"\n")
                count += 1
        return count
    records = [_flat(row) for row in rows]
    table = pa.Table.from_pylist(records) if records else pa.table({})
    pq.write_table(table, out)
    return len(records)


def _jsonl(row: Any) -> dict[str, Any]:
    """A line: the training fields at the top (as trainers expect), provenance under `metadata`."""
    data = dict(row.__dict__)
    if isinstance(row, SftRow):
        return {"messages": data.pop("messages"), "metadata": data}
    keep = {k: data.pop(k) for k in ("prompt", "chosen", "rejected")}
    return {**keep, "metadata": data}


def _flat(row: Any) -> dict[str, Any]:
    return {k: msgspec.json.encode(v).decode() if isinstance(v, list) else v for k, v in row.__dict__.items()}


# ---------------------------------------------------------------- chats (lossless JSON, TSV)


def chats_json(log: Log, flt: ExportFilter) -> dict[str, Any]:
    """Lossless: every event of each chat in log order (re-import with `chatbus admin import`)."""
    chats = [
        {
            "chat_id": chat.created.chat_id,
            "owner_id": chat.created.owner_id,
            "title": chat.state.title,
            "events": [msgspec.to_builtins(event) for _, event in chat.events],
        }
        for chat in _chats(log, flt)
    ]
    return {"format": "chatbus.chats", "version": 1, "chats": chats}


TSV_COLUMNS = ("chat_id", "title", "node_id", "parent_id", "kind", "role", "model", "at", "content")


def chats_tsv(log: Log, flt: ExportFilter) -> str:
    """One row per message and completed reply, every branch; tabs and newlines in text escaped."""
    out = io.StringIO()
    out.write("\t".join(TSV_COLUMNS) + "\n")
    for chat in _chats(log, flt):
        for node_id, node in chat.state.tree.nodes.items():
            if node.kind == "message":
                m = chat.state.messages[node_id]
                row = (m.role, "", m.at.isoformat(), m.content)
            elif (done := chat.target(node_id)) is not None:
                row = ("assistant", done.model, done.at.isoformat(), done.text)
            else:
                continue
            cells = (chat.created.chat_id, chat.state.title, node_id, node.parent, node.kind, *row)
            out.write("\t".join(_tsv(str(c)) for c in cells) + "\n")
    return out.getvalue()


def _tsv(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


__all__ = [
    "ExportFilter",
    "Log",
    "PreferenceRow",
    "SftRow",
    "chats_json",
    "chats_tsv",
    "embedded_refs",
    "hash_ref",
    "preference_rows",
    "read_log",
    "sft_rows",
    "write_rows",
]
