"""The arena in a real browser: a battle between two demo-model aliases, both sides streaming side by side
as "Model A" and "Model B" with nothing on the page (text, DOM, live frames) naming either model before the
vote; the vote by keyboard, the reveal, going on with the winner alone; the leaderboard page with a row and a
whisker per voted model, its filters asking the route again."""

from __future__ import annotations

import json
from pathlib import Path

from playwright.async_api import Browser, Page, Request, Response, Route

import bus
import schemas
from bus import Bus
from identity.sessions import set_password
from schemas.arena import PoolSet
from schemas.chat import ArenaContinued, ArenaVoted, ReplyRequested
from schemas.ids import new_id
from tests.browserhelp import PASSWORD, axe, log_in, serious
from tests.stack import Client, chat_events, extra_worker, in_process_stack, wait_event

ALIASES = ("kestrel", "osprey")  # distinctive, so a substring search of the page means something
LONG = {"max_new_tokens": 600, "ignore_eos": True}
COLUMNS = "#messages .compare .column"
STREAMING = "sels => sels.every(s => (document.querySelector(s)?.textContent || '').length > 20)"
PAGE_SOURCE = "() => document.documentElement.outerHTML"


async def _pool(nbus: Bus, *include: str) -> None:
    await bus.append_event(
        nbus.js, PoolSet(event_id=new_id("e"), at=schemas.now(), by="test", include=list(include))
    )


async def _long_answers(route: Route, request: Request) -> None:
    """The page sends the prompt as a user would; long answers (a test-only sampling setting) keep both
    sides streaming long enough to look at them mid-way."""
    body = json.loads(request.post_data or "{}")
    await route.continue_(post_data=json.dumps({**body, "params": LONG}))


class Seen:
    """What the voter's page received: its live frames and the API bodies of the battle's routes."""

    def __init__(self, page: Page) -> None:
        self.frames: list[str | bytes] = []
        self.responses: list[Response] = []
        page.on("websocket", lambda ws: ws.on("framereceived", self._frame))
        page.on("response", self._response)

    def _frame(self, payload: str | bytes) -> None:
        self.frames.append(payload)

    def _response(self, response: Response) -> None:
        path = response.url.split("/", 3)[-1]
        if path.startswith(("v1/chats", "v1/arena")) and "/ws" not in path:
            self.responses.append(response)

    async def text(self) -> str:
        """All of it as one text."""
        bodies = [await response.text() for response in self.responses]
        return "\n".join([*map(str, self.frames), *bodies])


async def _battle(ann: Client, nbus: Bus, vote: str) -> ArenaVoted:
    """A short battle through the API, voted once both sides are done: the vote as the log holds it."""
    status, made = await ann.call(
        "POST",
        "/v1/arena/battles",
        json={"content": "Quick", "category": "birds", "params": {"max_new_tokens": 4}},
    )
    assert status == 201, made
    for reply_id in made["reply_ids"]:
        await wait_event(nbus, f"chat.{made['chat_id']}.reply.{reply_id}.completed")
    status, voted = await ann.call("POST", f"/v1/chats/{made['chat_id']}/arena/vote", json={"vote": vote})
    assert status == 200, voted
    return await wait_event(nbus, f"chat.{made['chat_id']}.arena.voted")


def _tally(votes: list[ArenaVoted]) -> dict[str, str]:
    """Each model's "wins / losses / ties" (both bad counts as a tie)."""
    counts = {alias: [0, 0, 0] for alias in ALIASES}
    for v in votes:
        a, b = counts[v.model_a], counts[v.model_b]
        match v.vote:
            case "A":
                a[0], b[1] = a[0] + 1, b[1] + 1
            case "B":
                a[1], b[0] = a[1] + 1, b[0] + 1
            case _:
                a[2], b[2] = a[2] + 1, b[2] + 1
    return {alias: " / ".join(map(str, c)) for alias, c in counts.items()}


def _named(text: str, secrets: list[str]) -> list[str]:
    return [s for s in secrets if s in text]


async def _blind_now(page: Page, secrets: list[str]) -> None:
    """Neither model nor worker anywhere on the page: its text and its whole DOM."""
    assert not _named(await page.inner_text("body"), secrets)
    assert not _named(await page.evaluate(PAGE_SOURCE), secrets)


async def test_a_blind_battle_vote_reveal_continue_and_the_leaderboard(
    stack: dict[str, str], nbus: Bus, browser: Browser, demo_model_dir: Path, artifacts_dir: Path
) -> None:
    await set_password(nbus.js, "ann", PASSWORD, by="test")
    async with (
        extra_worker(nbus, demo_model_dir, ALIASES[0], capacity=4) as first,
        extra_worker(nbus, demo_model_dir, ALIASES[1], capacity=4) as second,
        Client(stack["base"], stack["ann"]) as ann,
    ):
        secrets = [*ALIASES, first.settings.worker_id, second.settings.worker_id]
        context = await browser.new_context(viewport={"width": 1280, "height": 900}, bypass_csp=True)  # axe
        page = await context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        await log_in(page, stack["base"], "ann")
        seen = Seen(page)

        # A pool of one model: no battle, and the page says why in the API's words.
        await _pool(nbus, ALIASES[0])
        await page.click("#open-arena")
        await page.wait_for_selector("#arena-view:not([hidden])")
        assert await page.evaluate("document.activeElement.id") == "arena-prompt"
        await page.fill("#arena-prompt", "Which bird flies higher?")
        await page.press("#arena-prompt", "Enter")
        await page.wait_for_function("() => document.querySelector('#arena-error').textContent.length > 0")
        assert "two served models" in await page.inner_text("#arena-error")
        assert not serious(found := await axe(page)), found
        await _blind_now(page, secrets)  # not even the served models' list

        # Two in the pool: the battle streams both sides at once, labelled A and B only.
        await _pool(nbus, *ALIASES)
        await page.route("**/v1/arena/battles", _long_answers)
        await page.fill("#arena-category", "birds")
        await page.click("#arena-start")
        await page.wait_for_selector("#battle:not([hidden])")
        await page.wait_for_function("() => document.activeElement.id === 'battle-title'")  # keyboard
        chat_id = page.url.split("chat=")[1]
        await page.wait_for_selector(f"{COLUMNS} >> nth=1")
        both = [f"{COLUMNS}.streaming:nth-child({n}) .body" for n in (1, 2)]
        await page.wait_for_function(STREAMING, arg=both, timeout=60_000)
        assert await page.locator(f"{COLUMNS} .head .speaker").all_inner_texts() == ["Model A", "Model B"]
        assert await page.locator("#battle-vote button:disabled").count() == 4  # not before both are done
        await _blind_now(page, secrets)
        await page.screenshot(path=str(artifacts_dir / "ui-arena-streaming.png"))
        await page.wait_for_function(
            f"() => document.querySelectorAll('{COLUMNS}[data-status]').length === 2", timeout=120_000
        )
        await page.wait_for_selector("#battle-vote button:enabled >> nth=3")
        assert "Which one is better" in await page.inner_text("#battle-status")
        await _blind_now(page, secrets)
        assert not _named(await seen.text(), secrets)
        assert "Which bird" in await seen.text()  # the collector saw the battle
        assert not serious(found := await axe(page)), found

        # The vote, by keyboard: the names are revealed under each side.
        await page.focus("#battle-vote button[data-vote=A]")
        await page.keyboard.press("Enter")
        await page.wait_for_selector("#battle-reveal:not([hidden])")
        (voted,) = [e for e in await chat_events(nbus, chat_id) if isinstance(e, ArenaVoted)]
        assert (voted.vote, voted.category, {voted.model_a, voted.model_b}) == ("A", "birds", set(ALIASES))
        for nth, alias in ((1, voted.model_a), (2, voted.model_b)):
            await page.wait_for_selector(f"{COLUMNS}:nth-child({nth}) .head .revealed:text-is('{alias}')")
        status = await page.inner_text("#battle-status")
        assert f"Model A is {voted.model_a}" in status and f"Model B is {voted.model_b}" in status
        assert await page.evaluate("document.activeElement.id") == "continue-a"
        assert set(_named(await page.evaluate(PAGE_SOURCE), secrets)) >= set(ALIASES)
        code, again = await ann.call("POST", f"/v1/chats/{chat_id}/arena/vote", json={"vote": "B"})
        assert code == 409, again  # the battle was revealed
        await page.screenshot(path=str(artifacts_dir / "ui-arena-revealed.png"))

        # Continue with the winner: an ordinary chat where that model alone answers.
        assert await page.inner_text("#continue-a") == f"Continue with {voted.model_a}"
        await page.keyboard.press("Enter")
        await page.wait_for_selector("#battle", state="hidden")
        await page.wait_for_selector("#composer:not([hidden])")
        await page.wait_for_selector("#messages .compare", state="detached")
        continued = [e for e in await chat_events(nbus, chat_id) if isinstance(e, ArenaContinued)]
        assert [(c.side, c.model) for c in continued] == [("A", voted.model_a)]
        await page.fill("#composer-text", "And the lowest?")
        await page.press("#composer-text", "Enter")
        await page.wait_for_selector("#messages .msg.user .body:text-is('And the lowest?')")
        await page.wait_for_function(
            "() => document.querySelector('#messages > li:last-child')?.dataset.status", timeout=120_000
        )
        assert await page.locator("#messages > li:last-child.msg.assistant").count() == 1
        assert (await page.inner_text("#messages > li:last-child .meta")).startswith(voted.model_a)
        asked = [e for e in await chat_events(nbus, chat_id) if isinstance(e, ReplyRequested)]
        assert [r.model for r in asked[2:]] == [voted.model_a]  # the next reply: the winner's alone

        # The leaderboard: a row and a whisker per voted model, on one scale; the filters ask again.
        votes = [voted] + [await _battle(ann, nbus, vote) for vote in ("B", "tie", "A", "both_bad", "B")]
        await page.click("#open-leaderboard")
        rows = "#board-rows tr[data-model]"
        await page.wait_for_selector(f"{rows} >> nth=1")
        assert sorted(await page.locator(f"{rows} th").all_inner_texts()) == sorted(ALIASES)
        assert (await page.inner_text("#board-summary")).startswith(f"{len(votes)} votes counted")
        for alias, tally in _tally(votes).items():
            assert await page.inner_text(f"#board-rows tr[data-model={alias}] .wlt") == tally
        widths = []
        for whisker in await page.locator(f"{rows} svg.whisker").all():
            x1, x2, cx = [
                float(await whisker.locator(sel).get_attribute(attr) or "nan")
                for sel, attr in (("line.bar", "x1"), ("line.bar", "x2"), ("circle.dot", "cx"))
            ]
            assert 0 <= x1 <= cx + 1e-6 and cx <= x2 + 1e-6 and x2 <= 200, (x1, cx, x2)
            widths.append(x2 - x1)
        assert max(widths) > 10, widths  # an interval, drawn (the anchor's alone is a point)
        assert not serious(found := await axe(page)), found
        await page.screenshot(path=str(artifacts_dir / "ui-leaderboard.png"))
        async with page.expect_request(lambda r: "category=cooking" in r.url):
            await page.fill("#board-category", "cooking")
            await page.press("#board-category", "Enter")
        await page.wait_for_selector("#board-rows tr:not([data-model])")
        async with page.expect_request(lambda r: "length_control=true" in r.url and "since=" in r.url):
            await page.fill("#board-category", "birds")
            await page.select_option("#board-window", "7")
            await page.check("#board-length")
        await page.wait_for_function(
            "() => document.querySelector('#board-summary').textContent.includes('length coefficient')"
        )
        assert await page.locator(rows).count() == 2
        await page.set_viewport_size({"width": 390, "height": 844})
        await page.screenshot(path=str(artifacts_dir / "ui-leaderboard-phone.png"), full_page=True)
        assert errors == []
        await context.close()


async def test_a_battle_reopened_stays_blind_and_the_daily_cap_shows_on_the_vote(
    nbus: Bus, tmp_path: Path, browser: Browser, demo_model_dir: Path, artifacts_dir: Path
) -> None:
    from identity.accounts import add_user, issue_key
    from services.api import ApiSettings

    await add_user(nbus.js, "ann")
    await set_password(nbus.js, "ann", PASSWORD, by="test")
    key = (await issue_key(nbus.js, "ann"))[1]
    settings = ApiSettings(default_model="demo", arena_daily_votes=1)
    async with (
        in_process_stack(nbus, tmp_path / "read.duckdb", demo_model_dir, settings) as (base, _),
        extra_worker(nbus, demo_model_dir, ALIASES[0]) as first,
        extra_worker(nbus, demo_model_dir, ALIASES[1]) as second,
        Client(base, key) as ann,
    ):
        secrets = [*ALIASES, first.settings.worker_id, second.settings.worker_id]
        await _pool(nbus, *ALIASES)
        await _battle(ann, nbus, "tie")  # today's one vote
        page = await browser.new_page()
        await log_in(page, base, "ann")
        await page.goto(f"{base}/#arena")
        await page.fill("#arena-prompt", "Owls or hawks?")
        await page.click("#arena-start")
        await page.wait_for_selector("#battle:not([hidden])")
        await page.wait_for_selector("#battle-vote button:enabled >> nth=3", timeout=120_000)

        # A reload finds the battle where it was: blind, as Model A and Model B, ready for the vote.
        await page.reload()
        await page.wait_for_selector("#battle-vote button:enabled >> nth=3", timeout=30_000)
        assert await page.locator(f"{COLUMNS} .head .speaker").all_inner_texts() == ["Model A", "Model B"]
        listed = await page.locator("#chat-list a").all_inner_texts()
        assert [t.split()[0] for t in listed] == ["Owls", "Quick"], listed  # battles listed, newest first
        assert await page.locator("#chat-list a[aria-current=true] .tag").inner_text() == "arena"
        await _blind_now(page, secrets)

        # The battle's category, given after the start (folded away until asked for).
        await page.click("#battle-tag summary")
        await page.fill("#battle-category", "raptors")
        await page.press("#battle-category", "Enter")
        await page.wait_for_selector("#battle-note:text-is('Category: raptors.')")
        tagged = await wait_event(nbus, f"chat.{page.url.split('chat=')[1]}.arena.tagged")
        assert (tagged.category, tagged.by) == ("raptors", "ann")

        # Over the cap: the API's 429 in its words; the battle stays unvoted and blind.
        await page.click("#battle-vote button[data-vote=tie]")
        await page.wait_for_function("() => document.querySelector('#battle-error').textContent.length > 0")
        assert "the cap is 1 a day" in await page.inner_text("#battle-error")
        assert await page.is_visible("#battle-vote") and await page.is_hidden("#battle-reveal")
        await _blind_now(page, secrets)
        await page.set_viewport_size({"width": 390, "height": 844})
        await page.screenshot(path=str(artifacts_dir / "ui-arena-phone.png"), full_page=True)
        await page.close()
