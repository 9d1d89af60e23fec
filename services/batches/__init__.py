"""The batches service: makes each line of a created batch a job, and cancels a cancelled batch's lines."""

from services.batches.service import BatchesStatus, Expander, run_batches

__all__ = ["BatchesStatus", "Expander", "run_batches"]
