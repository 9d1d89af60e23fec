// Side by side: in a compare chat a message's replies (one per model, siblings) are drawn as columns
// that stream in parallel (each column is `#node-<reply_id>`, so token frames find it like any reply).
// "Pick this one" appends a choice: the chosen reply becomes the active branch and a preference.
"use strict";

// A battle continued with one side is a one-model chat from then on.
const isCompare = () => Boolean(state.chat && (state.chat.compare || []).length) && !(state.battle && state.battle.continued);

function drawGroup(node, replies, ratings) {
  const first = replies.get(node.node_id);
  const id = `group-${first ? first.message_id : node.node_id}`;
  let group = document.getElementById(id);
  if (!group) {
    group = document.createElement("li");
    group.id = id;
    group.className = "compare";
    group.setAttribute("aria-label", "Answers side by side");
  }
  const keep = new Set();
  for (const r of node.siblings.map((rid) => replies.get(rid)).filter(Boolean)) {
    const col = column(group, r.reply_id);
    group.append(col); // in sibling (request) order
    keep.add(col.id);
    const head = inBattle() ? battleHead(r) : [speakerTag(r.speaker_name || r.model, r.speaker)];
    col.querySelector(".head").replaceChildren(...head);
    const meta = col.querySelector(".meta");
    meta.replaceChildren();
    drawReply(col, r, ratings.get(r.reply_id));
    if (!inBattle()) meta.append(" ", pickButton(r)); // a battle is voted on instead
    col.classList.toggle("chosen", Boolean(r.chosen));
    col.classList.toggle("active", r.reply_id === node.node_id);
  }
  for (const col of [...group.children]) if (!keep.has(col.id)) col.remove();
  return group;
}

function column(group, replyId) {
  let col = document.getElementById(`node-${replyId}`);
  if (col && col.parentElement === group) return col;
  if (col) col.remove(); // drawn as a lone bubble before (a refresh raced the chat's header)
  col = document.createElement("div");
  col.id = `node-${replyId}`;
  col.className = "msg assistant column";
  const head = Object.assign(document.createElement("div"), { className: "head" }); // the model that answers
  const body = Object.assign(document.createElement("div"), { className: "body" });
  const meta = Object.assign(document.createElement("div"), { className: "meta" });
  col.append(head, body, meta);
  return col;
}

function pickButton(r) {
  const button = document.createElement("button");
  button.type = "button";
  button.className = "pick";
  button.textContent = r.chosen ? "Chosen ✓" : "Pick this one";
  button.setAttribute("aria-pressed", String(Boolean(r.chosen)));
  button.setAttribute("aria-label", r.chosen ? `Chosen: ${r.speaker_name || r.model}` : `Pick this one: ${r.speaker_name || r.model}`);
  button.disabled = r.status !== "completed";
  button.addEventListener("click", async () => {
    if (r.chosen) return;
    try {
      const done = await api("POST", `/v1/chats/${state.chat.chat_id}/replies/${r.reply_id}/choose`, {});
      $("chat-error").textContent = "";
      refresh(done.seq);
    } catch (err) {
      $("chat-error").textContent = err.message;
    }
  });
  return button;
}
