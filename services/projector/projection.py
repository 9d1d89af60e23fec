"""One batch from a stream into the read model: skip what is applied, decode, fold, write.

A batch is applied in two steps: `prepare` (decode, load touched rows, fold, convert to
Arrow: Python work) and `commit` (one DuckDB transaction, which runs without the GIL).
Replay prepares batch N+1 while batch N commits: N+1 then reads N's rows from N's
`Prepared` (an overlay) rather than from the database, which may not have them yet.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import duckdb

from services.projector.fold import Delivered, Keys, decode_batch, fold, touched
from services.projector.store import ArrowBatch, Store
from services.projector.tables import MESSAGES, MUTABLE, Row


@dataclass
class Prepared:
    """A folded batch ready to commit, and the final state of every row it writes."""

    batch: ArrowBatch
    rows: dict[str, dict[str, Row]]
    message_ids: set[str]
    applied: int


def prepare(
    store: Store,
    stream: str,
    msgs: Sequence[Delivered],
    after: Prepared | None = None,
    con: duckdb.DuckDBPyConnection | None = None,
    stored_keys: dict[str, set[str]] | None = None,
) -> Prepared | None:
    """Fold a batch that follows `after` (or the store's checkpoint); None when all of it is applied.

    `stored_keys` (replay into a fresh file) holds every key earlier batches wrote: only those
    can exist in the store, so the others are not looked up.
    """
    last = after.batch.last_seq if after is not None else store.checkpoint(stream)
    if msgs and msgs[0].seq <= last:
        msgs = [m for m in msgs if m.seq > last]
    if not msgs:
        return None
    events = decode_batch(msgs)
    keys = touched(events)
    if stored_keys is None:
        existing = store.load(keys, con)
    else:
        existing = store.load(Keys(by_table={n: k & stored_keys[n] for n, k in keys.by_table.items()}), con)
    if after is not None:
        for table in MUTABLE:
            newer = after.rows[table.name]
            for key in keys.by_table[table.name] & newer.keys():
                existing[table.name][key] = newer[key]
        for message_id in keys.by_table[MESSAGES.name] & after.message_ids:
            existing[MESSAGES.name][message_id] = {MESSAGES.key: message_id}
    changes = fold(events, existing, store.dead_chats)
    if stored_keys is not None:
        for table in MUTABLE:
            stored_keys[table.name].update(row[table.key] for row in changes.inserts[table.name])
        stored_keys[MESSAGES.name].update(row[MESSAGES.key] for row in changes.messages)
    rows: dict[str, dict[str, Row]] = {}
    for table in MUTABLE:
        written = (*changes.inserts[table.name], *changes.updates[table.name])
        rows[table.name] = {row[table.key]: row for row in written}
    return Prepared(
        batch=ArrowBatch.of(changes, stream, msgs[-1].seq),
        rows=rows,
        message_ids={row[MESSAGES.key] for row in changes.messages},
        applied=len(msgs),
    )


def commit(store: Store, prepared: Prepared) -> int:
    """Write a prepared batch and its checkpoint in one transaction."""
    store.write(prepared.batch)
    return prepared.applied


def project(store: Store, stream: str, msgs: Sequence[Delivered]) -> int:
    """Apply a batch of one stream in one transaction; messages at or below the checkpoint are skipped."""
    prepared = prepare(store, stream, msgs)
    return 0 if prepared is None else commit(store, prepared)
