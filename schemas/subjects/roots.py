"""The wildcards, the join of tokens, and each stream's root token and whole-stream pattern."""

from __future__ import annotations

ANY = "*"  # a wildcard for exactly one token
REST = ">"  # a wildcard for one or more final tokens


def join(*tokens: str) -> str:
    """A subject from its tokens (ids are token-safe, so it splits back into exactly these)."""
    return ".".join(tokens)


def matches(pattern: str, subject: str) -> bool:
    """Whether `subject` is on `pattern` (ANY: one token, REST: the rest), as nats-server matches them."""
    want, got = pattern.split("."), subject.split(".")
    for i, token in enumerate(want):
        if token == REST:
            return len(got) > i
        if i >= len(got) or (token != ANY and token != got[i]):
            return False
    return len(got) == len(want)


CHAT_ROOT = "chat"
TOKENS_ROOT = "tokens"
USER_ROOT = "user"
APIKEY_ROOT = "apikey"
GROUP_ROOT = "group"
IMAGE_ROOT = "image"
BOT_ROOT = "bot"
ARENA_ROOT = "arena"
BATCH_ROOT = "batch"
BATCH_FILE_ROOT = "batchfile"

ALL_CHATS = join(CHAT_ROOT, REST)
ALL_TOKENS = join(TOKENS_ROOT, REST)
ALL_USERS = join(USER_ROOT, REST)
ALL_APIKEYS = join(APIKEY_ROOT, REST)
ALL_GROUPS = join(GROUP_ROOT, REST)  # reserved in IDENTITY; no group event exists yet
ALL_IMAGES = join(IMAGE_ROOT, REST)
ALL_BOTS = join(BOT_ROOT, REST)
ALL_ARENA = join(ARENA_ROOT, REST)
ALL_BATCHES = join(BATCH_ROOT, REST)
ALL_BATCH_FILES = join(BATCH_FILE_ROOT, REST)
