"""Training data and chat exports, read from the log (the source of truth, after every erasure).

- `sft`: OpenAI chat fine-tuning lines `{"messages": [...]}`: one per chat's active path, or one per
  rated reply (the path to it); images as `sha256:<hex>` references or embedded data URLs. A chat
  with bots (several speakers) is written from a seat instead: one line per bot reply, its messages
  what that bot saw (schemas/seat.py) and the reply as the last assistant turn; `seat` picks one bot.
- `preferences`: DPO pairs, shared `prompt`, `chosen`, `rejected`: sibling replies a rating ranks
  (up over down), side-by-side choices (the chosen reply over each rejected one), and arena votes
  (the winner's last answer over the loser's; ties and both-bad only when asked, marked as such;
  excluded voters' votes never).
- `chats`: lossless JSON (every event of each chat, re-importable) or TSV for spreadsheets.

Filters: model alias, time range, minimum rating, one user, and consent (only users who allowed
training, the default). Deleted chats are left out; erased ones are no longer in the log.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import msgspec
import pyarrow as pa
import pyarrow.parquet as pq

from logtools.export_log import (
    Chat,
    ExportFilter,
    ImageRef,
    Log,
    embedded_refs,
    exported_chats,
    hash_ref,
    read_log,
    reply_ok,
    unrated,
)
from schemas.chat import ReplyRequested
from schemas.chat_state import Participant, Turn, conversation, name_key
from schemas.seat import context_for, speaker_name

Per = Literal["active", "rated"]
Source = Literal["rating", "choice", "arena"]


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


def _prompt(chat: Chat, request: ReplyRequested, image_ref: ImageRef) -> list[dict[str, Any]]:
    """What the reply answered: a bot's seat view (schemas/seat.py), or the path to the node it follows."""
    if request.speaker:
        return [_openai(turn, image_ref) for turn in context_for(chat.state, request)]
    return _messages(chat, chat.state.tree.path_to(request.message_id), image_ref)


@dataclass(frozen=True)
class SftRow:
    """One training example and where it came from (`speaker`: the bot whose seat it is written from)."""

    chat_id: str
    user_id: str
    reply_id: str
    model: str
    rating: str | None
    messages: list[dict[str, Any]]
    speaker: str = ""


def seat_matches(participant: Participant, seat: str) -> bool:
    """Whether `--seat` names this bot: its name (case and spaces ignored), bot id or participant id."""
    ids = (participant.bot_id, participant.participant_id)
    return seat in ids or name_key(seat) == name_key(participant.name)


def sft_rows(
    log: Log, flt: ExportFilter, per: Per, image_ref: ImageRef, seat: str | None = None
) -> Iterator[SftRow]:
    """One-model chats: their active paths (ending at their last usable reply) or the path to each rated
    reply. Chats with bots: each bot reply (on the active path, or rated) from its speaker's seat; with
    `seat`, only that bot's replies (and no one-model chat)."""
    for chat in exported_chats(log, flt):
        if chat.state.has_bots:
            yield from _seat_rows(chat, flt, per, image_ref, seat)
        elif seat is None:
            yield from _path_rows(chat, flt, per, image_ref)


def _targets(chat: Chat, flt: ExportFilter, per: Per) -> list[str]:
    """The replies on the active path, or the rated ones, that the filter takes."""
    if per == "active":
        nodes = chat.state.tree.active_path()
    else:
        nodes = [r for r in chat.state.ratings if chat.rating(r) is not None]
    return [r for r in nodes if reply_ok(chat, r, flt)]


def _path_rows(chat: Chat, flt: ExportFilter, per: Per, image_ref: ImageRef) -> Iterator[SftRow]:
    if per == "active":
        path = chat.state.tree.active_path()
        last = next((n for n in reversed(path) if chat.target(n) is not None), None)
        if last is None or not reply_ok(chat, last, flt):
            return
        targets = [last]
    else:
        targets = _targets(chat, flt, per)
    for reply_id in targets:
        yield _sft_row(chat, reply_id, _messages(chat, chat.state.tree.path_to(reply_id), image_ref))


def _seat_rows(
    chat: Chat, flt: ExportFilter, per: Per, image_ref: ImageRef, seat: str | None
) -> Iterator[SftRow]:
    """Each reply as its model saw the chat (the seat view of its request), then the reply itself.
    A reply no bot spoke (the chat's own model, before bots joined) is written as that model saw it."""
    for reply_id in _targets(chat, flt, per):
        request = chat.state.replies[reply_id].request
        if request is None:
            continue
        participant = chat.state.participants.get(request.speaker)
        if seat is not None and (participant is None or not seat_matches(participant, seat)):
            continue
        messages = [_openai(turn, image_ref) for turn in context_for(chat.state, request)]
        messages.append({"role": "assistant", "content": chat.whole(reply_id).text})
        yield _sft_row(chat, reply_id, messages, participant.name if participant is not None else "")


def _sft_row(chat: Chat, reply_id: str, messages: list[dict[str, Any]], speaker: str = "") -> SftRow:
    return SftRow(
        chat_id=chat.created.chat_id,
        user_id=chat.created.owner_id,
        reply_id=reply_id,
        model=chat.whole(reply_id).model,
        rating=chat.rating(reply_id),
        messages=messages,
        speaker=speaker,
    )


@dataclass(frozen=True)
class PreferenceRow:
    """A DPO pair: the shared context the replies answered, a chosen and a rejected reply, and what
    ranked them (`rating`: rated up and down; `choice`: picked side by side; `arena`: a battle's vote,
    where `tie`/`both_bad` mark a vote that preferred neither: then A's answer is `chosen`)."""

    chat_id: str
    user_id: str
    prompt: list[dict[str, Any]]
    chosen: list[dict[str, Any]]
    rejected: list[dict[str, Any]]
    chosen_reply_id: str
    rejected_reply_id: str
    chosen_model: str
    rejected_model: str
    source: Source = "rating"
    tie: bool = False
    both_bad: bool = False


def preference_rows(
    log: Log, flt: ExportFilter, image_ref: ImageRef, arena_ties: bool = False
) -> Iterator[PreferenceRow]:
    """Every (up, down) pair among the completed sibling replies to one node, then every side-by-side
    choice's (chosen, rejected) pairs, then arena votes (with `arena_ties`, ties and both-bad too); a
    pair both rank is written once, as rated."""
    for chat in exported_chats(log, flt):
        written: set[tuple[str, str]] = set()
        pairs = (
            *_rated_pairs(chat, flt),
            *_chosen_pairs(chat, flt),
            *_voted_pairs(log, chat, flt, arena_ties),
        )
        for chosen, rejected, source in pairs:
            if (chosen, rejected) in written:
                continue
            row = _pair(chat, chosen, rejected, source, image_ref)
            if row is not None:
                written.add((chosen, rejected))
                yield row


def _rated_pairs(chat: Chat, flt: ExportFilter) -> Iterator[tuple[str, str, Source]]:
    """(up, down) among the whole replies that follow one node (regenerations)."""
    by_parent: dict[str, list[str]] = {}
    for reply_id, reply in chat.state.replies.items():
        if reply.request is not None and reply_ok(chat, reply_id, unrated(flt)):
            by_parent.setdefault(reply.request.message_id, []).append(reply_id)
    for replies in by_parent.values():
        ups = [r for r in replies if chat.rating(r) == "up"]
        downs = [r for r in replies if chat.rating(r) == "down"]
        yield from ((up, down, "rating") for up in ups for down in downs)


def _chosen_pairs(chat: Chat, flt: ExportFilter) -> Iterator[tuple[str, str, Source]]:
    """(chosen, rejected) of each message's latest side-by-side choice."""
    for choice in chat.state.choices.values():
        if not reply_ok(chat, choice.reply_id, unrated(flt)):
            continue
        for rejected in choice.rejected:
            if rejected != choice.reply_id and reply_ok(chat, rejected, unrated(flt)):
                yield choice.reply_id, rejected, "choice"


def _voted_pairs(log: Log, chat: Chat, flt: ExportFilter, ties: bool) -> Iterator[tuple[str, str, Source]]:
    """A battle's vote: (winner's last answer, loser's), or (A's, B's) for a tie or both-bad with `ties`;
    nothing from a voter whose votes are excluded."""
    vote = chat.state.vote
    if vote is None or vote.voter_id in log.excluded_voters or not (vote.replies_a and vote.replies_b):
        return
    a, b = vote.replies_a[-1], vote.replies_b[-1]
    if not (reply_ok(chat, a, unrated(flt)) and reply_ok(chat, b, unrated(flt))):
        return
    if vote.vote == "B":
        yield b, a, "arena"
    elif vote.vote == "A" or ties:
        yield a, b, "arena"


def _pair(chat: Chat, up: str, down: str, source: Source, image_ref: ImageRef) -> PreferenceRow | None:
    """The row of a pair, or None when the replies did not answer the same conversation from the same
    seat, or say the same thing (nothing to prefer)."""
    asked, other = chat.state.replies[up].request, chat.state.replies[down].request
    if asked is None or other is None:
        return None
    if (asked.message_id, asked.context, asked.speaker) != (other.message_id, other.context, other.speaker):
        return None
    chosen, rejected = chat.whole(up), chat.whole(down)
    if chosen.text == rejected.text:
        return None
    return PreferenceRow(
        chat_id=chat.created.chat_id,
        user_id=chat.created.owner_id,
        prompt=_prompt(chat, asked, image_ref),
        chosen=[{"role": "assistant", "content": chosen.text}],
        rejected=[{"role": "assistant", "content": rejected.text}],
        chosen_reply_id=up,
        rejected_reply_id=down,
        chosen_model=chosen.model,
        rejected_model=rejected.model,
        source=source,
        tie=source == "arena" and _voted(chat) == "tie",
        both_bad=source == "arena" and _voted(chat) == "both_bad",
    )


def _voted(chat: Chat) -> str:
    return chat.state.vote.vote if chat.state.vote is not None else ""


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
    marks = {k: True for k in ("tie", "both_bad") if data.pop(k)}  # a vote that preferred neither
    return {**keep, **marks, "metadata": data}


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
        for chat in exported_chats(log, flt)
    ]
    return {"format": "chatbus.chats", "version": 1, "chats": chats}


TSV_COLUMNS = (
    "chat_id", "title", "node_id", "parent_id", "kind", "role", "model", "speaker", "at", "content",
)  # fmt: skip


def chats_tsv(log: Log, flt: ExportFilter) -> str:
    """One row per message and completed reply, every branch; tabs and newlines in text escaped."""
    out = io.StringIO()
    out.write("\t".join(TSV_COLUMNS) + "\n")
    for chat in exported_chats(log, flt):
        for node_id, node in chat.state.tree.nodes.items():
            if node.kind == "message":
                m = chat.state.messages[node_id]
                row = (m.role, "", speaker_name(chat.state, node_id), m.at.isoformat(), m.content)
            elif (done := chat.target(node_id)) is not None:
                who = speaker_name(chat.state, node_id)
                row = ("assistant", done.model, who, done.at.isoformat(), done.text)
            else:
                continue
            cells = (chat.created.chat_id, chat.state.title, node_id, node.parent, node.kind, *row)
            out.write("\t".join(_tsv(str(c)) for c in cells) + "\n")
    return out.getvalue()


def _tsv(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


__all__ = [
    "Chat",
    "ExportFilter",
    "ImageRef",
    "Log",
    "PreferenceRow",
    "SftRow",
    "chats_json",
    "chats_tsv",
    "embedded_refs",
    "hash_ref",
    "preference_rows",
    "read_log",
    "seat_matches",
    "sft_rows",
    "write_rows",
]
