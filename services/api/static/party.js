// A party chat: its participants (bots), the moderator's controls and a status line of the floor.
// The chat's header state (participants, floor) comes from GET /v1/chats/{id}; participant.* and
// floor.* frames ask for it again. Every control is one POST …/floor (an event, so a replay shows it).
"use strict";

const isParty = () => Boolean(state.chat && (state.chat.floor || (state.chat.participants || []).length));
const present = () => ((state.chat && state.chat.participants) || []).filter((p) => !p.left);

function speakerTag(name, speaker) {
  const tag = document.createElement("span");
  tag.className = "speaker";
  tag.textContent = name;
  if (speaker) tag.dataset.speaker = speaker;
  return tag;
}

function drawParty() {
  const party = isParty();
  const opening = $("party").hidden && party;
  $("party").hidden = !party;
  if (!party) return;
  if (opening) $("moderation").open = !matchMedia("(max-width: 700px)").matches; // a phone: the chat first
  const floor = state.chat.floor || {};
  // the rows are drawn again: a keyboard user keeps their place (Mute becomes Unmute, same spot)
  const row = document.activeElement?.closest?.("#participants li");
  const at = row ? [...row.querySelectorAll("button")].indexOf(document.activeElement) : -1;
  $("participants").replaceChildren(...present().map(participantRow));
  if (row) $("participants").querySelector(`li[data-participant="${CSS.escape(row.dataset.participant)}"]`)?.querySelectorAll("button")[at]?.focus();
  if (!state.floorEdited) { // a change being made is not undone by someone else's event
    $("floor-policy").value = floor.policy || "round_robin";
    $("floor-rounds").value = floor.rounds ?? 1;
    $("floor-max").value = floor.max_bot_turns ?? 10;
    $("floor-delay").value = floor.delay_s ?? 0;
  }
  $("floor-pause").disabled = $("floor-pause-cancel").disabled = Boolean(floor.paused);
  $("floor-resume").disabled = !floor.paused;
  $("floor-stop").disabled = Boolean(floor.stopped);
  drawFloorStatus();
  drawJoinChoices();
  $("composer-text").placeholder = floor.policy === "mention" ? "Name a bot with @ to give it the word" : "";
}

function participantRow(p) {
  const item = document.createElement("li");
  item.className = `participant${p.muted ? " muted" : ""}`;
  item.dataset.participant = p.participant_id;
  const name = Object.assign(document.createElement("span"), { className: "name", textContent: p.name });
  const model = Object.assign(document.createElement("span"), { className: "model small", textContent: p.model });
  const flag = Object.assign(document.createElement("span"), { className: "flag small", textContent: p.muted ? "muted" : "" });
  const button = (cls, text, label, body) => {
    const b = Object.assign(document.createElement("button"), { type: "button", className: cls, textContent: text });
    b.setAttribute("aria-label", label);
    b.addEventListener("click", () => floorAction(body));
    return b;
  };
  const mute = p.muted
    ? button("unmute", "Unmute", `Unmute ${p.name}`, { action: "unmute", participant: p.participant_id })
    : button("mute", "Mute", `Mute ${p.name}`, { action: "mute", participant: p.participant_id });
  const next = button("next", "Speak next", `Speak next: ${p.name}`, { action: "next", participant: p.participant_id });
  const remove = Object.assign(document.createElement("button"), { type: "button", className: "leave plain", textContent: "Remove" });
  remove.setAttribute("aria-label", `Remove ${p.name}`);
  remove.addEventListener("click", async () => {
    if (!confirm(`Remove ${p.name} from this chat?`)) return;
    await chatCall("DELETE", `/participants/${p.participant_id}`);
  });
  item.append(name, " ", model, " ", flag, " ", mute, " ", next, " ", remove);
  return item;
}

// The status line: the policy and limits, whether the floor is paused or stopped, the bot turns so far
// (and in a row since the last human message), and who is speaking.
function drawFloorStatus(turns) {
  if (turns) state.turns = turns;
  if (!isParty()) return;
  const floor = state.chat.floor || {};
  const parts = [`policy ${floor.policy || "?"}`];
  if (floor.policy === "round_robin" || floor.policy === "auto") parts.push(`${floor.rounds} round${floor.rounds === 1 ? "" : "s"}`);
  parts.push(`at most ${floor.max_bot_turns} bot turns in a row`);
  if (floor.delay_s) parts.push(`${floor.delay_s} s between turns`);
  // after a stop no bot speaks until someone posts or the moderator names a speaker
  parts.push(floor.stopped ? "stopped (post, or name who speaks next)" : floor.paused ? "paused" : "running");
  const { botTurns = 0, inARow = 0 } = state.turns || {};
  parts.push(`${botTurns} bot turn${botTurns === 1 ? "" : "s"} (${inARow} in a row)`);
  if (state.speaking) parts.push(`speaking: ${state.speaking}`);
  $("floor-status").textContent = parts.join(" · ");
  $("floor-status").dataset.state = floor.stopped ? "stopped" : floor.paused ? "paused" : "running";
}

async function chatCall(method, path, body) {
  try {
    const answer = await api(method, `/v1/chats/${state.chat.chat_id}${path}`, body);
    $("chat-error").textContent = "";
    refreshChat(answer.seq || 0);
    return answer;
  } catch (err) {
    $("chat-error").textContent = err.message;
    return null;
  }
}

const floorAction = (body) => chatCall("POST", "/floor", body);

$("floor-pause").addEventListener("click", () => floorAction({ action: "pause", cancel_running: false }));
$("floor-pause-cancel").addEventListener("click", () => floorAction({ action: "pause", cancel_running: true }));
$("floor-resume").addEventListener("click", () => floorAction({ action: "resume" }));
$("floor-stop").addEventListener("click", () => floorAction({ action: "stop" }));
$("floor-form").addEventListener("input", () => (state.floorEdited = true));
$("floor-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const floor = {
    policy: $("floor-policy").value,
    rounds: Number($("floor-rounds").value),
    max_bot_turns: Number($("floor-max").value),
    delay_s: Number($("floor-delay").value),
  };
  if (await floorAction({ action: "set", floor })) state.floorEdited = false;
});

// Bots the caller may add: the usable ones not in the chat yet.
async function drawJoinChoices() {
  const chatId = state.chat.chat_id;
  if (!state.usableBots) state.usableBots = await loadBots("usable").catch(() => []);
  if (!state.chat || state.chat.chat_id !== chatId) return;
  const inChat = new Set(present().map((p) => p.bot_id));
  const choices = state.usableBots.filter((b) => !inChat.has(b.bot_id));
  $("join-bot").replaceChildren(...choices.map((b) => new Option(`${b.name} (${b.model})`, b.bot_id)));
  $("join-form").hidden = !choices.length;
}

$("join-form").addEventListener("submit", (event) => {
  event.preventDefault();
  if ($("join-bot").value) chatCall("POST", "/participants", { bot_id: $("join-bot").value });
});

// The chat's header state again, once the read model has `seq` (coalesced like the messages' refresh).
let refreshingChat = null;

function refreshChat(minSeq) {
  state.wantChatSeq = Math.max(state.wantChatSeq || 0, minSeq);
  if (refreshingChat) return;
  refreshingChat = (async () => {
    try {
      while (state.chat) {
        const seq = state.wantChatSeq;
        const chatId = state.chat.chat_id;
        const chat = await api("GET", `/v1/chats/${chatId}?min_seq=${seq}`);
        if (!state.chat || state.chat.chat_id !== chatId) return;
        Object.assign(state.chat, chat);
        drawParty();
        if (state.wantChatSeq === seq) return;
      }
    } catch (err) {
      if (err.status === 503) setTimeout(() => refreshChat(state.wantChatSeq || 0), 1000);
    } finally {
      refreshingChat = null;
    }
  })();
}

// Live frames: the floor and the participants change the header; a reply request names its speaker
// before the read model has the row.
function partyEvent(frame) {
  const type = frame.event.type || "";
  if (type.startsWith("chat.participant.") || type.startsWith("chat.floor.")) refreshChat(frame.seq);
  if (type === "chat.reply.requested" && frame.event.speaker && isParty()) {
    const who = present().find((p) => p.participant_id === frame.event.speaker);
    state.speaking = who ? who.name : frame.event.speaker;
    drawFloorStatus();
  }
}
