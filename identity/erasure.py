"""Erasure: purge a chat's (or a user's) subjects from the streams, leaving only a tombstone.

A tombstone (`chat.<id>.erased`, `user.<id>.erased`) keeps the id, when and by whom, so that
read models drop what they hold; everything else the chat or user wrote is purged: CHAT, TOKENS,
IDENTITY, the bots they own in BOTS (chats that other users made with a public or shared bot of theirs
keep the copy the chat took when the bot joined), the exclusions of their arena votes in ARENA (their
votes themselves are in their battles, erased with their chats), and who-stored-which-image in IMAGE.
The image store is then asked to release the images (it purges those that no live chat references and
nobody else stored). Their batches (BATCHES, with their checked lines in the object store `batch_inputs`)
and uploaded batch files (`batch_files`) are deleted before their chats, so no line is made a job after.

A user's erasure cannot be outrun: its tombstone is appended first, and from then on the user is
nobody to authentication (identity.accounts.user_role), so no key, session or login acts as them;
their sessions, keys and webhook secret are removed next, and only then their chats, which nothing
new can join.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

import msgspec

import bus
import schemas
from bus import Bus, JetStream
from identity.sessions import end_sessions
from identity.webhook_secrets import forget_webhook_secret
from logtools.bots import read_bots
from logtools.chat_log import read_chat_state
from schemas import chat_decide as decide
from schemas.batch import BatchCreated, FileUploaded
from schemas.chat import ChatCreated, ChatErased, MessagePosted
from schemas.identity import ApiKeyIssued, UserErased
from schemas.ids import new_id
from schemas.queries import ReleasedImages, ReleaseImages
from schemas.streams import (
    ARENA,
    BATCH_FILES_OBJECTS,
    BATCH_INPUTS_OBJECTS,
    BATCHES,
    BOTS,
    CHAT,
    IDENTITY,
    IMAGE,
    IMAGE_SERVICE,
    TOKENS,
)
from schemas.subjects import (
    ANY,
    apikey_event,
    batch_event,
    chat_event,
    chat_tokens,
    feedback,
    file_uploaded,
    image_stored,
    one_apikey,
    one_batch,
    one_bot,
    one_chat,
    one_user,
    one_voter,
    parse_image_subject,
    service_endpoint,
    subject_of,
)

log = logging.getLogger(__name__)

# A late event (a worker finishing) can land between the tombstone and the purge: purge again.
PURGE_ROUNDS = 5
# After cancelling a reply being generated, how long its worker may still publish a delta.
LATE_DELTAS_SECONDS = 0.5
_created_decoder = msgspec.json.Decoder(ChatCreated)
_key_decoder = msgspec.json.Decoder(ApiKeyIssued)
_posted_decoder = msgspec.json.Decoder(MessagePosted)


@dataclass
class Erased:
    """What an erasure removed."""

    chats: list[str] = field(default_factory=list)
    bots: list[str] = field(default_factory=list)  # the erased user's bots, purged
    batches: list[str] = field(default_factory=list)  # the erased user's batches and batch files, purged
    images_released: list[str] = field(default_factory=list)
    seq: int = 0  # the (last) tombstone's sequence
    attached: set[tuple[str, str]] = field(default_factory=set)  # (author, image) of the erased messages


async def _tombstone(nbus: Bus, stream: str, everything: str, tombstone: ChatErased | UserErased) -> int:
    """Append the tombstone and purge every earlier message on `everything` (the chat's or user's
    subjects); repeat while late ones land."""
    seq = 0
    mark = subject_of(tombstone)
    for _ in range(PURGE_ROUNDS):
        seq = (await bus.append_event(nbus.js, tombstone, msg_id=new_id("e"))).seq
        await bus.purge_before(nbus.js, stream, everything, seq)
        remaining = await bus.read_all(nbus.js, stream, [everything])
        if all(m.subject == mark for m in remaining):  # ours, or a concurrent erasure's
            return seq
    raise bus.BusUnavailable(f"{everything} kept receiving events while being erased")


async def _release(nbus: Bus, hashes: list[str]) -> list[str]:
    """Ask the image store to purge those images that nothing references any more."""
    if not hashes:
        return []
    try:
        answer = await bus.call(
            nbus.nc,
            service_endpoint(IMAGE_SERVICE, "release"),
            ReleaseImages(hashes=hashes),
            ReleasedImages,
            timeout=30,
        )
    except bus.ServiceError as exc:
        log.warning("images not released now (%s): `chatbus admin images collect` will", exc)
        return []
    return answer.purged


async def erase_chat(nbus: Bus, chat_id: str, by: str) -> int:
    """Purge a chat from CHAT and TOKENS, leave its tombstone, release its images; the tombstone's seq."""
    erased = await _erase_chat(nbus, chat_id, by)
    await _forget_attached(nbus, erased.attached)
    await _release(nbus, erased.images_released)
    return erased.seq


async def _erase_chat(nbus: Bus, chat_id: str, by: str) -> Erased:
    state = await read_chat_state(nbus.js, chat_id)
    erasure = decide.erase(state, by)
    for cancel in erasure.cancels:  # workers stop the replies still being generated
        await bus.append_event(nbus.js, cancel)
    seq = await _tombstone(nbus, CHAT.name, one_chat(chat_id), erasure.tombstone)
    await bus.purge_subject(nbus.js, TOKENS.name, chat_tokens(chat_id))
    if erasure.cancels:  # a worker may still publish a delta or two before it hears the cancel
        await asyncio.sleep(LATE_DELTAS_SECONDS)
        await bus.purge_subject(nbus.js, TOKENS.name, chat_tokens(chat_id))
    attached = {(m.author_id, sha) for m in state.messages.values() for sha in m.images}
    return Erased(chats=[chat_id], images_released=erasure.images, seq=seq, attached=attached)


async def _forget_attached(nbus: Bus, attached: set[tuple[str, str]]) -> None:
    """An erased chat's images stop being their uploaders': each (author, image) that no other message
    of that author still carries loses its stored event, which is what lets a user download or attach
    an image (the image store then purges the bytes if nobody else holds them). Re-uploading the same
    picture stores it again."""
    if not attached:
        return
    for msg in await bus.read_all(nbus.js, CHAT.name, [chat_event(ANY, "message.posted")]):
        try:
            posted = _posted_decoder.decode(msg.data)
        except msgspec.DecodeError:
            continue
        attached.difference_update((posted.author_id, sha) for sha in posted.images)
        if not attached:
            return
    for author, sha in attached:
        await bus.purge_subject(nbus.js, IMAGE.name, image_stored(sha, author))


async def _erase_batches(js: JetStream, user_id: str) -> list[str]:
    """Purge a user's batches and batch files, and delete their stored lines and bytes: their ids."""
    gone = []
    subjects = [batch_event(ANY, "created"), file_uploaded(ANY)]
    for msg in await bus.read_all(js, BATCHES.name, subjects):
        event = bus.decode_one(msg.subject, msg.data)
        if isinstance(event, BatchCreated) and event.owner_id == user_id:
            await bus.purge_subject(js, BATCHES.name, one_batch(event.batch_id))
            await bus.delete_object(js, BATCH_INPUTS_OBJECTS.bucket, event.input_object or event.batch_id)
            gone.append(event.batch_id)
        elif isinstance(event, FileUploaded) and event.owner_id == user_id:
            await bus.purge_subject(js, BATCHES.name, file_uploaded(event.file_id))
            await bus.delete_object(js, BATCH_FILES_OBJECTS.bucket, event.file_id)
            gone.append(event.file_id)
    return gone


async def erase_user(nbus: Bus, user_id: str, by: str) -> Erased:
    """Erase a user: every chat they own, their ratings elsewhere, keys, identity, image uploads."""
    js = nbus.js
    result = Erased()
    tombstone = UserErased(event_id=new_id("e"), at=schemas.now(), user_id=user_id, by=by)
    # The tombstone first: from here on the user is nobody to authentication; nothing new can start.
    await bus.append_event(js, tombstone, msg_id=new_id("e"))
    await end_sessions(js, user_id)
    await forget_webhook_secret(js, user_id)
    for msg in await bus.read_all(js, IDENTITY.name, [apikey_event(ANY, "issued")]):
        try:
            key = _key_decoder.decode(msg.data)
        except msgspec.DecodeError:
            continue
        if key.user_id == user_id:
            await bus.purge_subject(js, IDENTITY.name, one_apikey(key.key_id))
    result.batches = await _erase_batches(js, user_id)
    # Again while chats turn up: a request already past authentication when the tombstone landed.
    for _ in range(PURGE_ROUNDS):
        owned = []
        for msg in await bus.read_all(js, CHAT.name, [chat_event(ANY, "created")]):
            try:
                chat = _created_decoder.decode(msg.data)
            except msgspec.DecodeError:
                continue
            if chat.owner_id == user_id:
                owned.append(chat.chat_id)
        if not owned:
            break
        for chat_id in owned:
            erased = await _erase_chat(nbus, chat_id, by)
            result.chats.append(chat_id)
            result.images_released.extend(erased.images_released)
            result.attached.update(pair for pair in erased.attached if pair[0] != user_id)  # others'
    await bus.purge_subject(js, CHAT.name, feedback(ANY, ANY, user_id))
    await bus.purge_subject(js, ARENA.name, one_voter(user_id))  # `arena.voter.<user_id>.excluded`
    for bot in (await read_bots(js)).values():
        if bot.owner_id == user_id:
            await bus.purge_subject(js, BOTS.name, one_bot(bot.bot_id))
            result.bots.append(bot.bot_id)
    uploads = [
        parse_image_subject(m.subject)
        for m in await bus.read_all(js, IMAGE.name, [image_stored(ANY, user_id)])
    ]
    result.images_released.extend(upload.sha256 for upload in uploads if upload is not None)
    await bus.purge_subject(js, IMAGE.name, image_stored(ANY, user_id))  # every upload of theirs
    await _forget_attached(nbus, result.attached)
    result.seq = await _tombstone(nbus, IDENTITY.name, one_user(user_id), tombstone)
    result.images_released = await _release(nbus, list(dict.fromkeys(result.images_released)))
    return result
