"""Batches survive their processes: a worker killed (SIGKILL) mid-batch and another started, or the
batches service killed mid-expansion and restarted, still end with every line answered (or made a job)
exactly once."""

from __future__ import annotations

import asyncio
import os
import signal
from collections import Counter
from pathlib import Path

import bus
from bus import Bus
from schemas.batch import BatchExpanded
from schemas.batch_decide import line_chat_id
from schemas.batch_lines import PlanLine, PlanTurn
from schemas.chat import ChatCreated, MessagePosted, ReplyCompleted, ReplyFailed, ReplyRequested, ReplyStarted
from schemas.sampling import SamplingParams
from services.api.batches import store_batch
from tests.batchhelp import download, jsonl, stack_without_worker, submit, users, wait_batch
from tests.stack import Client, spawn, stop_process, wait_event, wait_models


async def _events(nbus: Bus, subjects: list[str]) -> list[object]:
    return [bus.decode_one(m.subject, m.data) for m in await bus.read_all(nbus.js, "CHAT", subjects)]


async def test_a_worker_killed_mid_batch_leaves_every_line_answered_once(
    nbus: Bus, nats_url: str, tmp_path: Path, demo_model_dir: Path
) -> None:
    keys = await users(nbus)
    worker = ["worker", "--model", str(demo_model_dir), "--alias", "demo", "--ack-wait", "2"]
    victim = spawn([*worker, "--worker-id", "wa"], nats_url, tmp_path / "wa.log")
    heir = None
    try:
        await wait_models(nbus, "demo")
        async with stack_without_worker(nbus, tmp_path) as base, Client(base, keys["ann"]) as ann:
            made = await submit(ann, jsonl(200, max_tokens=6, ignore_eos=True))
            async with asyncio.timeout(120):
                while (await ann.call("GET", f"/v1/batches/{made['id']}"))[1]["request_counts"][
                    "completed"
                ] < 20:
                    await asyncio.sleep(0.1)
            os.kill(victim.pid, signal.SIGKILL)  # mid-batch, mid-generation: the hard way
            victim.wait()
            heir = spawn([*worker, "--worker-id", "wb"], nats_url, tmp_path / "wb.log")
            done = await wait_batch(ann, made["id"], timeout=240)
            output = await download(ann, f"/v1/batches/{made['id']}/output")
    finally:
        stop_process(victim)
        if heir is not None:
            stop_process(heir)
    assert done["status"] == "completed" and done["request_counts"]["completed"] == 200, done
    assert [line["custom_id"] for line in output] == [f"req-{i}" for i in range(200)]
    events = await _events(nbus, [f"chat.{line_chat_id(made['id'], i)}.>" for i in range(200)])
    ends = Counter(e.reply_id for e in events if isinstance(e, ReplyCompleted | ReplyFailed))
    assert len(ends) == 200 and set(ends.values()) == {1}
    workers = {e.worker_id for e in events if isinstance(e, ReplyCompleted)}
    assert workers == {"wa", "wb"}  # the killed worker answered some, its heir the rest
    assert any(
        e.attempt == 2 for e in events if isinstance(e, ReplyStarted)
    )  # lines it held were redelivered


async def test_the_batches_service_killed_mid_expansion_makes_every_line_once_after_a_restart(
    nbus: Bus, nats_url: str, tmp_path: Path
) -> None:
    """A batch of a model nobody serves (its requests just wait), expanded by `chatbus batches` processes."""
    lines = 2000
    plan = [
        PlanLine(
            index=i,
            custom_id=f"c{i}",
            model="nobody-serves",
            params=SamplingParams(max_new_tokens=2),
            turns=[PlanTurn(role="user", content=f"line {i}")],
        )
        for i in range(lines)
    ]
    created = await store_batch(nbus.js, "ann", plan, model="nobody-serves", window="1h", metadata=None)
    batch_id = created.batch_id
    service = ["batches", "--ack-wait", "2"]
    first = spawn(service, nats_url, tmp_path / "b1.log")
    try:
        async with asyncio.timeout(60):
            while True:
                made = await bus.last_msg(nbus.js, "CHAT", f"chat.{line_chat_id(batch_id, 100)}.created")
                if made is not None:
                    break
                await asyncio.sleep(0.02)
        os.kill(first.pid, signal.SIGKILL)  # mid-expansion
        first.wait()
        assert await bus.last_msg(nbus.js, "BATCHES", f"batch.{batch_id}.expanded") is None, "not mid-way"
    finally:
        stop_process(first)
    second = spawn(service, nats_url, tmp_path / "b2.log")
    try:
        expanded = await wait_event(nbus, f"batch.{batch_id}.expanded", 120, stream="BATCHES")
    finally:
        stop_process(second)
    assert isinstance(expanded, BatchExpanded) and expanded.lines == lines
    events = await _events(nbus, [f"chat.{line_chat_id(batch_id, i)}.>" for i in range(lines)])
    for kind in (ChatCreated, MessagePosted, ReplyRequested):
        per_chat = Counter(e.chat_id for e in events if isinstance(e, kind))  # type: ignore[attr-defined]
        assert len(per_chat) == lines and set(per_chat.values()) == {1}, kind.__name__
    custom_ids = [e.job.custom_id for e in events if isinstance(e, ReplyRequested) and e.job]
    assert sorted(custom_ids) == sorted(f"c{i}" for i in range(lines))
