"""The REST API's bodies for bots (`/v1/bots`): what a client sends, what it gets back, the export file.

A bot's definition in a request is the BotSpec's fields side by side with who may use it
(`visibility`, `shared_with` as user names); the export file is the same definition without the
names (they belong to one installation), marked `chatbus_bot: 1` so an import knows what it reads.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal, get_args

import msgspec

from schemas.bot import (
    MAX_BOT_PROMPT_CHARS,
    MAX_DELAY_SECONDS,
    MAX_HISTORY_TURNS,
    BotName,
    BotSpec,
    ModelAlias,
    Visibility,
)
from schemas.sampling import SamplingParams

MAX_SHARED_WITH = 100
MAX_BOTS_PER_IMPORT = 100
BOT_FILE_VERSION: Literal[1] = 1
BotScope = Literal["usable", "mine", "store", "all"]
BOT_SCOPES: tuple[str, ...] = get_args(BotScope)
UserName = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
Prompt = Annotated[str, msgspec.Meta(max_length=MAX_BOT_PROMPT_CHARS)]
History = Annotated[int, msgspec.Meta(ge=0, le=MAX_HISTORY_TURNS)]
Delay = Annotated[float, msgspec.Meta(ge=0.0, le=MAX_DELAY_SECONDS)]
Description = Annotated[str, msgspec.Meta(max_length=2000)]
SharedWith = Annotated[list[UserName], msgspec.Meta(max_length=MAX_SHARED_WITH)]


class BotRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """POST /v1/bots and PUT /v1/bots/{bot_id}: the whole definition (a PUT replaces every field).

    `shared_with`: user names who may use it; only with visibility "shared".
    """

    name: BotName
    model: ModelAlias
    system_prompt: Prompt = ""
    params: SamplingParams = SamplingParams()
    history: History = 0
    delay_s: Delay = 0.0
    description: Description = ""
    visibility: Visibility = "private"
    shared_with: SharedWith = []


class BotFile(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One exported bot (GET /v1/bots/{bot_id}/export), and one item of POST /v1/bots/import.

    An import may add `shared_with` (names on this installation); an export never carries it.
    """

    chatbus_bot: Literal[1]
    name: BotName
    model: ModelAlias
    system_prompt: Prompt = ""
    params: SamplingParams = SamplingParams()
    history: History = 0
    delay_s: Delay = 0.0
    description: Description = ""
    visibility: Visibility = "private"
    shared_with: SharedWith | msgspec.UnsetType = msgspec.UNSET  # unset: left out of an export


BotFileBody = BotFile | list[BotFile]  # POST /v1/bots/import: one exported bot or a list of them


class BotBody(msgspec.Struct, frozen=True, kw_only=True):
    """A bot as the API shows it. `version` is its last event's sequence: send it back as
    `If-Match` to change the bot only if nobody changed it since (409 otherwise)."""

    bot_id: str
    owner_id: str
    owner_name: str
    mine: bool
    name: str
    model: str
    system_prompt: str
    params: SamplingParams
    history: int
    delay_s: float
    description: str
    visibility: Visibility
    shared_with: list[str]  # user names
    created_at: datetime
    updated_at: datetime
    version: int


class BotList(msgspec.Struct, frozen=True, kw_only=True):
    """GET /v1/bots: the bots of the scope asked for, by name."""

    scope: BotScope
    bots: list[BotBody]


class BotsImported(msgspec.Struct, frozen=True, kw_only=True):
    """201 answer to POST /v1/bots/import: the bots made, in the file's order."""

    bots: list[BotBody]


class BotFileError(ValueError):
    """An import file that is not one exported bot or a list of them (the message names the field)."""


_file_decoder = msgspec.json.Decoder(BotFileBody)


def parse_bot_file(raw: bytes) -> list[BotFile]:
    """The bots of an export file (one or a list, at most MAX_BOTS_PER_IMPORT), else BotFileError."""
    try:
        decoded = _file_decoder.decode(raw)
    except msgspec.ValidationError as exc:
        raise BotFileError(f"not a chatbus bot export: {exc}") from None
    except msgspec.DecodeError as exc:
        raise BotFileError(f"not valid JSON: {exc}") from None
    items = decoded if isinstance(decoded, list) else [decoded]
    if not items:
        raise BotFileError("the list holds no bot")
    if len(items) > MAX_BOTS_PER_IMPORT:
        raise BotFileError(f"at most {MAX_BOTS_PER_IMPORT} bots per import (got {len(items)})")
    return items


def sharing_problem(visibility: Visibility, names: list[str]) -> str | None:
    """What is wrong with sharing a bot with these names at this visibility, or None."""
    if names and visibility != "shared":
        return f'shared_with needs visibility "shared" (it is {visibility!r})'
    return None


def login_names(names: list[str]) -> list[str]:
    """User names as logins are spelled (lowercase, no blanks around), each once, in order."""
    return list(dict.fromkeys(name.strip().lower() for name in names))


def shared_names(body: BotRequest | BotFile) -> list[str]:
    """The user names a request or an imported bot is shared with (none when unsaid)."""
    return [] if isinstance(body.shared_with, msgspec.UnsetType) else list(body.shared_with)


def spec_of(body: BotRequest | BotFile) -> BotSpec:
    """The BotSpec part of a request or an exported bot."""
    return BotSpec(
        name=body.name,
        model=body.model,
        system_prompt=body.system_prompt,
        params=body.params,
        history=body.history,
        delay_s=body.delay_s,
        description=body.description,
    )


def file_of(spec: BotSpec, visibility: Visibility) -> BotFile:
    """The export of a bot: its definition and visibility, nothing of who owns it or shares it."""
    return BotFile(chatbus_bot=BOT_FILE_VERSION, visibility=visibility, **msgspec.structs.asdict(spec))
