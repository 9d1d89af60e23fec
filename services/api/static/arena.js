// The arena (#arena): a prompt goes to two models drawn by the server, shown only as "Model A" and
// "Model B" while they answer side by side (the chat view's side-by-side columns); the voter votes, the
// names are revealed, and "Continue with <model>" makes the battle a one-model chat of that model.
// What the page knows of a battle comes from the API, which is blind before the vote (schemas/blind.py):
// the chat's live frames (`chat.created` with `arena`, `chat.arena.voted`, `.continued`, `.tagged`)
// and the vote's own answer. Nothing on the page names a model before the vote, not even the lists other
// pages drew from the served models (see `blindfold`).
"use strict";

const SIDES = ["A", "B"];
const VOTES = { A: "A is better", B: "B is better", tie: "a tie", both_bad: "both are bad" };

// A battle's state, from its frames: { category, vote: {vote, A, B} | null, continued: {side, model} | null }.
const newBattle = () => ({ category: "", vote: null, continued: null, last: [] });

// A battle is drawn as a battle until the voter continues with one side; then it is an ordinary chat.
const inBattle = () => Boolean(state.battle && !state.battle.continued);

// Before the vote a reply's model is its label; after it, the alias, matched against the vote's.
function sideOf(r) {
  if (SIDES.includes(r.model)) return r.model;
  const vote = state.battle && state.battle.vote;
  return SIDES.find((side) => vote && vote[side] === r.model) || "";
}

// A column's head: "Model A", and after the vote the model's name under it.
function battleHead(r) {
  const side = sideOf(r);
  const head = [speakerTag(`Model ${side || "?"}`, "")];
  if (state.battle.vote && side) head.push(Object.assign(document.createElement("span"), { className: "revealed", textContent: state.battle.vote[side] }));
  return head;
}

// ---------------------------------------------------------------- the start page

function showArena() {
  $("arena-error").textContent = "";
  $("messages").replaceChildren(); // the last chat's transcript names its model
  $("events").replaceChildren();
  $("arena-prompt").focus();
}

$("arena-prompt").addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey) {
    event.preventDefault();
    $("arena-form").requestSubmit();
  }
});

$("arena-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const content = $("arena-prompt").value;
  if (!content.trim()) return void ($("arena-error").textContent = "Write a prompt first.");
  $("arena-error").textContent = "";
  $("arena-start").disabled = true;
  try {
    const battle = await api("POST", "/v1/arena/battles", { content, category: $("arena-category").value.trim() });
    $("arena-prompt").value = "";
    await loadChats(battle.seq || 0).catch(() => {});
    state.focusBattle = true; // a keyboard user lands on the battle, not on a hidden button
    location.hash = `chat=${battle.chat_id}`; // route() opens it: the chat view draws the battle
  } catch (err) {
    $("arena-error").textContent = err.message; // 409 no pool, 429 the daily cap, 400/422 a bad prompt
  } finally {
    $("arena-start").disabled = false;
  }
});

// ---------------------------------------------------------------- a battle in the chat view

// A battle is drawn as one for its voter only (an admin reading someone else's battle reads the truth,
// as an ordinary side-by-side chat).
const isMyBattle = (chat) => chat.origin === "arena" && chat.owner_id === state.me;

function battleEvent(frame) {
  const event = frame.event;
  const type = event.type || "";
  if (type === "chat.created") {
    if (!event.arena || event.owner_id !== state.me) return;
    state.battle = { ...newBattle(), ...(state.battle || {}), category: event.category };
  } else if (!state.battle || !type.startsWith("chat.arena.")) return;
  else if (type === "chat.arena.voted") state.battle.vote ||= { vote: event.vote, A: event.model_a, B: event.model_b };
  else if (type === "chat.arena.continued") state.battle.continued ||= { side: event.side, model: event.model };
  else if (type === "chat.arena.tagged") state.battle.category = event.category;
  drawBattle();
  blindfold();
}

// The vote bar under the answers. `last`: the replies of the last message (both sides), when known.
function drawBattle(last) {
  const battle = state.battle;
  $("battle").hidden = !inBattle();
  if (!inBattle()) {
    if (battle) $("composer").hidden = false; // continued: an ordinary chat
    return;
  }
  if (last) battle.last = last;
  if (state.focusBattle) {
    state.focusBattle = false;
    $("battle-title").focus();
  }
  const vote = battle.vote;
  $("battle-vote").hidden = Boolean(vote);
  $("battle-tag").hidden = Boolean(vote);
  $("battle-reveal").hidden = !vote;
  $("composer").hidden = true; // a battle judges one prompt; after the vote, one side first
  if (vote) {
    say(`You voted: ${VOTES[vote.vote]}. Model A is ${vote.A}; Model B is ${vote.B}.`);
    for (const side of SIDES) {
      const button = $(`continue-${side.toLowerCase()}`);
      button.textContent = `Continue with ${vote[side]}`;
      button.setAttribute("aria-label", `Continue with ${vote[side]} (Model ${side})`);
    }
    return;
  }
  if (document.activeElement !== $("battle-category")) $("battle-category").value = battle.category;
  const replies = battle.last || [];
  const failed = replies.filter((r) => r.status === "failed" || r.status === "cancelled").map(sideOf);
  const done = replies.length === 2 && replies.every((r) => r.status === "completed");
  for (const button of document.querySelectorAll("#battle-vote button")) button.disabled = !done;
  say(
    failed.length
      ? `Model ${failed.join(" and ")} did not finish: start a new battle.`
      : done
        ? "Both answers are in. Which one is better?"
        : "Model A and Model B are answering…",
  );
}

// The status is a live region: a screen reader hears it when it changes, not on every redraw.
function say(text) {
  if ($("battle-status").textContent !== text) $("battle-status").textContent = text;
}

for (const button of document.querySelectorAll("#battle-vote button")) {
  button.addEventListener("click", async () => {
    const chatId = state.chat.chat_id;
    try {
      const done = await api("POST", `/v1/chats/${chatId}/arena/vote`, { vote: button.dataset.vote });
      $("battle-error").textContent = "";
      if (!state.chat || state.chat.chat_id !== chatId) return;
      state.battle.vote ||= { vote: done.vote, A: done.models.A, B: done.models.B };
      drawBattle();
      blindfold();
      refresh(done.seq); // the messages now name the models
      $("continue-a").focus();
    } catch (err) {
      $("battle-error").textContent = err.message; // 409 already voted or unfinished, 429 the daily cap
    }
  });
}

for (const side of SIDES) {
  $(`continue-${side.toLowerCase()}`).addEventListener("click", async () => {
    const chatId = state.chat.chat_id;
    try {
      const done = await api("POST", `/v1/chats/${chatId}/arena/continue`, { side });
      $("battle-error").textContent = "";
      if (!state.chat || state.chat.chat_id !== chatId) return;
      state.battle.continued ||= { side, model: done.model };
      drawBattle();
      $("composer").hidden = false;
      $("chat-error").textContent = "";
      refresh(done.seq);
      $("composer-text").placeholder = `Continue with ${done.model}`;
      $("composer-text").focus();
    } catch (err) {
      $("battle-error").textContent = err.message;
    }
  });
}

$("battle-tag-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  try {
    const category = $("battle-category").value.trim();
    await api("PUT", `/v1/chats/${state.chat.chat_id}/arena/category`, { category });
    state.battle.category = category;
    $("battle-error").textContent = "";
    $("battle-note").textContent = category ? `Category: ${category}.` : "No category.";
  } catch (err) {
    $("battle-error").textContent = err.message;
  }
});

// ---------------------------------------------------------------- nothing names a model before the vote

// The lists drawn from the served models or naming bots' models, on any page (hidden pages keep theirs).
const MODEL_LISTS = ["new-model", "new-models", "new-bots", "bot-model", "bots-mine", "bots-shared", "bots-store", "join-bot", "participants", "board-rows"];

const blindNow = () => location.hash === "#arena" || Boolean(state.battle && !state.battle.vote);

// While the arena page or an unvoted battle is shown, the page holds no model name (each page draws its
// lists again when shown); after, the model picker comes back.
function blindfold() {
  const blind = blindNow();
  $("model-choice").hidden = blind;
  if (blind) {
    $("model-picker").replaceChildren();
    for (const id of MODEL_LISTS) $(id).replaceChildren();
    $("board-summary").textContent = "";
  } else if (!$("model-picker").options.length) drawModelPicker();
}
