"""Who speaks next in a chat with bots: the floor's rule, a pure function of the chat's state.

The conductor (services/conductor/) asks `next_turn` after every event of such a chat and appends
what it answers. The rule, in order:

- Nothing in a chat that is erased, deleted or without bots, while a reply is open (one bot speaks at a
  time), while the moderator's pause holds, or before anything was said.
- The turns counted are the bot replies on the active path since its last message (the human's):
  failed and cancelled ones count too.
- A stop (`floor.stopped` after that message) holds until a human posts, unless the moderator named a
  speaker after it.
- A speaker the moderator named (`floor.next`) after the last reply request speaks next, if it still
  speaks (not muted, not gone), whatever the policy and its limits.
- `max_bot_turns` turns since the message: nothing more (every policy).
- `manual`: nobody else. `round_robin`: the next speaking bot after the last speaker, in join order (the
  first after a message), until `rounds` turns of each speaking bot. `mention`: the first speaking bot
  @named in the last turn (`@Zen Sage` and `@zensage` alike), never the one who said it. `auto`: as
  round_robin, bounded by `max_bot_turns` only.
- The turn starts no sooner than the end of the last turn plus max(floor.delay_s, the bot's delay_s).

The request follows the active leaf (so the active path reads as the transcript), sees the whole path
(`context_ids`; the bot's seat cuts it to its history) and is fenced on the chat's last sequence: it is
appended only if nothing happened in the chat since this state.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from schemas.chat import ReplyRequested
from schemas.chat_decide import Decision, Fence
from schemas.chat_state import ChatState, Participant, context_ids, name_key
from schemas.ids import new_id
from schemas.seat import speaker_of
from schemas.subjects import one_chat

CONDUCTOR = "conductor"  # `reply.requested.requested_by` of the turns the conductor gives


@dataclass(frozen=True)
class Idle:
    """Nothing to do until the chat changes; `reason` says why (for logs and tests)."""

    reason: str


@dataclass(frozen=True)
class Wait:
    """`speaker` speaks next, but not before `until` (the delay between turns)."""

    until: datetime
    speaker: str


@dataclass(frozen=True)
class Speak:
    """Ask `speaker` for the next turn: the decision holds its fenced `reply.requested`."""

    speaker: str
    decision: Decision

    @property
    def request(self) -> ReplyRequested:
        """The reply request to append."""
        return self.decision.one(ReplyRequested)


Next = Idle | Wait | Speak


@dataclass(frozen=True)
class Since:
    """The active path since its last message: that message (and its seq), and the bot turns after it."""

    message_id: str | None
    message_seq: int
    turns: list[str]


def since_human(state: ChatState) -> Since:
    """The last message on the active path and the replies after it, oldest first."""
    turns: list[str] = []
    for node_id in reversed(state.tree.active_path()):
        node = state.tree.nodes[node_id]
        if node.kind == "message":
            return Since(node_id, node.seq, turns[::-1])
        turns.append(node_id)
    return Since(None, 0, turns[::-1])


def next_turn(state: ChatState, now: datetime) -> Next:
    """What happens next in the chat (the rule in the module docstring)."""
    idle = _blocked(state)
    if idle is not None:
        return idle
    leaf = state.tree.leaf()
    since = since_human(state)
    if leaf is None or since.message_id is None:
        return Idle("nothing said yet")
    floor = state.floor
    named = _named(state)
    if named is None and floor.stopped_seq > since.message_seq:
        return Idle("stopped")
    speaker = named or _by_policy(state, since, leaf)
    if isinstance(speaker, Idle):
        return speaker
    start = _end_of(state, leaf) + timedelta(seconds=max(floor.floor.delay_s, speaker.bot.delay_s))
    if start > now:
        return Wait(start, speaker.participant_id)
    return Speak(speaker.participant_id, _ask(state, speaker, leaf, now))


def _blocked(state: ChatState) -> Idle | None:
    if not state.alive or state.deleted:
        return Idle("no chat")
    if not state.has_bots:
        return Idle("no bots")
    if any(reply.open for reply in state.replies.values()):
        return Idle("a reply is open")
    if state.floor.paused:
        return Idle("paused")
    return None


def _named(state: ChatState) -> Participant | None:
    """The speaker the moderator named after the last reply request, if it may speak."""
    floor = state.floor
    if floor.named is None:
        return None
    last_request = max((n.seq for n in state.tree.nodes.values() if n.kind == "reply"), default=0)
    participant = state.participants.get(floor.named.participant_id)
    if floor.named_seq <= last_request or participant is None or not participant.speaks:
        return None
    return participant


def _by_policy(state: ChatState, since: Since, leaf: str) -> Participant | Idle:
    floor = state.floor.floor
    turns = len(since.turns)
    if turns >= floor.max_bot_turns:
        return Idle("max_bot_turns reached")
    speaking = [p for p in state.participants.values() if p.speaks]
    if not speaking:
        return Idle("every bot is muted")
    last = speaker_of(state, since.turns[-1]) if since.turns else ""
    match floor.policy:
        case "manual":
            return Idle("manual: waiting for the moderator")
        case "round_robin" if turns >= floor.rounds * len(speaking):
            return Idle("rounds done")
        case "round_robin" | "auto":
            return _after(state, last)
        case "mention":
            mentioned = first_mentioned(
                _text_of(state, leaf), [p for p in speaking if p.participant_id != last]
            )
            return mentioned or Idle("nobody mentioned")
    return Idle(f"unknown policy {floor.policy}")


def _after(state: ChatState, last: str) -> Participant:
    """The first speaking participant after `last` in join order, round the table (the first if none)."""
    order = list(state.participants.values())
    start = next((i + 1 for i, p in enumerate(order) if p.participant_id == last), 0)
    rotated = order[start:] + order[:start]
    return next(p for p in rotated if p.speaks)  # the caller checked that someone speaks


def _text_of(state: ChatState, node_id: str) -> str:
    message = state.messages.get(node_id)
    if message is not None:
        return message.content
    answer = state.answer(node_id)
    return answer.text if answer is not None else ""


def first_mentioned(text: str, candidates: Iterable[Participant]) -> Participant | None:
    """The candidate @named first in `text` (case and spaces inside the name ignored; the longest name
    at one @; the name must end at a word boundary)."""
    keyed = sorted(((name_key(p.name), p) for p in candidates), key=lambda kp: -len(kp[0]))
    at = text.find("@")
    while at != -1:
        for key, participant in keyed:
            if _names_at(text, at + 1, key):
                return participant
        at = text.find("@", at + 1)
    return None


def _names_at(text: str, start: int, key: str) -> bool:
    """Whether `text` from `start` spells `key` (spaces inside skipped) and the word ends there."""
    if not key or start >= len(text) or text[start].isspace():
        return False
    i, matched = start, ""
    while len(matched) < len(key) and i < len(text):
        if not text[i].isspace():
            matched += text[i].casefold()
            if not key.startswith(matched):
                return False
        i += 1
    return matched == key and (i == len(text) or not (text[i].isalnum() or text[i] == "_"))


def _end_of(state: ChatState, node_id: str) -> datetime:
    """When the turn at `node_id` ended: the message's time, or its reply's last event's."""
    message = state.messages.get(node_id)
    if message is not None:
        return message.at
    reply = state.replies[node_id]  # a reply node comes from its request, which made the reply
    ended = reply.ending or reply.answer or reply.request
    assert ended is not None
    return ended.at


def _ask(state: ChatState, speaker: Participant, leaf: str, now: datetime) -> Decision:
    request = ReplyRequested(
        event_id=new_id("e"),
        chat_id=state.chat_id,
        at=now,
        reply_id=new_id("r"),
        message_id=leaf,
        model=speaker.bot.model,
        params=speaker.bot.params,
        context=context_ids(state, leaf),
        requested_by=CONDUCTOR,
        speaker=speaker.participant_id,
    )
    return Decision(events=(request,), fence=Fence(one_chat(state.chat_id), state.last_seq))
