"""The read model's rows of chats with bots and side-by-side chats: participants, the floor, choices.

A part of the fold (services/projector/fold.py), apart so that each file stays one screenful of rules:
the same pure functions of events to rows, live and in replay.
"""

from __future__ import annotations

from msgspec.structs import asdict

from schemas.chat import (
    ChoiceMade,
    FloorPaused,
    FloorResumed,
    FloorSet,
    FloorStopped,
    ParticipantJoined,
    ParticipantLeft,
    ParticipantMuted,
    SpeakerNamed,
)
from services.projector.batch import Rows
from services.projector.rows import ChoiceRow, FloorRow, ParticipantRow, SelectionRow
from services.projector.tables import CHOICES, FLOORS, PARTICIPANTS, SELECTIONS, Row


class PartyFold:
    """Apply functions of the participant, floor and choice events (mixed into `Fold`)."""

    tables: dict[str, Rows]

    def participant_joined(self, seq: int, e: ParticipantJoined) -> None:
        """A bot joined (as the copy the event holds); a repeated join is ignored."""
        row = ParticipantRow(
            participant_id=e.participant_id,
            chat_id=e.chat_id,
            bot_id=e.bot_id,
            name=e.bot.name,
            model=e.bot.model,
            muted=False,
            has_left=False,
            seq=seq,
        )
        self.tables[PARTICIPANTS.name].add(e.participant_id, asdict(row))

    def participant_left(self, seq: int, e: ParticipantLeft) -> None:
        """It speaks no more (its turns stay)."""
        participant = self.tables[PARTICIPANTS.name].known.get(e.participant_id)
        if participant is not None:
            participant["has_left"] = True

    def participant_muted(self, seq: int, e: ParticipantMuted) -> None:
        """Muted or unmuted."""
        participant = self.tables[PARTICIPANTS.name].known.get(e.participant_id)
        if participant is not None:
            participant["muted"] = e.muted

    def _floor(self, chat_id: str) -> Row | None:
        return self.tables[FLOORS.name].known.get(chat_id)

    def floor_set(self, seq: int, e: FloorSet) -> None:
        """The policy and limits (a pause or a stop stays as it was)."""
        floor = self._floor(e.chat_id)
        policy = {
            "policy": e.floor.policy,
            "rounds": e.floor.rounds,
            "max_bot_turns": e.floor.max_bot_turns,
            "delay_s": e.floor.delay_s,
            "seq": seq,
        }
        if floor is not None:
            floor.update(policy)
            return
        row = FloorRow(chat_id=e.chat_id, paused=False, stopped=False, **policy)  # type: ignore[arg-type]
        self.tables[FLOORS.name].add(e.chat_id, asdict(row))

    def floor_paused(self, seq: int, e: FloorPaused) -> None:
        """Paused: no new bot turn starts."""
        self._moderated(e.chat_id, seq, paused=True)

    def floor_resumed(self, seq: int, e: FloorResumed) -> None:
        """Turns go on."""
        self._moderated(e.chat_id, seq, paused=False)

    def floor_stopped(self, seq: int, e: FloorStopped) -> None:
        """Stopped until someone posts or the moderator names a speaker."""
        self._moderated(e.chat_id, seq, stopped=True)

    def speaker_named(self, seq: int, e: SpeakerNamed) -> None:
        """A named speaker ends a stop."""
        self._moderated(e.chat_id, seq, stopped=False)

    def _moderated(self, chat_id: str, seq: int, **changes: bool) -> None:
        floor = self._floor(chat_id)
        if floor is not None:
            floor.update(changes, seq=seq)

    def choice_made(self, seq: int, e: ChoiceMade) -> None:
        """The message's choice (a later one replaces it), and a selection of the chosen reply's branch."""
        row = asdict(
            ChoiceRow(
                message_id=e.message_id,
                chat_id=e.chat_id,
                reply_id=e.reply_id,
                rejected=list(e.rejected),
                seq=seq,
            )
        )
        choices = self.tables[CHOICES.name]
        if e.message_id in choices.known:
            choices.known[e.message_id].update(row)
        else:
            choices.add(e.message_id, row)
        selection = SelectionRow(event_id=e.event_id, chat_id=e.chat_id, node_id=e.reply_id, seq=seq)
        self.tables[SELECTIONS.name].add(e.event_id, asdict(selection))
