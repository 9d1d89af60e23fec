"""Party chats and side-by-side chats in a real browser: a new chat of each kind, the participants, the
moderator's controls driving a real conductor, every turn labelled with its speaker, and the compare
view's columns and choice. The demo worker answers every turn from the bot's seat."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from playwright.async_api import Browser, Page

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
from schemas.streams import CHAT
from services.conductor import run_conductor
from tests.browserhelp import PASSWORD, axe, events_of, log_in, serious
from tests.stack import Client, extra_worker

FAST = {"max_new_tokens": 8}
LONG = {"max_new_tokens": 1500, "ignore_eos": True}
STREAMING = "sels => sels.every(s => (document.querySelector(s)?.textContent || '').length > 20)"
SPEAKERS = "#messages .msg .meta .speaker"
AT_END = (  # scrolled down, to the end
    "() => { const l = document.querySelector('#messages');"
    " return l.scrollTop > 0 && l.scrollHeight - l.scrollTop - l.clientHeight < 48; }"
)
ENDED = "n => document.querySelectorAll('#messages .msg.assistant[data-status]').length === n"


@contextlib.asynccontextmanager
async def _conductor(nbus: Bus) -> AsyncIterator[None]:
    stop = asyncio.Event()
    task = asyncio.create_task(run_conductor(nbus, stop))
    try:
        yield
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)


async def _chat_events(nbus: Bus, chat_id: str, kind: type) -> list[Any]:
    return [e for e in await events_of(nbus, CHAT.name, [f"chat.{chat_id}.>"]) if isinstance(e, kind)]


async def _status(page: Page, state: str) -> None:
    await page.wait_for_selector(f"#floor-status[data-state={state}]")


async def _turns_ended(page: Page, count: int) -> list[str]:
    """Wait until `count` bot turns on the page have ended; the speakers of the whole transcript."""
    await page.wait_for_function(ENDED, arg=count, timeout=60_000)
    return await page.locator(SPEAKERS).all_inner_texts()


async def _say(page: Page, text: str) -> None:
    await page.fill("#composer-text", text)
    await page.press("#composer-text", "Enter")
    await page.wait_for_selector(f"#messages .msg.user .body:text-is('{text}')")


async def test_a_party_chat_with_speakers_and_the_moderators_controls(
    stack: dict[str, str], nbus: Bus, browser: Browser, artifacts_dir: Path
) -> None:
    await set_password(nbus.js, "ann", PASSWORD, by="test")
    async with Client(stack["base"], stack["ann"]) as ann, _conductor(nbus):
        for name, params in (("Zen Sage", FAST), ("Grumpy Cat", FAST), ("Owl", LONG)):
            status, made = await ann.call(
                "POST", "/v1/bots", json={"name": name, "model": "demo", "params": params}
            )
            assert status == 201, made
        # bypass_csp: only to inject axe
        context = await browser.new_context(viewport={"width": 1280, "height": 900}, bypass_csp=True)
        page = await context.new_page()
        page.on("dialog", lambda d: asyncio.ensure_future(d.accept()))
        await log_in(page, stack["base"], "ann")

        # A new party chat: Zen Sage then Grumpy Cat, the manual policy, at most 5 bot turns in a row.
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

        # Manual: after the human, nobody speaks until the moderator names Grumpy Cat.
        await _say(page, "Hello, bots")
        await page.wait_for_timeout(1000)
        assert await _chat_events(nbus, chat_id, ReplyRequested) == []
        await page.click(f"#participants li[data-participant={cat}] .next")
        assert await _turns_ended(page, 1) == ["ann", "Grumpy Cat"]
        assert (await _chat_events(nbus, chat_id, SpeakerNamed))[-1].participant_id == cat

        # Round robin, one round: Zen Sage has not spoken since the message, so it speaks now.
        await page.select_option("#floor-policy", "round_robin")
        await page.click("#floor-form button[type=submit]")
        assert await _turns_ended(page, 2) == ["ann", "Grumpy Cat", "Zen Sage"]
        changed = (await _chat_events(nbus, chat_id, FloorSet))[-1].floor
        assert (changed.policy, changed.rounds, changed.max_bot_turns) == ("round_robin", 1, 5)

        # Grumpy Cat muted: only Zen Sage answers the next message; unmuted, Grumpy Cat has its turn.
        await page.click(f"#participants li[data-participant={cat}] .mute")
        await page.wait_for_selector(f"#participants li.muted[data-participant={cat}] .unmute")
        assert (
            await page.evaluate("document.activeElement.className") == "unmute"
        )  # the keyboard's place kept
        await _say(page, "Again")
        assert (await _turns_ended(page, 3))[3:] == ["ann", "Zen Sage"]
        await page.wait_for_timeout(500)
        assert await page.locator("#messages .msg.assistant").count() == 3
        await page.click(f"#participants li[data-participant={cat}] .unmute")
        assert (await _turns_ended(page, 4))[3:] == ["ann", "Zen Sage", "Grumpy Cat"]
        muted = await _chat_events(nbus, chat_id, ParticipantMuted)
        assert [(m.participant_id, m.muted) for m in muted] == [(cat, True), (cat, False)]
        await page.wait_for_function(
            "() => document.querySelector('#floor-status').textContent.includes('4 bot turns (2 in a row)')"
        )

        # Paused, a message waits; resumed, both answer it in order.
        await page.click("#floor-pause")
        await _status(page, "paused")
        assert await page.is_enabled("#floor-resume") and await page.is_disabled("#floor-pause")
        await _say(page, "While paused")
        await page.wait_for_timeout(1000)
        assert await page.locator("#messages .msg.assistant").count() == 4
        await page.click("#floor-resume")
        await _status(page, "running")
        assert (await _turns_ended(page, 6))[6:] == ["ann", "Zen Sage", "Grumpy Cat"]
        assert await page.evaluate(AT_END), "the chat follows new turns"
        assert [p.cancel_running for p in await _chat_events(nbus, chat_id, FloorPaused)] == [False]
        assert len(await _chat_events(nbus, chat_id, FloorResumed)) == 1

        # Owl (a long talker) joins while paused and is named; resumed, it speaks; "pause and cancel the
        # running turn" ends it there. Then it leaves.
        await page.click("#floor-pause")
        await _status(page, "paused")
        await page.select_option("#join-bot", label="Owl (demo)")
        await page.click("#join-form button[type=submit]")
        await page.wait_for_selector("#participants li.participant >> nth=2")
        owl = (await _chat_events(nbus, chat_id, ParticipantJoined))[-1].participant_id
        assert await page.is_hidden("#join-form")  # every usable bot is in the chat
        await page.click(f"#participants li[data-participant={owl}] .next")
        await page.wait_for_timeout(500)
        await page.click("#floor-resume")
        await page.wait_for_function(
            STREAMING, arg=["#messages .msg.assistant.streaming .body"], timeout=30_000
        )
        assert "speaking: Owl" in await page.inner_text("#floor-status")
        await page.click("#floor-pause-cancel")
        await _status(page, "paused")
        assert (await _turns_ended(page, 7))[-1] == "Owl"
        paused = await _chat_events(nbus, chat_id, FloorPaused)
        assert [p.cancel_running for p in paused] == [False, False, True]
        (cancelled,) = await _chat_events(nbus, chat_id, ReplyCancelled)
        asked = await _chat_events(nbus, chat_id, ReplyRequested)
        assert cancelled.reply_id == asked[-1].reply_id and asked[-1].speaker == owl
        assert all(r.requested_by == "conductor" for r in asked)
        await page.screenshot(path=str(artifacts_dir / "ui-party-desktop.png"))
        await page.click(f"#participants li[data-participant={owl}] .leave")
        await page.wait_for_selector(f"#participants li[data-participant={owl}]", state="detached")
        assert [e.participant_id for e in await _chat_events(nbus, chat_id, ParticipantLeft)] == [owl]

        # Stop, and new limits while stopped: no bot speaks.
        await page.click("#floor-stop")
        await _status(page, "stopped")
        assert len(await _chat_events(nbus, chat_id, FloorStopped)) == 1
        await page.fill("#floor-rounds", "2")
        await page.fill("#floor-max", "4")
        await page.click("#floor-form button[type=submit]")
        await page.wait_for_function(
            "() => document.querySelector('#floor-status').textContent.includes('2 rounds')"
        )
        changed = (await _chat_events(nbus, chat_id, FloorSet))[-1].floor
        assert (changed.policy, changed.rounds, changed.max_bot_turns) == ("round_robin", 2, 4)
        assert not serious(found := await axe(page)), found

        # A reload draws the same transcript with its speakers, and the floor as the log left it.
        speakers = await page.locator(SPEAKERS).all_inner_texts()
        await page.reload()
        assert await _turns_ended(page, 7) == speakers
        await _status(page, "stopped")
        assert len(await _chat_events(nbus, chat_id, ReplyRequested)) == 7
        phone = await context.new_page()
        await phone.set_viewport_size({"width": 390, "height": 844})
        await phone.goto(page.url)
        await phone.wait_for_selector("#messages .msg.assistant[data-status]")
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


async def test_side_by_side_columns_stream_together_and_one_is_picked(
    stack: dict[str, str], nbus: Bus, browser: Browser, demo_model_dir: Path, artifacts_dir: Path
) -> None:
    await set_password(nbus.js, "ann", PASSWORD, by="test")
    async with (
        extra_worker(nbus, demo_model_dir, "demo-b", capacity=4),
        Client(stack["base"], stack["ann"]) as ann,
    ):
        context = await browser.new_context(viewport={"width": 1280, "height": 900}, bypass_csp=True)  # axe
        page = await context.new_page()
        await log_in(page, stack["base"], "ann")

        # The same page makes a plain chat, with the model picked there.
        await page.click("#open-new")
        await page.fill("#new-title", "Just one")
        await page.select_option("#new-model", "demo-b")
        await page.click("#new-create")
        await page.wait_for_selector("#chat-title:text-is('Just one')")
        status, plain = await ann.call("GET", f"/v1/chats/{page.url.split('chat=')[1]}")
        assert status == 200 and plain["model"] == "demo-b" and plain["compare"] == [], plain
        assert await page.is_hidden("#party")

        await page.click("#open-new")
        await page.fill("#new-title", "Which one")
        await page.check("#new-form input[value=compare]")
        await page.check("#new-models input[value=demo]")
        await page.click("#new-create")
        assert "2 to 4" in await page.inner_text("#new-error")  # one model is not a comparison
        await page.check("#new-models input[value=demo-b]")
        await page.click("#new-create")
        await page.wait_for_selector("#composer:not([hidden])")
        chat_id = page.url.split("chat=")[1]

        # Long answers (long enough to be seen mid-way, not longer): both columns stream at the same time.
        status, posted = await ann.call(
            "POST",
            f"/v1/chats/{chat_id}/messages",
            json={"content": "Which is better?", "params": {"max_new_tokens": 300, "ignore_eos": True}},
        )
        assert status == 202 and len(posted["reply_ids"]) == 2, posted
        left, right = (f"#node-{r}" for r in posted["reply_ids"])
        await page.wait_for_function(
            STREAMING,
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
