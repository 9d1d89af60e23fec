"""Party chats and side-by-side chats in a real browser: a new chat of each kind, the participants, the
moderator's controls, every turn labelled with its speaker, and the compare view's columns and choice.

No conductor runs in the in-process stack: where a bot's turn is needed, the test appends the reply
request the conductor would (`_bot_turn`), and the real demo worker answers it from the bot's seat."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, Page

import bus
import schemas
from bus import Bus
from identity.sessions import set_password
from schemas.chat import (
    ChoiceMade,
    FloorPaused,
    FloorResumed,
    FloorSet,
    FloorStopped,
    ParticipantJoined,
    ParticipantLeft,
    ParticipantMuted,
    ReplyCancelled,
    ReplyRequested,
    SpeakerNamed,
)
from schemas.ids import new_id
from schemas.sampling import SamplingParams
from schemas.streams import CHAT
from tests.browserhelp import PASSWORD, axe, chromium, events_of, log_in, serious
from tests.stack import Client, wait_models

FAST = {"max_new_tokens": 8}
BOTH_STREAMING = "sels => sels.every(s => (document.querySelector(s)?.textContent || '').length > 20)"


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with chromium() as launched:
        yield launched


async def _chat_events(nbus: Bus, chat_id: str, kind: type) -> list[Any]:
    return [e for e in await events_of(nbus, CHAT.name, [f"chat.{chat_id}.>"]) if isinstance(e, kind)]


async def _bot_turn(
    ann: Client, nbus: Bus, chat_id: str, participant: str, params: SamplingParams | None = None
) -> str:
    """Append the conductor's request for a bot's turn: after the active leaf, the whole path as context."""
    status, listed = await ann.call("GET", f"/v1/chats/{chat_id}/messages")
    assert status == 200, listed
    path = [node["node_id"] for node in listed["active_path"]]
    request = ReplyRequested(
        event_id=new_id("e"), chat_id=chat_id, at=schemas.now(), reply_id=new_id("r"), message_id=path[-1],
        model="demo", params=params or SamplingParams(**FAST), context=path, requested_by="conductor",
        speaker=participant,
    )  # fmt: skip
    await bus.append_event(nbus.js, request)
    return request.reply_id


async def _status(page: Page, state: str) -> None:
    await page.wait_for_selector(f"#floor-status[data-state={state}]")


async def test_a_party_chat_with_speakers_and_the_moderators_controls(
    stack: dict[str, str], nbus: Bus, browser: Browser, artifacts_dir: Path
) -> None:
    await set_password(nbus.js, "ann", PASSWORD, by="test")
    async with Client(stack["base"], stack["ann"]) as ann:
        for name in ("Zen Sage", "Grumpy Cat", "Owl"):
            status, made = await ann.call(
                "POST", "/v1/bots", json={"name": name, "model": "demo", "params": FAST}
            )
            assert status == 201, made
        # bypass_csp: only to inject axe
        context = await browser.new_context(viewport={"width": 1280, "height": 900}, bypass_csp=True)
        page = await context.new_page()
        page.on("dialog", lambda d: asyncio.ensure_future(d.accept()))
        await log_in(page, stack["base"], "ann")

        # A new party chat: both bots, the manual policy, at most 5 bot turns in a row.
        await page.click("#open-new")
        await page.check("#new-form input[value=party]")
        for name in ("Zen Sage", "Grumpy Cat"):
            await page.check(f"#new-bots label:has-text('{name}') input")
        await page.fill("#new-title", "Tea party")
        await page.select_option("#new-policy", "manual")
        await page.fill("#new-max", "5")
        await page.click("#new-create")
        await page.wait_for_selector("#party:not([hidden]) #participants li.participant >> nth=1")
        chat_id = page.url.split("chat=")[1]
        joined = await _chat_events(nbus, chat_id, ParticipantJoined)
        assert [j.bot.name for j in joined] == ["Zen Sage", "Grumpy Cat"]  # as ticked, not as listed
        zen, cat = (j.participant_id for j in joined)
        (floor,) = await _chat_events(nbus, chat_id, FloorSet)
        assert (floor.floor.policy, floor.floor.max_bot_turns) == ("manual", 5)
        assert "policy manual" in await page.inner_text("#floor-status")
        assert await page.input_value("#floor-policy") == "manual"

        # The human speaks (no reply is asked), then names Zen Sage to speak next.
        await page.fill("#composer-text", "Hello, bots")
        await page.press("#composer-text", "Enter")
        await page.wait_for_selector("#messages .msg.user .speaker:text-is('ann')")
        await page.click(f"#participants li[data-participant={zen}] .next")
        named = await _wait_for(nbus, chat_id, SpeakerNamed)
        assert named.participant_id == zen

        # Two bot turns, as the conductor would ask them: each labelled with its speaker, in order.
        first = await _bot_turn(ann, nbus, chat_id, zen)
        await page.wait_for_selector(
            f"#node-{first}[data-status] .speaker:text-is('Zen Sage')", timeout=60_000
        )
        second = await _bot_turn(ann, nbus, chat_id, cat)
        await page.wait_for_selector(
            f"#node-{second}[data-status] .speaker:text-is('Grumpy Cat')", timeout=60_000
        )
        speakers = await page.locator("#messages .msg .meta .speaker").all_inner_texts()
        assert speakers == ["ann", "Zen Sage", "Grumpy Cat"]
        await page.wait_for_function(
            "() => document.querySelector('#floor-status').textContent.includes('2 bot turns (2 in a row)')"
        )

        # Mute and unmute Grumpy Cat.
        await page.click(f"#participants li[data-participant={cat}] .mute")
        await page.wait_for_selector(f"#participants li.muted[data-participant={cat}] .unmute")
        await page.click(f"#participants li[data-participant={cat}] .unmute")
        await page.wait_for_selector(f"#participants li:not(.muted)[data-participant={cat}] .mute")
        muted = await _chat_events(nbus, chat_id, ParticipantMuted)
        assert [(m.participant_id, m.muted) for m in muted] == [(cat, True), (cat, False)]

        # A third bot joins from the panel, then leaves (the page asks first).
        await page.select_option("#join-bot", label="Owl (demo)")
        await page.click("#join-form button[type=submit]")
        await page.wait_for_selector("#participants li.participant >> nth=2")
        owl = (await _chat_events(nbus, chat_id, ParticipantJoined))[-1]
        assert owl.bot.name == "Owl"
        assert await page.locator("#join-bot option").count() == 0 and await page.is_hidden("#join-form")
        await page.click(f"#participants li[data-participant={owl.participant_id}] .leave")
        await page.wait_for_selector(
            f"#participants li[data-participant={owl.participant_id}]", state="detached"
        )
        assert [e.participant_id for e in await _chat_events(nbus, chat_id, ParticipantLeft)] == [
            owl.participant_id
        ]

        # Pause, resume.
        await page.click("#floor-pause")
        await _status(page, "paused")
        assert await page.is_enabled("#floor-resume") and await page.is_disabled("#floor-pause")
        await page.click("#floor-resume")
        await _status(page, "running")
        paused = await _chat_events(nbus, chat_id, FloorPaused)
        assert [p.cancel_running for p in paused] == [False]
        assert len(await _chat_events(nbus, chat_id, FloorResumed)) == 1

        # A long turn, then "pause and cancel the running turn": it ends there.
        long = await _bot_turn(ann, nbus, chat_id, zen, SamplingParams(max_new_tokens=1500, ignore_eos=True))
        await page.wait_for_function(
            "sel => (document.querySelector(sel)?.textContent || '').length > 20",
            arg=f"#node-{long}.streaming .body",
            timeout=30_000,
        )
        assert "speaking: Zen Sage" in await page.inner_text("#floor-status")
        await page.click("#floor-pause-cancel")
        await _status(page, "paused")
        await page.wait_for_selector(f"#node-{long}:not(.streaming)", timeout=30_000)
        assert [p.cancel_running for p in await _chat_events(nbus, chat_id, FloorPaused)] == [False, True]
        assert long in [c.reply_id for c in await _chat_events(nbus, chat_id, ReplyCancelled)]
        await page.screenshot(path=str(artifacts_dir / "ui-party-desktop.png"))

        # Change the policy and limits while it runs, then stop.
        await page.select_option("#floor-policy", "round_robin")
        await page.fill("#floor-rounds", "2")
        await page.fill("#floor-max", "4")
        await page.click("#floor-form button[type=submit]")
        await page.wait_for_function(
            "() => document.querySelector('#floor-status').textContent.includes('policy round_robin')"
        )
        changed = (await _chat_events(nbus, chat_id, FloorSet))[-1].floor
        assert (changed.policy, changed.rounds, changed.max_bot_turns) == ("round_robin", 2, 4)
        await page.click("#floor-stop")
        await _status(page, "stopped")
        assert len(await _chat_events(nbus, chat_id, FloorStopped)) == 1
        assert not serious(found := await axe(page)), found

        # A reload draws the same transcript with its speakers, and the floor as the log left it.
        await page.reload()
        await page.wait_for_selector(f"#node-{long}:not(.streaming)")
        assert await page.locator("#messages .msg .meta .speaker").all_inner_texts() == [
            "ann", "Zen Sage", "Grumpy Cat", "Zen Sage",
        ]  # fmt: skip
        await _status(page, "stopped")
        phone = await context.new_page()
        await phone.set_viewport_size({"width": 390, "height": 844})
        await phone.goto(page.url)
        await phone.wait_for_selector("#node-" + long)
        assert await phone.is_hidden("#participants")  # a phone shows the chat first, the controls folded
        await phone.screenshot(path=str(artifacts_dir / "ui-party-phone.png"))
        await phone.click("#moderation summary")
        await phone.wait_for_selector("#participants li.participant")
        await context.close()


async def _wait_for(nbus: Bus, chat_id: str, kind: type, timeout: float = 10.0) -> Any:
    deadline = asyncio.get_running_loop().time() + timeout
    while not (found := await _chat_events(nbus, chat_id, kind)):
        assert asyncio.get_running_loop().time() < deadline, f"no {kind.__name__} in the log"
        await asyncio.sleep(0.1)
    return found[-1]


@contextlib.asynccontextmanager
async def _second_model(nbus: Bus, model_dir: Path, alias: str) -> AsyncIterator[None]:
    """Another demo worker, serving `alias` (a compare chat needs two models)."""
    from services.llm_worker import WorkerSettings
    from services.llm_worker.continuous_batching import ContinuousBatchingEngine
    from services.llm_worker.engine import EngineConfig
    from services.llm_worker.worker import Worker

    engine = await asyncio.to_thread(ContinuousBatchingEngine.from_pretrained, str(model_dir), EngineConfig())
    worker = Worker(
        WorkerSettings(model=str(model_dir), alias=alias, capacity=4), nbus, engine, engine.tokenizer
    )
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    try:
        await wait_models(nbus, alias)
        yield
    finally:
        stop.set()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, 30)


async def test_side_by_side_columns_stream_together_and_one_is_picked(
    stack: dict[str, str], nbus: Bus, browser: Browser, demo_model_dir: Path, artifacts_dir: Path
) -> None:
    await set_password(nbus.js, "ann", PASSWORD, by="test")
    async with _second_model(nbus, demo_model_dir, "demo-b"), Client(stack["base"], stack["ann"]) as ann:
        context = await browser.new_context(viewport={"width": 1280, "height": 900}, bypass_csp=True)  # axe
        page = await context.new_page()
        await log_in(page, stack["base"], "ann")
        await page.click("#open-new")
        await page.check("#new-form input[value=compare]")
        await page.check("#new-models input[value=demo]")
        await page.click("#new-create")
        assert "2 to 4" in await page.inner_text("#new-error")  # one model is not a comparison
        await page.check("#new-models input[value=demo-b]")
        await page.click("#new-create")
        await page.wait_for_selector("#composer:not([hidden])")
        chat_id = page.url.split("chat=")[1]

        # Long answers: both columns stream at the same time.
        status, posted = await ann.call(
            "POST",
            f"/v1/chats/{chat_id}/messages",
            json={"content": "Which is better?", "params": {"max_new_tokens": 1000, "ignore_eos": True}},
        )
        assert status == 202 and len(posted["reply_ids"]) == 2, posted
        left, right = (f"#node-{r}" for r in posted["reply_ids"])
        await page.wait_for_function(
            BOTH_STREAMING,
            arg=[f"{left}.streaming .body", f"{right}.streaming .body"],
            timeout=60_000,
        )
        assert await page.locator("#messages .compare .column").count() == 2
        for column, model in ((left, "demo"), (right, "demo-b")):
            assert await page.inner_text(f"{column} .speaker") == model
            await page.wait_for_selector(f"{column}[data-status=length]", timeout=120_000)

        # Pick the right one: marked, the active branch, a choice in the log; then change to the left.
        await page.click(f"{right} .pick")
        await page.wait_for_selector(f"{right}.chosen .pick[aria-pressed=true]")
        assert await page.locator(f"{left}.chosen").count() == 0
        choice = await _wait_for(nbus, chat_id, ChoiceMade)
        assert (choice.reply_id, choice.rejected) == (posted["reply_ids"][1], [posted["reply_ids"][0]])
        await page.screenshot(path=str(artifacts_dir / "ui-compare-desktop.png"))
        assert not serious(found := await axe(page)), found
        await page.click(f"{left} .pick")
        await page.wait_for_selector(f"{left}.chosen.active")
        await page.wait_for_selector(f"{right}:not(.chosen)")

        # The next message follows the chosen answer and gets its own columns.
        await page.fill("#composer-text", "And now?")
        await page.press("#composer-text", "Enter")
        await page.wait_for_selector("#messages .compare >> nth=1")
        await page.wait_for_function(
            "() => document.querySelectorAll('#messages > li:last-child .column[data-status]').length == 2",
            timeout=120_000,
        )
        assert await page.locator("#messages > li").count() == 4  # message, columns, message, columns
        await page.set_viewport_size({"width": 390, "height": 844})
        await page.screenshot(path=str(artifacts_dir / "ui-compare-phone.png"), full_page=True)
