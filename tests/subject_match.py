"""A NATS-style subject matcher written here, independently of schemas/subjects/, and example ids:
the subject tests check the builders against it."""

from __future__ import annotations

C, R, U, K = "c1", "r-2", "ann_3", "kX9"
SHA = "ab" * 32


def matches(pattern: str, subject: str) -> bool:
    """NATS subject matching: `*` is any one token, a final `>` one or more tokens."""
    mine, theirs = pattern.split("."), subject.split(".")
    for i, token in enumerate(mine):
        if token == ">" and i == len(mine) - 1:
            return len(theirs) > i
        if i >= len(theirs) or (token != "*" and token != theirs[i]):
            return False
    return len(mine) == len(theirs)
