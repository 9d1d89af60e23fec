"""Exports written to files: training rows as JSONL or Parquet, chats as JSON or TSV (made by export.py)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal

import bus
from logtools.export import (
    ExportFilter,
    ImageRef,
    Log,
    chats_json,
    chats_tsv,
    embedded_refs,
    hash_ref,
    write_rows,
)

TableFormat = Literal["jsonl", "parquet"]
ChatsFormat = Literal["json", "tsv"]


def table_format(out: Path) -> TableFormat:
    """The format a training-data file's name asks for: Parquet for `.parquet`, else JSONL."""
    return "parquet" if out.suffix == ".parquet" else "jsonl"


async def write_table(
    nbus: bus.Bus,
    log: Log,
    rows: Callable[[Log, ImageRef], Iterator[Any]],
    out: Path,
    fmt: TableFormat,
    flt: ExportFilter,
    *,
    embed_images: bool = False,
) -> int:
    """Make the rows (images as sha256 references, or embedded as data URLs) and write them; the count."""
    refs = await embedded_refs(nbus, log, flt) if embed_images else hash_ref
    return write_rows(rows(log, refs), out, fmt)


def chats_format(out: Path) -> ChatsFormat | None:
    """The format a chats file's name asks for (`.json` or `.tsv`); None for any other name."""
    if out.suffix == ".json":
        return "json"
    if out.suffix == ".tsv":
        return "tsv"
    return None


def write_chats(log: Log, flt: ExportFilter, out: Path, fmt: ChatsFormat) -> int:
    """Write the chats as lossless JSON (re-importable) or TSV; the number of chats (JSON) or rows (TSV)."""
    if fmt == "tsv":
        text = chats_tsv(log, flt)
        out.write_text(text, encoding="utf-8")
        return text.count("\n") - 1
    document = chats_json(log, flt)
    out.write_text(json.dumps(document, ensure_ascii=False, indent=1), encoding="utf-8")
    return len(document["chats"])
