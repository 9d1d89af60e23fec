"""The log as the exports read it: every chat folded into its state, each user's training consent,
the arena voters whose votes are excluded, and which chats and replies a filter takes
(logtools/export.py writes the rows from it)."""

from __future__ import annotations

import base64
import gc
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

import bus
from bus import Sequenced, decode_bulk
from schemas.arena import VoterExcluded
from schemas.chat import ChatCreated, ChatEvent, ReplyCompleted
from schemas.chat_state import ChatState
from schemas.identity import TrainingConsentSet
from schemas.streams import ARENA, CHAT, IDENTITY, IMAGES_OBJECTS
from schemas.subjects import ALL_CHATS, ANY, user_event, voter_excluded

Progress = Callable[[int, int], None]


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
        """The owner's latest rating of the reply (None: unrated or withdrawn)."""
        given = self.state.ratings.get(reply_id)
        return given.rating if given is not None else None


@dataclass
class Log:
    """Every chat and each user's training consent, as the log has them now; the users whose arena votes
    are excluded; and the messages left out (unreadable, or an event on a subject it does not belong to:
    bus/decode.py)."""

    chats: dict[str, Chat]
    consent: dict[str, bool]
    events: int
    rejected: bus.Rejected = field(default_factory=bus.Rejected)
    excluded_voters: frozenset[str] = frozenset()


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
    """Fold CHAT, the consent events of IDENTITY and the voter exclusions of ARENA."""
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
    excluded: dict[str, bool] = {}  # each voter's last exclusion holds
    for _, exclusion in await _read(nbus, ARENA.name, [voter_excluded(ANY)], lambda n: None, rejected):
        if isinstance(exclusion, VoterExcluded):
            excluded[exclusion.user_id] = exclusion.excluded
    return Log(
        chats=chats,
        consent=consent,
        events=done,
        rejected=rejected,
        excluded_voters=frozenset(user for user, out in excluded.items() if out),
    )


def exported_chats(log: Log, flt: ExportFilter) -> Iterator[Chat]:
    """The chats the filter takes: not deleted (unless asked), of its user, whose owner consented."""
    for chat in log.chats.values():
        owner = chat.created.owner_id
        if chat.state.deleted and not flt.include_deleted:
            continue
        if flt.user is not None and owner != flt.user:
            continue
        if flt.consent_only and not log.consent.get(owner, flt.consent_default):
            continue
        yield chat


def reply_ok(chat: Chat, reply_id: str, flt: ExportFilter) -> bool:
    """A whole reply the filter takes (model, time range, rating)."""
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


def hash_ref(sha: str) -> str:
    """An image referenced by hash (fetch it with GET /v1/images/{sha256})."""
    return f"sha256:{sha}"


async def embedded_refs(nbus: bus.Bus, log: Log, flt: ExportFilter) -> ImageRef:
    """Data URLs of every image the exported chats use, read from the object store."""
    urls: dict[str, str] = {}
    for chat in exported_chats(log, flt):
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


def unrated(flt: ExportFilter) -> ExportFilter:
    """The filter without its rating condition (a pair needs both ratings)."""
    return ExportFilter(**{**flt.__dict__, "min_rating": None})
