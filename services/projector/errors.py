"""Errors of the projector: one base, a subclass per case a caller can act on."""

from __future__ import annotations


class ProjectorError(Exception):
    """Base of every error raised by services.projector."""


class ReadModelExists(ProjectorError, FileExistsError):
    """Replay refuses to write over an existing read model file."""
