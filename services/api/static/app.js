// chatbus web UI: log in, chats, a composer, replies streaming over the chat's WebSocket.
// Every model or user text becomes HTML only through marked + DOMPurify; the CSP forbids inline script.
"use strict";

const state = { csrf: sessionStorage.getItem("chatbus.csrf") || "", chat: null, ws: null, replies: new Map(), chats: [] };
const $ = (id) => document.getElementById(id);

async function api(method, path, body, extra = {}) {
  const headers = { "Content-Type": "application/json", ...extra };
  if (method !== "GET") headers["X-CSRF-Token"] = state.csrf;
  const resp = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const data = await resp.json().catch(() => ({}));
  if (!resp.ok) throw Object.assign(new Error(data.message || resp.statusText), { status: resp.status, data });
  return data;
}

// ---------------------------------------------------------------- safe rendering

const PURIFY = { FORBID_TAGS: ["img", "style", "form", "input", "iframe", "object", "embed", "svg", "math"], ALLOW_DATA_ATTR: false };
DOMPurify.addHook("afterSanitizeAttributes", (node) => {
  if (node.tagName === "A") {
    const href = node.getAttribute("href") || "";
    if (!/^(https?:|mailto:|#)/i.test(href)) node.removeAttribute("href");
    node.setAttribute("rel", "noopener noreferrer nofollow");
    node.setAttribute("target", "_blank");
  }
});

function renderMarkdown(el, text) {
  el.innerHTML = DOMPurify.sanitize(marked.parse(text, { gfm: true, breaks: false }), PURIFY);
  el.querySelectorAll("pre code").forEach((block) => hljs.highlightElement(block));
  // A code block scrolls sideways: keyboard users must be able to reach it to scroll it.
  el.querySelectorAll("pre").forEach((pre) => { pre.tabIndex = 0; });
}

// ---------------------------------------------------------------- views

function show(view) {
  $("login-view").hidden = view !== "login";
  $("app-view").hidden = view !== "app";
}

async function start() {
  try {
    const me = await api("GET", "/v1/me");
    if (me.csrf_token) {
      state.csrf = me.csrf_token; // a new tab of the same session
      sessionStorage.setItem("chatbus.csrf", state.csrf);
    }
    $("whoami").textContent = me.user_id;
    state.me = me.user_id;
    state.admin = me.role === "admin";
    show("app");
    await Promise.all([loadModels(), loadChats()]);
    await route();
  } catch (err) {
    show("login");
  }
}

$("login-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  $("login-error").textContent = "";
  try {
    const answer = await api("POST", "/v1/login", { user: $("login-user").value, password: $("login-password").value });
    state.csrf = answer.csrf_token;
    sessionStorage.setItem("chatbus.csrf", state.csrf);
    await start();
  } catch (err) {
    $("login-error").textContent = err.message;
  }
});

$("logout").addEventListener("click", async () => {
  await api("POST", "/v1/logout").catch(() => {});
  sessionStorage.removeItem("chatbus.csrf");
  location.hash = "";
  location.reload();
});

async function loadModels() {
  const { data: models } = await api("GET", "/v1/models");
  state.models = models;
  drawModelPicker();
}

function drawModelPicker() {
  const picker = $("model-picker");
  const wanted = picker.value;
  picker.replaceChildren(...(state.models || []).map((m) => new Option(`${m.id}${m.images ? " (images)" : ""}`, m.id)));
  if (wanted) picker.value = wanted;
}

// The main area shows one page: a chat (#chat=ID), the new-chat form (#new), the bots (#bots), the
// arena (#arena) or its leaderboard (#leaderboard).
const PAGES = { new: "new-view", bots: "bots-view", arena: "arena-view", leaderboard: "leaderboard-view" };

async function route() {
  const hash = location.hash.slice(1);
  const page = PAGES[hash] || "chat-view";
  for (const id of ["chat-view", ...Object.values(PAGES)]) $(id).hidden = id !== page;
  if (page !== "chat-view") {
    closeFeed();
    state.chat = state.battle = null;
    drawChatList();
  }
  blindfold(); // before a page draws: the arena page names no model
  if (hash === "new") await showNewChat();
  else if (hash === "bots") await showBots();
  else if (hash === "arena") showArena();
  else if (hash === "leaderboard") await showLeaderboard();
  else {
    const wanted = new URLSearchParams(hash).get("chat");
    if (wanted && (!state.chat || state.chat.chat_id !== wanted)) await openChat(wanted);
  }
}

// The list holds chats made here and arena battles (newest first), not those of the OpenAI front door.
async function loadChats(minSeq = 0) {
  const [chats, battles] = await Promise.all(
    ["chat", "arena"].map((origin) =>
      api("GET", `/v1/chats?limit=100&min_seq=${minSeq}&origin=${origin}`).then((page) => page.items, () => []),
    ),
  );
  const newest = (a, b) => Date.parse(b.updated_at) - Date.parse(a.updated_at);
  state.chats = [...chats, ...battles].sort(newest).slice(0, 100);
  drawChatList();
}

function drawChatList() {
  const needle = $("chat-search").value.trim().toLowerCase();
  const list = $("chat-list");
  list.replaceChildren();
  for (const chat of state.chats) {
    if (needle && !chat.title.toLowerCase().includes(needle)) continue;
    const link = document.createElement("a");
    link.href = `#chat=${chat.chat_id}`;
    link.textContent = chat.title;
    if (chat.origin === "arena") link.append(" ", Object.assign(document.createElement("span"), { className: "tag small", textContent: "arena" }));
    link.dataset.chat = chat.chat_id;
    if (state.chat && state.chat.chat_id === chat.chat_id) link.setAttribute("aria-current", "true");
    const item = document.createElement("li");
    item.append(link);
    list.append(item);
  }
}

$("chat-search").addEventListener("input", drawChatList);
$("chat-list").addEventListener("click", (event) => {
  const link = event.target.closest("a[data-chat]");
  if (!link) return;
  event.preventDefault();
  if (location.hash === `#chat=${link.dataset.chat}`) openChat(link.dataset.chat);
  else location.hash = `chat=${link.dataset.chat}`; // route() opens it
});

$("new-chat").addEventListener("click", async () => {
  const chat = await api("POST", "/v1/chats", { title: "New chat", model: $("model-picker").value || undefined });
  await loadChats(chat.seq); // read our own write
  location.hash = `chat=${chat.chat_id}`;
  await openChat(chat.chat_id);
  $("composer-text").focus();
});

$("rename-chat").addEventListener("click", async () => {
  const title = prompt("New title", state.chat.title);
  if (!title) return;
  const done = await api("PATCH", `/v1/chats/${state.chat.chat_id}`, { title });
  state.chat.title = title;
  $("chat-title").textContent = title;
  await loadChats(done.seq);
});

$("delete-chat").addEventListener("click", async () => {
  if (!confirm(`Delete "${state.chat.title}"?`)) return;
  const done = await api("DELETE", `/v1/chats/${state.chat.chat_id}`);
  closeFeed();
  state.chat = null;
  location.hash = "";
  $("messages").replaceChildren();
  $("composer").hidden = true;
  await loadChats(done.seq);
});

// ---------------------------------------------------------------- one chat, live

function closeFeed() {
  if (state.ws) {
    state.ws.onclose = null;
    state.ws.close();
    state.ws = null;
  }
}

async function openChat(chatId) {
  closeFeed();
  $("chat-error").textContent = "";
  let chat;
  try {
    chat = await api("GET", `/v1/chats/${chatId}`);
  } catch (err) {
    state.chat = state.battle = null;
    $("messages").replaceChildren();
    $("composer").hidden = true;
    drawParty();
    drawBattle();
    $("chat-title").textContent = "Chat not found";
    $("chat-error").textContent = err.status === 404 ? "There is no such chat, or it is not yours." : err.message;
    return;
  }
  state.chat = chat;
  state.replies = new Map();
  state.position = { chat: 0, tokens: 0 };
  state.wantSeq = state.wantChatSeq = 0;
  state.turns = state.speaking = null;
  state.floorEdited = false;
  state.battle = isMyBattle(chat) ? newBattle() : null; // its frames tell the vote and the side continued
  $("chat-title").textContent = chat.title;
  $("rename-chat").hidden = $("delete-chat").hidden = false;
  $("events-toggle").hidden = !state.admin;
  $("events").replaceChildren();
  $("composer").hidden = false;
  $("composer-text").placeholder = "";
  $("messages").replaceChildren();
  drawChatList();
  drawParty();
  drawBattle();
  blindfold();
  connect();
}

function connect() {
  closeFeed(); // one feed at a time, even when two opens of a chat raced
  const chatId = state.chat.chat_id;
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const query = `after_chat_seq=${state.position.chat}&after_token_seq=${state.position.tokens}`;
  const ws = new WebSocket(`${scheme}://${location.host}/v1/chats/${chatId}/ws?${query}`);
  state.ws = ws;
  ws.onmessage = (message) => {
    const frame = JSON.parse(message.data);
    if (frame.kind === "tokens") state.position.tokens = frame.seq;
    else state.position.chat = frame.seq;
    apply(frame);
  };
  ws.onclose = () => {
    if (state.ws === ws && state.chat && state.chat.chat_id === chatId) setTimeout(connect, 1000); // resume where we were
  };
}

// The chat is drawn from the read model's active path (GET …/messages); live frames update the
// streaming reply in place and ask for a fresh path when the tree changes.

let refreshing = null;

function refresh(minSeq) {
  state.wantSeq = Math.max(state.wantSeq || 0, minSeq);
  if (refreshing) return;
  refreshing = (async () => {
    try {
      while (state.chat) {
        const seq = state.wantSeq;
        const chatId = state.chat.chat_id;
        const listed = await listMessages(chatId, seq);
        if (!state.chat || state.chat.chat_id !== chatId) return;
        draw(listed);
        if (state.wantSeq === seq) return;
      }
    } catch (err) {
      // the read model is catching up or busy (503): ask again shortly, whether or not a frame comes
      if (err.status === 503) setTimeout(() => refresh(state.wantSeq || 0), 1000);
    } finally {
      refreshing = null;
    }
  })();
}

// A long chat comes in pages (stream order): their rows and their parts of the active path joined.
async function listMessages(chatId, seq) {
  const whole = { messages: [], replies: [], active_path: [], ratings: [] };
  let cursor = null;
  do {
    const page = await api("GET", `/v1/chats/${chatId}/messages?min_seq=${seq}${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ""}`);
    for (const key of Object.keys(whole)) whole[key].push(...page[key]);
    cursor = page.next_cursor;
  } while (cursor);
  return whole;
}

function draw(listed) {
  const messages = new Map(listed.messages.map((m) => [m.message_id, m]));
  const replies = new Map(listed.replies.map((r) => [r.reply_id, r]));
  const ratings = new Map(listed.ratings.map((r) => [r.reply_id, r.rating]));
  const list = $("messages");
  const following = atEnd(list);
  const keep = new Set();
  const streaming = [];
  let botTurns = 0;
  let inARow = 0;
  let answers = []; // the last message's answers (a battle's two sides)
  for (const node of listed.active_path) {
    if (node.kind === "reply") {
      botTurns += 1;
      inARow += 1;
    } else inARow = 0;
    answers = node.kind === "reply" ? node.siblings.map((id) => replies.get(id)).filter(Boolean) : [];
    if (node.kind === "reply" && isCompare()) {
      const group = drawGroup(node, replies, ratings);
      keep.add(group.id);
      list.append(group);
      streaming.push(...node.siblings.filter((id) => isOpen(replies.get(id))));
      continue;
    }
    keep.add(`node-${node.node_id}`);
    const el = bubble(node.node_id, node.kind === "message" ? "user" : "assistant");
    list.append(el); // in path order
    const body = el.querySelector(".body");
    const meta = el.querySelector(".meta");
    meta.replaceChildren();
    if (node.kind === "message") {
      const m = messages.get(node.node_id);
      body.textContent = m.content; // user text is shown as text, never as HTML
      drawPictures(el, m.images);
      if (isParty()) meta.append(speakerTag(m.speaker_name || m.author_name || m.author_id, m.speaker), " ");
      if (!inBattle()) meta.append(editButton(m)); // a battle is not edited, regenerated or branched
    } else {
      const r = replies.get(node.node_id);
      if (isParty()) meta.append(speakerTag(r.speaker_name || r.model, r.speaker), " ");
      drawReply(el, r, ratings.get(r.reply_id));
      if (isOpen(r)) streaming.push(r.reply_id);
    }
    if (node.siblings.length > 1 && !inBattle()) meta.append(switcher(node));
  }
  for (const el of [...list.children]) if (!keep.has(el.id)) el.remove();
  if (following) list.scrollTop = list.scrollHeight;
  setStreaming(streaming);
  state.speaking = streaming.map((id) => replies.get(id)?.speaker_name).filter(Boolean).join(", ");
  drawFloorStatus({ botTurns, inARow });
  drawBattle(answers);
}

// A reader at the end of the chat follows new turns; one who scrolled up to read stays put.
const atEnd = (list) => list.scrollHeight - list.scrollTop - list.clientHeight < 48;

const isOpen = (r) => Boolean(r) && (r.status === "requested" || r.status === "started");

function drawReply(el, r, rating) {
  const body = el.querySelector(".body");
  const meta = el.querySelector(".meta");
  const done = r.status === "completed" || r.status === "cancelled" || r.status === "failed";
  el.classList.toggle("streaming", !done);
  if (!done) {
    const live = state.replies.get(r.reply_id);
    body.textContent = live ? live.text : "";
    meta.append(`${r.model} · ${live ? "streaming…" : "waiting"} `);
    return;
  }
  if (el.dataset.status !== (r.status === "failed" ? "failed" : r.finish_reason)) {
    el.dataset.status = r.status === "failed" ? "failed" : r.finish_reason;
    if (r.status === "failed") body.textContent = `failed: ${r.error}`;
    else renderMarkdown(body, r.text);
  }
  el.title = `${r.prompt_tokens} prompt + ${r.completion_tokens} completion tokens; first token ${Math.round(r.first_token_ms)} ms, total ${Math.round(r.generation_ms)} ms`;
  meta.append(`${r.model} · ${r.completion_tokens} tokens `);
  for (const [value, label] of [["up", "▲"], ["down", "▼"]]) {
    const button = document.createElement("button");
    button.type = "button";
    button.className = `rate rate-${value}`;
    button.textContent = label;
    button.setAttribute("aria-label", value === "up" ? "Good reply" : "Bad reply");
    button.setAttribute("aria-pressed", String(rating === value));
    button.addEventListener("click", async () => {
      const next = rating === value ? null : value;
      const done = await api("PUT", `/v1/chats/${state.chat.chat_id}/replies/${r.reply_id}/feedback`, { rating: next });
      refresh(done.seq);
    });
    meta.append(button, " ");
  }
  if (inBattle()) return;
  const again = document.createElement("button");
  again.type = "button";
  again.className = "regenerate";
  again.textContent = "Regenerate";
  again.addEventListener("click", async () => {
    const answer = await api("POST", `/v1/chats/${state.chat.chat_id}/replies/${r.reply_id}/regenerate`, {});
    refresh(answer.seq);
  });
  meta.append(again);
}

function drawPictures(el, hashes) {
  let box = el.querySelector(".pictures");
  if (!hashes.length) {
    if (box) box.remove();
    return;
  }
  if (box && box.dataset.hashes === hashes.join(",")) return;
  if (!box) {
    box = document.createElement("div");
    box.className = "pictures";
    el.prepend(box);
  }
  box.dataset.hashes = hashes.join(",");
  box.replaceChildren(
    ...hashes
      .filter((sha) => /^[0-9a-f]{64}$/.test(sha))
      .map((sha) => Object.assign(document.createElement("img"), { src: `/v1/images/${sha}`, alt: "attached image" })),
  );
}

// ---------------------------------------------------------------- images to send (attach or paste)

state.pending = [];

function addPending(files) {
  for (const file of files) {
    if (!file.type.startsWith("image/")) continue;
    const url = URL.createObjectURL(file);
    const figure = document.createElement("figure");
    const img = Object.assign(document.createElement("img"), { src: url, alt: `to send: ${file.name || "pasted image"}` });
    const remove = Object.assign(document.createElement("button"), { type: "button", textContent: "Remove" });
    const item = { file, url, figure };
    remove.addEventListener("click", () => {
      state.pending = state.pending.filter((p) => p !== item);
      URL.revokeObjectURL(url);
      figure.remove();
    });
    figure.append(img, remove);
    $("previews").append(figure);
    state.pending.push(item);
  }
}

$("attach").addEventListener("change", (event) => {
  addPending([...event.target.files]);
  event.target.value = "";
});
$("composer-text").addEventListener("paste", (event) => {
  const files = [...(event.clipboardData?.files || [])];
  if (files.length) {
    event.preventDefault();
    addPending(files);
  }
});

async function uploadPending() {
  const hashes = [];
  for (const item of state.pending) {
    const resp = await fetch("/v1/images", {
      method: "POST",
      headers: { "Content-Type": item.file.type, "X-CSRF-Token": state.csrf },
      body: item.file,
    });
    const data = await resp.json();
    if (!resp.ok) throw new Error(`${item.file.name || "image"}: ${data.message}`);
    hashes.push(data.sha256);
  }
  return hashes;
}

function clearPending() {
  for (const item of state.pending) URL.revokeObjectURL(item.url);
  state.pending = [];
  $("previews").replaceChildren();
}

function editButton(m) {
  const button = document.createElement("button");
  button.type = "button";
  button.className = "edit";
  button.textContent = "Edit";
  button.addEventListener("click", async () => {
    const text = prompt("Edit your message (a new version; the old one stays)", m.content);
    if (!text || !text.trim() || text === m.content) return;
    const answer = await api("POST", `/v1/chats/${state.chat.chat_id}/messages/${m.message_id}/edit`, { content: text });
    refresh(answer.seq);
  });
  return button;
}

function switcher(node) {
  const at = node.siblings.indexOf(node.node_id);
  const box = document.createElement("span");
  box.className = "branches";
  const go = (offset, label, name) => {
    const button = document.createElement("button");
    button.type = "button";
    button.textContent = label;
    button.setAttribute("aria-label", name);
    button.disabled = at + offset < 0 || at + offset >= node.siblings.length;
    button.addEventListener("click", async () => {
      const done = await api("POST", `/v1/chats/${state.chat.chat_id}/branch`, { node_id: node.siblings[at + offset] });
      refresh(done.seq);
    });
    return button;
  };
  const where = document.createElement("span");
  where.className = "branch-position";
  where.textContent = `${at + 1}/${node.siblings.length}`;
  box.append(go(-1, "‹", "Previous version"), where, go(1, "›", "Next version"));
  return box;
}

function bubble(id, role) {
  let el = document.getElementById(`node-${id}`);
  if (el && el.classList.contains("column")) {
    el.remove(); // a side-by-side column before (a battle continued with one side): a bubble now
    el = null;
  }
  if (!el) {
    el = document.createElement("li");
    el.id = `node-${id}`;
    el.className = `msg ${role}`;
    const body = document.createElement("div");
    body.className = "body";
    const meta = document.createElement("div");
    meta.className = "meta";
    el.append(body, meta);
    $("messages").append(el);
  }
  return el;
}

function logEvent(frame) {
  const events = $("events");
  if (!state.admin) return;
  const line = document.createElement("div");
  line.textContent = `${frame.kind} #${frame.seq} ${JSON.stringify(frame.event)}`;
  events.append(line);
  if (events.childElementCount > 500) events.firstElementChild.remove();
}

$("events-toggle").addEventListener("click", () => {
  const open = $("events").hidden;
  $("events").hidden = !open;
  $("events-toggle").setAttribute("aria-pressed", String(open));
});

function apply(frame) {
  logEvent(frame);
  const event = frame.event;
  if (frame.kind === "tokens") {
    const reply = state.replies.get(event.reply_id) || { attempt: 0, text: "" };
    if (event.attempt > reply.attempt) Object.assign(reply, { attempt: event.attempt, text: "" }); // a retry replaces
    if (event.attempt < reply.attempt) return;
    reply.text += event.text;
    state.replies.set(event.reply_id, reply);
    const el = document.getElementById(`node-${event.reply_id}`);
    if (el && el.classList.contains("streaming")) {
      const following = atEnd($("messages"));
      el.querySelector(".body").textContent = reply.text;
      if (following) $("messages").scrollTop = $("messages").scrollHeight;
    }
    return;
  }
  if (event.type === "chat.renamed") $("chat-title").textContent = event.title;
  partyEvent(frame);
  battleEvent(frame);
  refresh(frame.seq); // the tree, a status or a rating changed: draw the active path again
}

function setStreaming(replyIds) {
  state.streaming = replyIds; // side by side: several at once
  $("stop").hidden = !replyIds.length;
}

$("stop").addEventListener("click", async () => {
  const chatId = state.chat.chat_id;
  await Promise.all(state.streaming.map((id) => api("POST", `/v1/chats/${chatId}/replies/${id}/cancel`).catch(() => {})));
});

$("composer-text").addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey) {
    event.preventDefault();
    $("composer").requestSubmit();
  }
});

$("composer").addEventListener("submit", async (event) => {
  event.preventDefault();
  const text = $("composer-text").value;
  if ((!text.trim() && !state.pending.length) || !state.chat) return;
  try {
    const images = await uploadPending();
    await api("POST", `/v1/chats/${state.chat.chat_id}/messages`, { content: text, images });
    $("composer-text").value = "";
    clearPending();
    $("chat-error").textContent = "";
  } catch (err) {
    $("chat-error").textContent = err.message;
  }
});

window.addEventListener("hashchange", () => route().catch(() => {}));

document.addEventListener("DOMContentLoaded", start); // after the other scripts (party.js, arena.js, …)
