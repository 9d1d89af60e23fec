"""Collect unreferenced images: bytes and stored events of images no live chat uses any more.

An image is referenced while a message of a chat that is not deleted (or erased) carries its hash.
Images younger than a grace period are kept even when unreferenced: a user may have uploaded one
and not yet sent the message that attaches it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import msgspec

import bus
import schemas
from bus import Bus
from schemas.chat import ChatDeleted, ChatRestored, MessagePosted
from schemas.chat_state import ChatState
from schemas.ids import new_id
from schemas.image import ImagePurged, ImageStored
from schemas.streams import CHAT, IMAGE, IMAGES_OBJECTS
from schemas.subjects import ANY, REST, chat_event, image_stored, one_image

# Only these event kinds decide what is referenced; decoding just them keeps a scan fast.
_FILTERS = [chat_event(ANY, "message.posted"), chat_event(ANY, "deleted"), chat_event(ANY, "restored")]
_decoder = msgspec.json.Decoder(MessagePosted | ChatDeleted | ChatRestored)
_stored_decoder = msgspec.json.Decoder(ImageStored)


@dataclass
class CollectReport:
    """What a collection found and did."""

    scanned_events: int = 0
    images: int = 0
    referenced: int = 0
    too_young: int = 0
    purged: list[str] = field(default_factory=list)
    purged_bytes: int = 0


def _fold(msgs: list[bus.StoredMsg], chats: dict[str, ChatState]) -> None:
    """Fold the messages into the states of their chats (only the kinds that decide references)."""
    for msg in msgs:
        try:
            event = _decoder.decode(msg.data)
        except msgspec.DecodeError:
            continue  # another kind, or a newer version's
        chat = chats.get(event.chat_id)
        if chat is None:
            chat = chats[event.chat_id] = ChatState(event.chat_id)
        chat.apply(msg.seq, event)


def _referenced(chats: dict[str, ChatState], deleted_too: bool) -> set[str]:
    return {sha for chat in chats.values() for sha in chat.held_images(deleted_too=deleted_too)}


async def _held(nbus: Bus, sha256: str) -> bool:
    return await bus.last_msg(nbus.js, IMAGE.name, image_stored(sha256, ANY)) is not None


async def collect_images(
    nbus: Bus,
    *,
    by: str,
    grace: timedelta = timedelta(hours=24),
    dry_run: bool = False,
    on_progress: Callable[[int, int], None] | None = None,
    only: set[str] | None = None,
    release: bool = False,
) -> CollectReport:
    """Purge every image (of `only`, if given) that no live chat references and that is older than `grace`.

    `release` (after an erasure) is stricter: deleted chats still count (they can be restored) and
    an image anyone still holds (a stored event left) stays, for the grace-period collector to judge.
    """
    report = CollectReport()
    chats: dict[str, ChatState] = {}
    msgs = await bus.read_all(nbus.js, CHAT.name, _FILTERS)
    _fold(msgs, chats)
    report.scanned_events = len(msgs)
    last_seq = msgs[-1].seq if msgs else 0
    objects = await bus.list_objects(nbus.js, IMAGES_OBJECTS.bucket)
    if only is not None:
        objects = [entry for entry in objects if entry.name in only]
    report.images = len(objects)
    cutoff = schemas.now() - grace
    # `release`: a deleted chat can come back, so its images stay.
    referenced = _referenced(chats, deleted_too=release)
    candidates = []
    for entry in objects:
        if entry.name in referenced:
            report.referenced += 1
        elif await _young(nbus, entry, cutoff) or (release and await _held(nbus, entry.name)):
            report.too_young += 1
        else:
            candidates.append(entry)
    if dry_run or not candidates:
        report.purged = [entry.name for entry in candidates]
        report.purged_bytes = sum(entry.size for entry in candidates)
        return report
    # Messages posted while we scanned may have attached a candidate: read the tail once more.
    _fold(await bus.read_all(nbus.js, CHAT.name, _FILTERS, start_seq=last_seq + 1), chats)
    referenced = _referenced(chats, deleted_too=release)
    for done, entry in enumerate(candidates, 1):
        if entry.name not in referenced and await _purge(nbus, entry.name, by):
            report.purged.append(entry.name)
            report.purged_bytes += entry.size
        if on_progress is not None:
            on_progress(done, len(candidates))
    return report


async def _young(nbus: Bus, entry: bus.ObjectEntry, cutoff: datetime) -> bool:
    """Whether anyone stored the image after `cutoff` (its newest stored event, else the object's time)."""
    newest = await bus.last_msg(nbus.js, IMAGE.name, image_stored(entry.name, ANY))
    if newest is not None:
        try:
            return _stored_decoder.decode(newest.data).at > cutoff
        except msgspec.DecodeError:
            return True  # written by a newer version: keep it
    return entry.mtime is None or entry.mtime > cutoff


async def _purge(nbus: Bus, sha256: str, by: str) -> bool:
    """Record the purge, fenced on the image's history (an upload since we looked wins), then remove
    who-stored-it (nobody can attach it after that) and the bytes. False when an upload won."""
    last = await bus.last_msg(nbus.js, IMAGE.name, one_image(sha256))
    event = ImagePurged(event_id=new_id("e"), at=schemas.now(), sha256=sha256, by=by)
    try:
        await bus.append_event(
            nbus.js,
            event,
            expected_subject_seq=last.seq if last is not None else 0,
            expected_subject=one_image(sha256),
        )
    except bus.ConcurrencyConflict:
        return False
    await bus.purge_subject(nbus.js, IMAGE.name, image_stored(sha256, REST))
    await bus.delete_object(nbus.js, IMAGES_OBJECTS.bucket, sha256)
    return True
