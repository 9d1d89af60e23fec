// The Bots page: my bots, bots shared with me, the store (public bots); create, edit, delete, export
// (a JSON download) and import (a file of one exported bot or a list).
"use strict";

// A list answer may be a bare array or wrapped ({items}/{data}/{bots}).
const itemsOf = (answer) => (Array.isArray(answer) ? answer : answer.items || answer.data || answer.bots || []);

async function loadBots(scope) {
  return itemsOf(await api("GET", `/v1/bots?scope=${scope}`));
}

async function showBots() {
  $("bots-error").textContent = "";
  fillModels($("bot-model"));
  try {
    const [usable, store] = await Promise.all([loadBots("usable"), loadBots("store")]);
    state.usableBots = usable;
    drawBots($("bots-mine"), usable.filter((b) => b.mine), "You have no bot yet.");
    drawBots($("bots-shared"), usable.filter((b) => !b.mine && b.visibility === "shared"), "Nobody shares a bot with you.");
    drawBots($("bots-store"), store, "The store is empty.");
  } catch (err) {
    $("bots-error").textContent = err.message;
  }
}

function fillModels(select, keep) {
  const wanted = keep || select.value;
  select.replaceChildren(...(state.models || []).map((m) => new Option(m.id, m.id)));
  if (wanted && ![...select.options].some((o) => o.value === wanted)) select.append(new Option(`${wanted} (not served now)`, wanted));
  if (wanted) select.value = wanted;
}

function drawBots(list, bots, empty) {
  list.replaceChildren();
  if (!bots.length) {
    list.append(Object.assign(document.createElement("li"), { className: "small", textContent: empty }));
    return;
  }
  for (const bot of bots) list.append(botCard(bot));
}

function botCard(bot) {
  const item = document.createElement("li");
  item.className = "bot card-row";
  item.dataset.bot = bot.bot_id;
  const title = Object.assign(document.createElement("h3"), { className: "bot-name", textContent: bot.name });
  const facts = [bot.model, bot.visibility];
  facts.push(bot.mine ? "yours" : `by ${bot.owner_name || bot.owner_id}`);
  if (bot.visibility === "shared" && bot.shared_with?.length) facts.push(`with ${bot.shared_with.join(", ")}`);
  const meta = Object.assign(document.createElement("p"), { className: "meta", textContent: facts.join(" · ") });
  const about = Object.assign(document.createElement("p"), { className: "about", textContent: bot.description || "" });
  const actions = document.createElement("div");
  actions.className = "row wrap";
  const action = (cls, text, run) => {
    const b = Object.assign(document.createElement("button"), { type: "button", className: cls, textContent: text });
    b.setAttribute("aria-label", `${text} ${bot.name}`);
    b.addEventListener("click", run);
    actions.append(b);
  };
  if (bot.mine || state.admin) {
    action("edit-bot", "Edit", () => editBot(bot));
    action("delete-bot plain", "Delete", () => deleteBot(bot));
  }
  action("export-bot plain", "Export", () => exportBot(bot));
  item.append(title, meta, about, actions);
  return item;
}

// ---------------------------------------------------------------- the form (new or edit)

function editBot(bot) {
  state.editing = bot || null;
  const b = bot || { name: "", model: $("model-picker").value, system_prompt: "", params: {}, history: 0, delay_s: 0 };
  $("bot-form-title").textContent = bot ? `Edit ${bot.name}` : "New bot";
  $("bot-name").value = b.name;
  fillModels($("bot-model"), b.model);
  $("bot-prompt").value = b.system_prompt || "";
  $("bot-temperature").value = b.params?.temperature ?? 0.7;
  $("bot-max-tokens").value = b.params?.max_new_tokens ?? 256;
  $("bot-history").value = b.history ?? 0;
  $("bot-delay").value = b.delay_s ?? 0;
  $("bot-description").value = b.description || "";
  $("bot-visibility").value = b.visibility || "private";
  $("bot-shared").value = (b.shared_with || []).join(", ");
  drawSharing();
  $("bot-form").hidden = false;
  $("bot-name").focus();
}

// Names to share with only matter for a shared bot.
function drawSharing() {
  $("bot-shared").closest("label").hidden = $("bot-visibility").value !== "shared";
}

$("bot-visibility").addEventListener("change", drawSharing);
$("bot-new").addEventListener("click", () => editBot(null));
$("bot-cancel").addEventListener("click", () => {
  $("bot-form").hidden = true;
  state.editing = null;
});

$("bot-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const old = state.editing;
  const body = {
    name: $("bot-name").value.trim(),
    model: $("bot-model").value,
    system_prompt: $("bot-prompt").value,
    // an edit keeps the parameters this form does not show (top_p, stop, …)
    params: { ...(old?.params || {}), temperature: Number($("bot-temperature").value), max_new_tokens: Number($("bot-max-tokens").value) },
    history: Number($("bot-history").value),
    delay_s: Number($("bot-delay").value),
    description: $("bot-description").value,
    visibility: $("bot-visibility").value,
    shared_with: [],
  };
  if (body.visibility === "shared") body.shared_with = $("bot-shared").value.split(",").map((s) => s.trim()).filter(Boolean);
  try {
    // only if nobody changed it since it was listed (409 otherwise: list again and redo)
    if (old) await api("PUT", `/v1/bots/${old.bot_id}`, body, old.version ? { "If-Match": String(old.version) } : {});
    else await api("POST", "/v1/bots", body);
    $("bot-form").hidden = true;
    state.editing = null;
    $("bots-note").textContent = `Saved ${body.name}.`;
    await showBots();
  } catch (err) {
    $("bots-error").textContent = err.message;
  }
});

async function deleteBot(bot) {
  if (!confirm(`Delete the bot "${bot.name}"? Chats it joined keep their copy.`)) return;
  try {
    await api("DELETE", `/v1/bots/${bot.bot_id}`);
    $("bots-note").textContent = `Deleted ${bot.name}.`;
    await showBots();
  } catch (err) {
    $("bots-error").textContent = err.message;
  }
}

// ---------------------------------------------------------------- export and import

async function exportBot(bot) {
  try {
    const exported = await api("GET", `/v1/bots/${bot.bot_id}/export`);
    const blob = new Blob([JSON.stringify(exported, null, 2) + "\n"], { type: "application/json" });
    const link = document.createElement("a");
    link.href = URL.createObjectURL(blob);
    link.download = `${bot.name.replace(/[^A-Za-z0-9_-]+/g, "-") || "bot"}.json`;
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(link.href), 10_000);
  } catch (err) {
    $("bots-error").textContent = err.message;
  }
}

$("bot-import").addEventListener("change", async (event) => {
  const file = event.target.files[0];
  event.target.value = "";
  if (!file) return;
  $("bots-error").textContent = "";
  let parsed;
  try {
    parsed = JSON.parse(await file.text());
  } catch (err) {
    $("bots-error").textContent = `${file.name} is not JSON: ${err.message}`;
    return;
  }
  try {
    const answer = await api("POST", "/v1/bots/import", parsed);
    const made = itemsOf(answer).length || (answer.bot_id ? 1 : 0);
    $("bots-note").textContent = `Imported ${made} bot${made === 1 ? "" : "s"} from ${file.name}.`;
    await showBots();
  } catch (err) {
    $("bots-error").textContent = `${file.name}: ${err.message}`;
  }
});
