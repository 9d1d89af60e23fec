"""One batch from a stream into the read model: skip what is applied, decode, fold, write.

The live projector loads the stored rows a batch touches, folds the batch over them, and
writes new and changed rows with the checkpoint in one transaction. (Replay folds the same
way over rows it holds in memory: see `replay`.)
"""

from __future__ import annotations

from collections.abc import Sequence

from bus import Delivered, decode_batch
from services.projector.batch import touched
from services.projector.fold import fold
from services.projector.store import ArrowBatch, Store


def project(store: Store, stream: str, msgs: Sequence[Delivered]) -> int:
    """Apply a batch of one stream in one transaction; messages at or below the checkpoint are skipped."""
    last = store.checkpoint(stream)
    if msgs and msgs[0].seq <= last:
        msgs = [m for m in msgs if m.seq > last]
    if not msgs:
        return 0
    events = decode_batch(msgs)
    changes = fold(events, store.load(touched(events)), store.dead_chats)
    store.write(ArrowBatch.of(changes, stream, msgs[-1].seq))
    return len(msgs)
