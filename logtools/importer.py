"""Import chats: chatbus's own lossless JSON (keeping chat ids or not); ChatGPT's `conversations.json` is
logtools/import_chatgpt.py, with the same checks.

An import runs with the NATS rights of the services and appends events as they are written, so the
file is checked as an attacker's would be: it may hold only the events of the chats it creates
(`IMPORTABLE`: no identity, image or token events, no tombstone, nothing for another chat), every
chat is owned by the importing user and every acting user becomes that user, message, reply and
event ids are fresh (with `keep_ids` the chat id is kept, and refused when the log has it already),
and a message may show only images the importing user uploaded (what the API lets a user attach).
Everything is checked before anything is appended; a refusal names the place in the file.

Imported reply requests are marked `imported`, so no worker generates them again; their replies
come with them as `reply.completed` events. A chat with bots arrives paused (a `floor.paused` right
after its creation, its `floor.resumed` events left out), so that no bot speaks in the middle of the
imported history; its owner resumes it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import msgspec

import bus
from schemas.chat import (
    BranchSelected,
    ChatCreated,
    ChatDeleted,
    ChatEvent,
    ChatEventUnion,
    ChatRenamed,
    ChatRestored,
    ChoiceMade,
    FeedbackGiven,
    FloorPaused,
    FloorResumed,
    FloorSet,
    FloorStopped,
    MessagePosted,
    ParticipantJoined,
    ParticipantLeft,
    ParticipantMuted,
    ReplyCancelled,
    ReplyCompleted,
    ReplyFailed,
    ReplyRequested,
    ReplyStarted,
    SpeakerNamed,
)
from schemas.ids import is_valid_id, new_id
from schemas.image import is_sha256
from schemas.streams import CHAT, IMAGE
from schemas.subjects import image_stored, one_chat

# The events an import may append: a chat's own history. Not its tombstone (chat.erased), and
# nothing of IDENTITY (a role, a key, a password), IMAGE or TOKENS.
IMPORTABLE: tuple[type[ChatEvent], ...] = (
    ChatCreated,
    ChatRenamed,
    ChatDeleted,
    ChatRestored,
    MessagePosted,
    BranchSelected,
    ReplyRequested,
    ReplyStarted,
    ReplyCompleted,
    ReplyFailed,
    ReplyCancelled,
    FeedbackGiven,
    ParticipantJoined,
    ParticipantLeft,
    ParticipantMuted,
    FloorSet,
    FloorPaused,
    FloorResumed,  # left out of chats with bots: they arrive paused (module docstring)
    FloorStopped,
    SpeakerNamed,
    ChoiceMade,
)
_IMPORTABLE_TAGS = {str(t.__struct_config__.tag): t for t in IMPORTABLE}
# Fields holding ids that an import renames consistently within a chat (the chat id too, unless kept).
_ID_FIELDS = (
    "chat_id",
    "message_id",
    "reply_id",
    "parent_id",
    "edit_of",
    "node_id",
    "participant_id",
    "speaker",
)
# Fields holding lists of such ids.
_ID_LISTS = ("context", "rejected")
# Fields naming the acting user: always the importing user.
_USER_FIELDS = ("owner_id", "requested_by", "by", "user_id")


class ImportError_(ValueError):  # noqa: N801 - not the builtin ImportError
    """The file is not something this importer reads or may append; the message says where and why."""


@dataclass
class ImportReport:
    """What an import did."""

    chats: list[str] = field(default_factory=list)  # the (new) chat ids
    events: int = 0


def _renamed(value: Any, ids: dict[str, str], user: str) -> Any:
    """A raw event with fresh ids (consistently, through `ids`) and the importing user as every actor."""
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for k, v in value.items():
            if k in _ID_FIELDS and isinstance(v, str) and v:  # "": none (a reply of no speaker)
                out[k] = ids.setdefault(v, new_id(v[:1] or "x"))
            elif k in _ID_LISTS and isinstance(v, list):
                out[k] = [ids.setdefault(x, new_id(x[:1] or "x")) if isinstance(x, str) else x for x in v]
            elif k == "event_id":
                out[k] = new_id("e")
            elif k in _USER_FIELDS:
                out[k] = user
            elif k == "author_id" and value.get("role", "user") == "user":
                out[k] = user
            else:
                out[k] = _renamed(v, ids, user)
        return out
    return value


def _event(raw: Any, at: str) -> ChatEventUnion:
    """One raw event of the file, if it is one an import may append."""
    if not isinstance(raw, dict):
        raise ImportError_(f"{at}: not an event (a JSON object with a `type`)")
    tag = raw.get("type")
    if tag not in _IMPORTABLE_TAGS:
        raise ImportError_(
            f"{at}: a {tag!r} event may not be imported: an import holds only its chats' own events"
            f" ({', '.join(sorted(_IMPORTABLE_TAGS))})"
        )
    try:
        return msgspec.convert(raw, type=ChatEventUnion)
    except msgspec.ValidationError as exc:
        raise ImportError_(f"{at}: not a valid {tag} event: {exc}") from exc


def _images(event: ChatEvent) -> list[str]:
    match event:
        case MessagePosted():
            return event.images
        case ReplyCompleted():
            return [*event.images_seen, *event.images_ignored]
    return []


def _check_ids(event: ChatEvent, at: str) -> None:
    """Every id that goes into a subject or a key is token-safe (with fresh ids, only a kept chat id or a
    model alias can be wrong)."""
    fields = msgspec.structs.asdict(event)
    named = [
        fields[k] for k in _ID_FIELDS if isinstance(fields.get(k), str) and (k != "speaker" or fields[k])
    ]
    if isinstance(event, ReplyRequested):
        named.append(event.model)
    for value in named:
        if not is_valid_id(value):
            raise ImportError_(f"{at}: {value!r} is not an id ([A-Za-z0-9_-], at most 64 characters)")


async def _chat_events(
    nbus: bus.Bus, chat: Any, where: str, *, keep_ids: bool, user: str, seen: set[str]
) -> list[ChatEventUnion]:
    """The events of one chat of the file, checked and made the importing user's, ready to append."""
    raw_events = chat.get("events") if isinstance(chat, dict) else None
    if not isinstance(raw_events, list) or not raw_events:
        raise ImportError_(f"{where}: a chat is an object with a list of `events`")
    events = [_event(raw, f"{where}.events[{j}]") for j, raw in enumerate(raw_events)]
    created = events[0]
    if not isinstance(created, ChatCreated):
        raise ImportError_(f"{where}.events[0]: a chat's first event is its chat.created")
    for j, event in enumerate(events):
        at = f"{where}.events[{j}]"
        if event.chat_id != created.chat_id:
            raise ImportError_(
                f"{at}: an event of chat {event.chat_id!r}, not of {created.chat_id!r} it creates"
            )
        if j and isinstance(event, ChatCreated):
            raise ImportError_(f"{at}: a second chat.created for chat {created.chat_id!r}")
    chat_id = created.chat_id
    ids: dict[str, str] = {}
    if keep_ids:
        at = f"{where}.events[0]"
        if not is_valid_id(chat_id):
            raise ImportError_(f"{at}: {chat_id!r} is not a chat id ([A-Za-z0-9_-], at most 64 characters)")
        if created.owner_id != user:
            raise ImportError_(
                f"{at}: chat {chat_id} belongs to {created.owner_id!r}, not {user!r}: import it as its"
                " owner, or without --keep-ids to make a copy"
            )
        if chat_id in seen or await bus.last_msg(nbus.js, CHAT.name, one_chat(chat_id)) is not None:
            raise ImportError_(f"{at}: chat {chat_id} exists in the log already: import without --keep-ids")
        seen.add(chat_id)
        ids[chat_id] = chat_id  # kept; message and reply ids are fresh even so (see below)
    # Message and reply ids are always fresh: the read model keys them across chats, and nothing short
    # of reading the whole log could prove a kept one unused by someone else's chat.
    out: list[ChatEventUnion] = []
    for j, raw in enumerate(raw_events):
        at = f"{where}.events[{j}]"
        event = _event(_renamed(raw, ids, user), at)
        _check_ids(event, at)
        for sha256 in _images(event):
            if not is_sha256(sha256):
                raise ImportError_(f"{at}: {sha256!r} is not an image hash (64 lowercase hex digits)")
            if await bus.last_msg(nbus.js, IMAGE.name, image_stored(sha256, user)) is None:
                raise ImportError_(
                    f"{at}: image {sha256} was not uploaded by {user}: an import may show only images"
                    " its user may attach"
                )
        if isinstance(event, ReplyRequested):  # history: no worker answers it, it is no job nor batch line
            event = msgspec.structs.replace(event, imported=True, job=None)
        out.append(event)
    if any(isinstance(event, ParticipantJoined) for event in out):
        paused = FloorPaused(event_id=new_id("e"), chat_id=out[0].chat_id, at=out[0].at, by=user)
        out = [out[0], paused, *(event for event in out[1:] if not isinstance(event, FloorResumed))]
    return out


async def append_checked(nbus: bus.Bus, chats: list[list[ChatEventUnion]]) -> ImportReport:
    """Append checked chats; each chat.created only where its chat id is not taken (fenced on 0)."""
    report = ImportReport()
    for events in chats:
        head, *rest = events
        try:
            await bus.append_event(nbus.js, head, expected_subject_seq=0)
        except bus.ConcurrencyConflict as exc:
            raise ImportError_(
                f"chat {head.chat_id} was created by someone else during the import; imported before it:"
                f" {', '.join(report.chats) or 'nothing'}"
            ) from exc
        for event in rest:
            await bus.append_event(nbus.js, event)
        report.chats.append(head.chat_id)
        report.events += len(events)
    return report


async def import_chatbus(
    nbus: bus.Bus, document: dict[str, Any], *, keep_ids: bool, user: str
) -> ImportReport:
    """Append the chats of an export made by `chatbus admin export chats` (format chatbus.chats) as
    `user`'s; everything is checked first and nothing is appended when anything is refused."""
    if not isinstance(document, dict) or document.get("format") != "chatbus.chats":
        raise ImportError_("not a chatbus chats export (format chatbus.chats)")
    chats = document.get("chats", [])
    if not isinstance(chats, list):
        raise ImportError_("chats: a list of chats expected")
    seen: set[str] = set()
    checked = [
        await _chat_events(nbus, chat, f"chats[{i}]", keep_ids=keep_ids, user=user, seen=seen)
        for i, chat in enumerate(chats)
    ]
    return await append_checked(nbus, checked)
