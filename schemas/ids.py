"""Identifiers: token-safe, time-sortable ids and their validation."""

from __future__ import annotations

import re
import secrets
import time

ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}\Z"  # \Z: `$` would accept a trailing newline
_ID_RE = re.compile(ID_PATTERN)
_ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyz"


def _base36(n: int, width: int) -> str:
    out = []
    for _ in range(width):
        n, r = divmod(n, 36)
        out.append(_ALPHABET[r])
    return "".join(reversed(out))


def new_id(prefix: str = "") -> str:
    """A new id: a prefix, 9 base36 chars of milliseconds (sortable), 12 random chars."""
    millis = time.time_ns() // 1_000_000
    return f"{prefix}{_base36(millis, 9)}{_base36(secrets.randbits(62), 12)}"


def is_valid_id(value: str) -> bool:
    """True when value can be used as one subject token (`[A-Za-z0-9_-]`, 1-64 chars)."""
    return bool(_ID_RE.match(value))
