// The new-chat page (#new): a plain chat, a party chat (bots, a turn policy and limits) or a
// side-by-side chat (2–4 models answering each message).
"use strict";

const kindOf = () => document.querySelector("#new-form input[name=kind]:checked").value;

async function showNewChat() {
  $("new-error").textContent = "";
  fillModels($("new-model"), $("model-picker").value);
  const wanted = new Set([...document.querySelectorAll("#new-models input:checked")].map((i) => i.value));
  $("new-models").replaceChildren(...(state.models || []).map((m) => checkbox("compare-model", m.id, m.id, wanted.has(m.id))));
  drawKind();
  try {
    state.usableBots = await loadBots("usable");
  } catch (err) {
    state.usableBots = [];
    $("new-error").textContent = `The bots could not be listed: ${err.message}`;
  }
  $("new-bots").replaceChildren(
    ...state.usableBots.map((b) => checkbox("party-bot", b.bot_id, `${b.name} (${b.model}${b.mine ? "" : `, by ${b.owner_name || b.owner_id}`})`)),
  );
  state.botOrder = [];
}

function checkbox(name, value, text, checked = false) {
  const label = document.createElement("label");
  const box = Object.assign(document.createElement("input"), { type: "checkbox", name, value, checked });
  const order = Object.assign(document.createElement("span"), { className: "order" }); // where it speaks
  label.append(box, order, " ", text);
  return label;
}

function drawKind() {
  const kind = kindOf();
  $("new-plain").hidden = kind !== "plain";
  $("new-party").hidden = kind !== "party";
  $("new-compare").hidden = kind !== "compare";
}

// Bots join (and, in turn, speak) in the order they were ticked; each ticked one shows its place.
state.botOrder = [];

$("new-form").addEventListener("change", (event) => {
  if (event.target.name === "kind") drawKind();
  if (event.target.name !== "party-bot") return;
  const id = event.target.value;
  state.botOrder = state.botOrder.filter((b) => b !== id);
  if (event.target.checked) state.botOrder.push(id);
  drawBotOrder();
});

function drawBotOrder() {
  for (const box of document.querySelectorAll("#new-bots input[name=party-bot]")) {
    const at = state.botOrder.indexOf(box.value);
    box.parentElement.querySelector(".order").textContent = at < 0 ? "" : `${at + 1}.`;
  }
}

$("new-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  $("new-error").textContent = "";
  const kind = kindOf();
  const body = { title: $("new-title").value.trim() || "New chat" };
  const picked = (name) => [...document.querySelectorAll(`#new-form input[name=${name}]:checked`)].map((i) => i.value);
  if (kind === "plain") body.model = $("new-model").value || undefined;
  if (kind === "party") {
    const ticked = new Set(picked("party-bot"));
    body.bots = state.botOrder.filter((id) => ticked.has(id));
    if (!body.bots.length) return void ($("new-error").textContent = "Pick at least one bot.");
    body.floor = {
      policy: $("new-policy").value,
      rounds: Number($("new-rounds").value),
      max_bot_turns: Number($("new-max").value),
      delay_s: Number($("new-delay").value),
    };
  }
  if (kind === "compare") {
    body.compare = picked("compare-model");
    if (body.compare.length < 2 || body.compare.length > 4) return void ($("new-error").textContent = "Pick 2 to 4 models.");
  }
  try {
    const chat = await api("POST", "/v1/chats", body);
    await loadChats(chat.seq); // read our own write
    location.hash = `chat=${chat.chat_id}`; // route() opens it
  } catch (err) {
    $("new-error").textContent = err.message;
  }
});
