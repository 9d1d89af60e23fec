"""Errors of the image store: one base, and a refusal that carries a code for the 4xx body."""

from __future__ import annotations


class ImageStoreError(Exception):
    """Base of every error raised by services/image_store."""


class ImageRejected(ImageStoreError):
    """The input was refused; `code` names why (too_large, bad_format, forbidden_address, ...)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
