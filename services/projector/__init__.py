"""The projector: sole owner of the DuckDB read model; folds CHAT and IDENTITY, answers queries over NATS."""

from services.projector.errors import ProjectorError, ReadModelExists
from services.projector.replay import ReplaySummary, replay
from services.projector.service import run_projector
from services.projector.store import dump_read_model

__all__ = ["ProjectorError", "ReadModelExists", "ReplaySummary", "dump_read_model", "replay", "run_projector"]
