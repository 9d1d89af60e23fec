"""The Bots page in a real browser: create, edit, share, the store, export, import, delete."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from playwright.async_api import Browser, Page

from bus import Bus
from identity.sessions import set_password
from schemas.bot import BotCreated, BotDeleted, BotUpdated
from schemas.streams import BOTS
from tests.browserhelp import PASSWORD, axe, events_of, log_in, serious
from tests.stack import Client


async def _fill_bot(page: Page, **fields: str) -> None:
    for field, value in fields.items():
        selector = f"#bot-{field}"
        if field in ("model", "visibility"):
            await page.select_option(selector, value)
        else:
            await page.fill(selector, value)


def _card(scope: str, name: str) -> str:
    return f"#bots-{scope} .bot:has(.bot-name:text-is('{name}'))"


async def test_make_edit_share_export_import_and_delete_bots(
    stack: dict[str, str], nbus: Bus, browser: Browser, tmp_path: Path, artifacts_dir: Path
) -> None:
    for user in ("ann", "bob"):
        await set_password(nbus.js, user, PASSWORD, by="test")
    ann = await browser.new_page(viewport={"width": 1280, "height": 900})
    dialogs: list[str] = []
    ann.on("dialog", lambda d: (dialogs.append(d.message), asyncio.ensure_future(d.accept())))
    await log_in(ann, stack["base"], "ann")
    await ann.click("#open-bots")
    await ann.wait_for_selector("#bots-view:not([hidden])")
    await ann.wait_for_selector("#bots-mine li:text('You have no bot yet.')")

    # A public bot with every field of the form, then a private one shared with bob.
    await ann.click("#bot-new")
    await _fill_bot(
        ann, name="Zen Sage", model="demo", prompt="You speak in koans.", temperature="0.8",
        **{"max-tokens": "64"}, history="10", delay="1.5", description="calm", visibility="public",
    )  # fmt: skip
    await ann.click("#bot-save")
    await ann.wait_for_selector(_card("mine", "Zen Sage"))
    await ann.click("#bot-new")
    await _fill_bot(ann, name="Quiet Owl", model="demo", visibility="shared", shared="bob")
    await ann.click("#bot-save")
    await ann.wait_for_selector(_card("mine", "Quiet Owl"))
    assert await ann.is_visible(_card("store", "Zen Sage"))  # public: in the store too
    assert not await ann.is_visible(_card("store", "Quiet Owl"))

    made = [e for e in await events_of(nbus, BOTS.name, ["bot.>"]) if isinstance(e, BotCreated)]
    assert [e.spec.name for e in made] == ["Zen Sage", "Quiet Owl"]
    zen, owl = made
    assert (zen.spec.system_prompt, zen.spec.params.temperature, zen.spec.params.max_new_tokens) == (
        "You speak in koans.", 0.8, 64,
    )  # fmt: skip
    assert (zen.spec.history, zen.spec.delay_s, zen.spec.description, zen.visibility) == (
        10,
        1.5,
        "calm",
        "public",
    )
    assert (owl.owner_id, owl.visibility, owl.shared_with) == ("ann", "shared", ["bob"])

    # Edit: the form holds the bot as it is; a change keeps what the form does not show (top_p).
    await ann.click(f"{_card('mine', 'Zen Sage')} .edit-bot")
    assert await ann.input_value("#bot-prompt") == "You speak in koans."
    assert await ann.input_value("#bot-history") == "10"
    await _fill_bot(ann, temperature="0.3", description="calmer")
    await ann.click("#bot-save")
    await ann.wait_for_selector(f"{_card('mine', 'Zen Sage')} .about:text-is('calmer')")
    updates = [e for e in await events_of(nbus, BOTS.name, ["bot.>"]) if isinstance(e, BotUpdated)]
    assert len(updates) == 1 and updates[0].bot_id == zen.bot_id
    assert updates[0].spec.params.temperature == 0.3 and updates[0].spec.params.top_p == zen.spec.params.top_p
    assert updates[0].spec.system_prompt == "You speak in koans." and updates[0].visibility == "public"
    await ann.screenshot(path=str(artifacts_dir / "ui-bots-desktop.png"))

    # Bob: Quiet Owl is shared with him, Zen Sage is in the store; neither is his to edit.
    bob = await browser.new_page(viewport={"width": 390, "height": 844}, accept_downloads=True)
    await log_in(bob, stack["base"], "bob")
    await bob.goto(stack["base"] + "/#bots")
    await bob.wait_for_selector(_card("shared", "Quiet Owl"))
    await bob.wait_for_selector(_card("store", "Zen Sage"))
    assert "by ann" in await bob.inner_text(_card("store", "Zen Sage"))
    assert await bob.locator("#bots-view .edit-bot, #bots-view .delete-bot").count() == 0
    await bob.screenshot(path=str(artifacts_dir / "ui-bots-phone.png"))

    # Export downloads the bot as JSON; importing that file makes bob his own (private) copy.
    async with bob.expect_download() as download_info:
        await bob.click(f"{_card('store', 'Zen Sage')} .export-bot")
    saved = tmp_path / "zen.json"
    await (await download_info.value).save_as(saved)
    exported = json.loads(saved.read_text())
    assert exported["chatbus_bot"] == 1 and exported["name"] == "Zen Sage"
    assert exported["params"]["temperature"] == 0.3 and exported["history"] == 10
    await bob.set_input_files("#bot-import", str(saved))
    await bob.wait_for_selector(_card("mine", "Zen Sage"))
    assert "Imported 1 bot" in await bob.inner_text("#bots-note")
    copies = [e for e in await events_of(nbus, BOTS.name, ["bot.>"]) if isinstance(e, BotCreated)]
    assert copies[-1].owner_id == "bob" and copies[-1].spec == updates[0].spec

    # A file that is not a bot: a clear message, nothing made.
    await bob.set_input_files(
        "#bot-import", files=[{"name": "junk.json", "mimeType": "application/json", "buffer": b'{"name": 1}'}]
    )
    await bob.wait_for_function(
        "() => document.querySelector('#bots-error').textContent.includes('junk.json')"
    )
    await bob.set_input_files(
        "#bot-import", files=[{"name": "text.json", "mimeType": "application/json", "buffer": b"not json"}]
    )
    await bob.wait_for_function(
        "() => document.querySelector('#bots-error').textContent.includes('not JSON')"
    )
    assert len([e for e in await events_of(nbus, BOTS.name, ["bot.>"]) if isinstance(e, BotCreated)]) == 3

    # Ann deletes Quiet Owl: gone from her page and, on his next look, from bob's.
    await ann.click(f"{_card('mine', 'Quiet Owl')} .delete-bot")
    await ann.wait_for_selector(_card("mine", "Quiet Owl"), state="detached")
    assert any("Quiet Owl" in d for d in dialogs)
    deleted = [e for e in await events_of(nbus, BOTS.name, ["bot.>"]) if isinstance(e, BotDeleted)]
    assert [e.bot_id for e in deleted] == [owl.bot_id]
    await bob.reload()
    await bob.wait_for_selector(_card("mine", "Zen Sage"))
    assert await bob.locator(_card("shared", "Quiet Owl")).count() == 0
    async with Client(stack["base"], stack["bob"]) as as_bob:
        status, _ = await as_bob.call("GET", f"/v1/bots/{owl.bot_id}")
    assert status == 404


HOSTILE = "<img src=x onerror=alert(1)>"


async def test_a_private_bot_stays_private_hostile_text_is_inert_and_bad_input_is_shown(
    stack: dict[str, str], nbus: Bus, browser: Browser
) -> None:
    for user in ("ann", "bob"):
        await set_password(nbus.js, user, PASSWORD, by="test")
    async with Client(stack["base"], stack["ann"]) as as_ann:
        status, secret = await as_ann.call("POST", "/v1/bots", json={"name": "Secret", "model": "demo"})
        assert status == 201, secret
        hostile = {"name": HOSTILE, "model": "demo", "description": "<script>alert(2)</script>"}
        status, made = await as_ann.call("POST", "/v1/bots", json={**hostile, "visibility": "public"})
        assert status == 201, made
    bob = await browser.new_page()
    dialogs: list[str] = []
    bob.on("dialog", lambda d: (dialogs.append(d.message), asyncio.ensure_future(d.dismiss())))
    await log_in(bob, stack["base"], "bob")
    await bob.goto(stack["base"] + "/#bots")
    await bob.wait_for_selector("#bots-store .bot")
    assert "Secret" not in await bob.inner_text("#bots-view")
    assert await bob.inner_text("#bots-store .bot-name") == HOSTILE  # shown as text
    assert await bob.inner_text("#bots-store .about") == hostile["description"]
    await bob.click("#open-new")
    await bob.check("#new-form input[value=party]")
    await bob.wait_for_selector("#new-bots label")
    assert HOSTILE in await bob.inner_text("#new-bots")
    assert await bob.locator("img, #bots-view script, #new-view script").count() == 0
    assert dialogs == []
    await bob.goto(stack["base"] + "/#bots")
    # A name with an "@" cannot be @mentioned: refused with the API's message, nothing made.
    await bob.click("#bot-new")
    await _fill_bot(bob, name="@bad", model="demo")
    await bob.click("#bot-save")
    await bob.wait_for_function("() => document.querySelector('#bots-error').textContent.length > 0")
    assert not await bob.is_hidden("#bot-form")  # still open to fix
    made = [e for e in await events_of(nbus, BOTS.name, ["bot.>"]) if isinstance(e, BotCreated)]
    assert [e.spec.name for e in made] == ["Secret", HOSTILE]


async def test_the_bots_and_new_chat_pages_have_no_serious_accessibility_issue(
    stack: dict[str, str], nbus: Bus, browser: Browser
) -> None:
    await set_password(nbus.js, "ann", PASSWORD, by="test")
    async with Client(stack["base"], stack["ann"]) as as_ann:
        await as_ann.call(
            "POST", "/v1/bots", json={"name": "Zen Sage", "model": "demo", "visibility": "public"}
        )
    for viewport in ({"width": 1280, "height": 800}, {"width": 390, "height": 844}):
        context = await browser.new_context(viewport=viewport, bypass_csp=True)  # to inject axe only
        page = await context.new_page()
        await log_in(page, stack["base"], "ann")
        await page.click("#open-bots")
        await page.wait_for_selector(_card("mine", "Zen Sage"))
        await page.click("#bot-new")
        assert not serious(found := await axe(page)), found
        await page.click("#open-new")
        await page.wait_for_selector("#new-view:not([hidden])")
        await page.check("#new-form input[value=party]")
        await page.wait_for_selector("#new-bots input[type=checkbox]")
        assert not serious(found := await axe(page)), found
        await context.close()
