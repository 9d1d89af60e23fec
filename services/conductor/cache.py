"""The conductor's memory of chats: the folded state of each chat with bots, a mark for each without.

A chat without bots costs one lookup when first seen (does `participant.joined` hold anything?) and a
dictionary hit per event after it. A chat with bots is read whole once, then folded event by event as
the consumer delivers them. The cache is only a shortcut: a state that missed an event (another
conductor took it) is caught by the fence of the next append, or by `forget_all` when the consumer's
delivery sequence shows a gap. A read that was under way when the cache was dropped is used by its own
decision (its fence guards it) but not kept: it may predate the event that went elsewhere.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Final

import bus
from bus import JetStream
from logtools.chat_log import read_chat_state
from schemas.chat_state import ChatState
from schemas.streams import CHAT
from schemas.subjects import chat_event


class NoBots:
    """The mark of a chat that had no bot participant when last seen."""


NO_BOTS: Final = NoBots()
Entry = ChatState | NoBots


class ChatCache:
    """Chats by id, least recently used forgotten first beyond `size`."""

    def __init__(self, js: JetStream, size: int = 10_000) -> None:
        self.js = js
        self.size = size
        self.entries: OrderedDict[str, Entry] = OrderedDict()
        self.reads = 0  # whole chats read from the log (misses and conflicts)
        self.generation = 0  # how many times everything was dropped

    def get(self, chat_id: str) -> Entry | None:
        """The chat's entry, if this conductor holds one."""
        entry = self.entries.get(chat_id)
        if entry is not None:
            self.entries.move_to_end(chat_id)
        return entry

    def put(self, chat_id: str, entry: Entry) -> None:
        """Hold the chat's entry (forgetting the least recently used beyond the size)."""
        self.entries[chat_id] = entry
        self.entries.move_to_end(chat_id)
        while len(self.entries) > self.size:
            self.entries.popitem(last=False)

    def forget_all(self) -> None:
        """Drop everything: some event went elsewhere, so any state may have missed it."""
        self.entries.clear()
        self.generation += 1

    async def has_bots(self, chat_id: str) -> bool:
        """Whether any bot ever joined the chat (one direct read of the last `participant.joined`)."""
        return await bus.last_msg(self.js, CHAT.name, chat_event(chat_id, "participant.joined")) is not None

    async def read(self, chat_id: str) -> ChatState:
        """The chat folded from the whole log now, held from now on (unless dropped meanwhile)."""
        generation = self.generation
        state = await read_chat_state(self.js, chat_id)
        self.reads += 1
        if generation == self.generation:
            self.put(chat_id, state)
        return state
