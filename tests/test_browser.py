"""The web UI in a real browser (Debian's Chromium driven by Playwright) against the in-process stack."""

from __future__ import annotations

import asyncio
from pathlib import Path

from playwright.async_api import Browser, Page

import bus
import schemas
from bus import Bus
from identity.sessions import set_password
from schemas.chat import ReplyCompleted, ReplyRequested
from schemas.ids import new_id
from tests.browserhelp import PASSWORD, axe, log_in
from tests.stack import Client


async def _assistant_text(page: Page) -> str:
    return await page.inner_text("#messages .msg.assistant .body")


async def test_log_in_chat_stream_reload_and_finish_once(
    stack: dict[str, str],
    nbus: Bus,
    browser: Browser,
    artifacts_dir: Path,
) -> None:
    await set_password(nbus.js, "ann", PASSWORD, by="test")
    page = await browser.new_page(viewport={"width": 1280, "height": 800})
    await log_in(page, stack["base"], "ann")
    await page.wait_for_selector("#model-picker option[value=demo]", state="attached")
    await page.click("#new-chat")
    await page.wait_for_selector("#composer:not([hidden])")
    await page.wait_for_selector("#chat-list a[aria-current=true]")  # the new chat is listed and current
    await page.fill("#composer-text", "Hello there")
    await page.press("#composer-text", "Enter")
    await page.wait_for_selector("#messages .msg.user")
    assert await page.inner_text("#messages .msg.user .body") == "Hello there"
    await page.wait_for_selector("#messages .msg.assistant[data-status]", timeout=60_000)
    first_reply = await page.get_attribute("#messages .msg.assistant", "id")

    # Regenerate: a second version with branch arrows; go back to the first; rate it.
    await page.click("#messages .msg.assistant .regenerate")
    await page.wait_for_function(
        "() => document.querySelector('#messages .msg.assistant .branch-position')?.textContent === '2/2'"
    )
    await page.wait_for_selector("#messages .msg.assistant[data-status]", timeout=60_000)
    await page.click("#messages .msg.assistant [aria-label='Previous version']")
    await page.wait_for_selector(f"#{first_reply} .branch-position:text('1/2')")
    await page.click(f"#{first_reply} .rate-up")
    await page.wait_for_selector(f"#{first_reply} .rate-up[aria-pressed=true]")
    await page.screenshot(path=str(artifacts_dir / "ui-chat-desktop.png"))

    # A long reply: tokens arrive before it completes, and a reload mid-reply picks it up again.
    chat_id = page.url.split("chat=")[1]
    async with Client(stack["base"], stack["ann"]) as ann:
        status, posted = await ann.call(
            "POST",
            f"/v1/chats/{chat_id}/messages",
            json={"content": "Go on", "params": {"max_new_tokens": 1500, "ignore_eos": True}},
        )
    assert status == 202
    streaming = f"#node-{posted['reply_id']}.streaming .body"
    await page.wait_for_function(
        "sel => (document.querySelector(sel)?.textContent || '').length > 20", arg=streaming, timeout=30_000
    )
    assert await page.get_attribute(f"#node-{posted['reply_id']}", "data-status") is None  # not ended yet
    await page.reload()
    await page.wait_for_selector(f"#node-{posted['reply_id']}", timeout=30_000)
    await page.wait_for_selector(f"#node-{posted['reply_id']}[data-status=length]", timeout=120_000)
    assert await page.locator(f"#node-{posted['reply_id']}").count() == 1  # finished exactly once
    end = await bus.last_msg(nbus.js, "CHAT", f"chat.{chat_id}.reply.{posted['reply_id']}.completed")
    assert end is not None
    event = schemas.decode_event(end.data)
    assert isinstance(event, ReplyCompleted) and event.completion_tokens == 1500
    assert await page.locator("#messages .msg.assistant").count() == 2

    phone = await browser.new_page(viewport={"width": 390, "height": 844})
    await log_in(phone, stack["base"], "ann")
    await phone.goto(f"{stack['base']}/#chat={chat_id}")
    await phone.wait_for_selector("#messages .msg.assistant[data-status]")
    await phone.screenshot(path=str(artifacts_dir / "ui-chat-phone.png"))


async def test_hostile_text_renders_inert_and_strangers_see_nothing(
    stack: dict[str, str],
    nbus: Bus,
    browser: Browser,
) -> None:
    for user in ("ann", "bob"):
        await set_password(nbus.js, user, PASSWORD, by="test")
    async with Client(stack["base"], stack["ann"]) as ann:
        _, chat = await ann.call("POST", "/v1/chats", json={"title": "hostile", "model": "demo"})
    chat_id = chat["chat_id"]
    hostile = (
        "<img src=x onerror=alert(1)> <script>alert(2)</script> [click me](javascript:alert(3)) "
        '![tracker](http://tracker.invalid/pixel.png) <a href="javascript:alert(4)">raw</a>'
    )
    await _a_reply(nbus, chat_id, hostile)
    page = await browser.new_page()
    dialogs: list[str] = []
    requests: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), asyncio.ensure_future(d.dismiss())))
    page.on("request", lambda r: requests.append(r.url))
    await log_in(page, stack["base"], "ann")
    await page.goto(f"{stack['base']}/#chat={chat_id}")
    await page.reload()
    await page.wait_for_selector("#messages .msg.assistant[data-status]")
    await page.wait_for_timeout(500)
    assert dialogs == []
    assert not [u for u in requests if "tracker.invalid" in u or u.endswith("/x")]
    body = page.locator("#messages .msg.assistant .body")
    assert await body.locator("img, script").count() == 0
    for href in await body.locator("a").evaluate_all("links => links.map(a => a.getAttribute('href'))"):
        assert href is None or not href.lower().startswith("javascript")
    typed = "<img src=x onerror=alert(5)> [go](javascript:alert(6))"
    await page.fill("#composer-text", typed)  # the same from the user's side: shown as text
    await page.press("#composer-text", "Enter")
    await page.wait_for_selector("#messages .msg.user")
    assert await page.inner_text("#messages .msg.user .body") == typed
    assert await page.locator("#messages .msg.user .body img, #messages .msg.user .body a").count() == 0
    await page.wait_for_timeout(300)
    assert dialogs == [] and not [u for u in requests if u.endswith("/x")]
    csp = (await page.request.get(stack["base"] + "/")).headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp

    stranger = await browser.new_page()
    await log_in(stranger, stack["base"], "bob")
    await stranger.goto(f"{stack['base']}/#chat={chat_id}")
    await stranger.wait_for_timeout(1000)
    assert await stranger.locator("#messages .msg").count() == 0
    assert "hostile" not in await stranger.inner_text("body")
    assert "not yours" in await stranger.inner_text("#chat-error")


async def _a_reply(nbus: Bus, chat_id: str, text: str) -> None:
    """A completed reply with `text`, as a worker would have written it."""
    at = schemas.now()
    request = ReplyRequested(
        event_id=new_id("e"), chat_id=chat_id, at=at, reply_id=new_id("r"), message_id="m-none",
        model="demo", requested_by="ann", imported=True,
    )  # fmt: skip
    done = ReplyCompleted(
        event_id=new_id("e"), chat_id=chat_id, at=at, reply_id=request.reply_id, attempt=1, worker_id="w",
        model="demo", text=text, prompt_tokens=1, completion_tokens=1, finish_reason="stop",
    )  # fmt: skip
    for event in (request, done):
        await bus.append_event(nbus.js, event)


CODE_REPLY = (
    "Some code:\n\n```python\nimport os  # a comment\n@decorator\ndef f(xs: list[int]) -> bool:\n"
    f"    return print(len(xs), 'a string', 42, True, None, os.sep, '{'x' * 300}')\n```\n\n"
    "```diff\n- removed\n+ added\n```\n\n```ini\n[section]\nkey = value\n```\n\n"
    '```html\n<a href="x">link</a>\n```\n'
)


async def test_the_main_views_have_no_critical_accessibility_issue(
    stack: dict[str, str],
    nbus: Bus,
    browser: Browser,
) -> None:
    await set_password(nbus.js, "ann", PASSWORD, by="test")
    views = (({"width": 1280, "height": 800}, "light"), ({"width": 390, "height": 844}, "dark"))
    for viewport, scheme in views:
        context = await browser.new_context(
            viewport=viewport,
            color_scheme=scheme,
            bypass_csp=True,  # bypass: to inject axe only
        )
        page = await context.new_page()
        await page.goto(stack["base"] + "/")
        await page.wait_for_selector("#login-view:not([hidden])")
        login = await axe(page)
        await log_in(page, stack["base"], "ann")
        await page.click("#new-chat")
        await page.wait_for_selector("#composer:not([hidden])")
        # A reply with highlighted code (every token colour, a line too long): readable, keyboard-scrollable.
        await _a_reply(nbus, page.url.split("chat=")[1], CODE_REPLY)
        await page.wait_for_selector("#messages .msg.assistant[data-status] pre code.hljs")
        chat = await axe(page)
        pages = [login, chat]
        arena_pages = (("#open-arena", "#arena-view:not([hidden])"), ("#open-leaderboard", "#board-rows tr"))
        for link, drawn in arena_pages:  # the leaderboard without votes: a row that says so
            await page.click(link)
            await page.wait_for_selector(drawn)
            pages.append(await axe(page))
        for found in pages:
            assert not [v for v in found if v["impact"] in ("critical", "serious")], found
        assert not [v for v in chat if v["id"] in ("landmark-one-main", "page-has-heading-one")], chat
        # The checker itself works: a button without a name is caught.
        await page.evaluate("document.body.append(document.createElement('button'))")
        assert "button-name" in {v["id"] for v in await axe(page)}
        await context.close()


async def test_edit_two_tabs_mid_reply_and_the_admin_events_view(
    stack: dict[str, str],
    nbus: Bus,
    browser: Browser,
) -> None:
    from identity.accounts import add_user

    await add_user(nbus.js, "root", role="admin")
    for user in ("ann", "root"):
        await set_password(nbus.js, user, PASSWORD, by="test")
    page = await browser.new_page()
    page.on("dialog", lambda d: asyncio.ensure_future(d.accept("second try")))
    await log_in(page, stack["base"], "ann")
    await page.click("#new-chat")
    await page.fill("#composer-text", "first try")
    await page.press("#composer-text", "Enter")
    await page.wait_for_selector("#messages .msg.assistant[data-status]", timeout=60_000)
    await page.click("#messages .msg.user .edit")  # the prompt answers "second try"
    await page.wait_for_selector("#messages .msg.user .branch-position:text('2/2')")
    assert await page.inner_text("#messages .msg.user .body") == "second try"
    chat_id = page.url.split("chat=")[1]

    # A second tab mid-reply: both follow the same reply to its one end.
    other = await browser.new_page()
    await log_in(other, stack["base"], "ann")
    await other.goto(f"{stack['base']}/#chat={chat_id}")
    await other.wait_for_selector("#messages .msg.user")
    async with Client(stack["base"], stack["ann"]) as ann:
        _, posted = await ann.call(
            "POST",
            f"/v1/chats/{chat_id}/messages",
            json={"content": "long", "params": {"max_new_tokens": 800, "ignore_eos": True}},
        )
    node = f"#node-{posted['reply_id']}"
    await other.wait_for_function(
        "sel => (document.querySelector(sel)?.textContent || '').length > 20",
        arg=node + " .body",
        timeout=30_000,
    )
    for tab in (page, other):
        await tab.wait_for_selector(f"{node}[data-status=length]", timeout=120_000)
        assert await tab.locator(node).count() == 1
    assert await page.inner_text(node + " .body") == await other.inner_text(node + " .body")

    # An admin's events view: the chat's live events, decoded.
    admin = await browser.new_page()
    await log_in(admin, stack["base"], "root")
    await admin.goto(f"{stack['base']}/#chat={chat_id}")
    await admin.wait_for_selector("#events-toggle:not([hidden])")
    await admin.click("#events-toggle")
    await admin.wait_for_selector("#events:not([hidden])")
    await admin.wait_for_function(
        "() => document.querySelector('#events').textContent.includes('chat.reply.completed')"
    )
    assert "chat.created" in await admin.inner_text("#events")
    assert await page.locator("#events-toggle").is_hidden()  # not for users


async def test_attach_an_image_with_a_preview_and_see_it_in_the_chat(
    stack: dict[str, str],
    nbus: Bus,
    browser: Browser,
) -> None:
    import io

    from PIL import Image

    await set_password(nbus.js, "ann", PASSWORD, by="test")
    png = io.BytesIO()
    Image.new("RGB", (40, 30), (200, 30, 30)).save(png, "PNG")
    page = await browser.new_page()
    await log_in(page, stack["base"], "ann")
    await page.click("#new-chat")
    await page.set_input_files(
        "#attach", files=[{"name": "red.png", "mimeType": "image/png", "buffer": png.getvalue()}]
    )
    await page.wait_for_selector("#previews img")
    await page.fill("#composer-text", "see this")
    await page.press("#composer-text", "Enter")
    await page.wait_for_selector("#messages .msg.user .pictures img")
    await page.wait_for_function(
        "() => document.querySelector('#messages .msg.user .pictures img').naturalWidth === 40"
    )  # loaded from /v1/images/{sha256} with the session cookie
    assert await page.locator("#previews img").count() == 0  # cleared after sending
    await page.wait_for_selector("#messages .msg.assistant[data-status]", timeout=60_000)
