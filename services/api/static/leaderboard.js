// The leaderboard page (#leaderboard): GET /v1/arena/leaderboard drawn as a table, each model's 95%
// interval a whisker (a bar from lower to upper, a dot at the rating) on one scale shared by all rows.
// The filters (category, time window, length control) ask the route again.
"use strict";

const DAY_MS = 86_400_000;
const SVG = "http://www.w3.org/2000/svg";
const WHISKER = { width: 200, height: 16 }; // px

function boardQuery() {
  const query = new URLSearchParams();
  const category = $("board-category").value.trim();
  if (category) query.set("category", category);
  const days = Number($("board-window").value);
  if (days) query.set("since", new Date(Date.now() - days * DAY_MS).toISOString());
  if ($("board-length").checked) query.set("length_control", "true");
  return query.toString();
}

let boardAsked = 0; // the latest query wins when filters change faster than the fit answers

async function showLeaderboard() {
  const asked = ++boardAsked;
  $("board-error").textContent = "";
  $("board").setAttribute("aria-busy", "true");
  try {
    const query = boardQuery();
    const board = await api("GET", `/v1/arena/leaderboard${query ? `?${query}` : ""}`);
    if (asked === boardAsked) drawBoard(board);
  } catch (err) {
    if (asked !== boardAsked) return;
    $("board-rows").replaceChildren();
    $("board-summary").textContent = "";
    $("board-error").textContent = err.message;
  } finally {
    if (asked === boardAsked) $("board").removeAttribute("aria-busy");
  }
}

function drawBoard(board) {
  const rows = board.models || [];
  const parts = [`${board.votes} vote${board.votes === 1 ? "" : "s"} counted`];
  if (board.excluded_votes) parts.push(`${board.excluded_votes} left out (excluded voters)`);
  if (board.anchor) parts.push(`${board.anchor} anchored at 1000`);
  if (board.rounds) parts.push(`${board.rounds} bootstrap rounds`);
  if (board.length_coef !== null && board.length_coef !== undefined) parts.push(`length coefficient ${board.length_coef.toFixed(3)}`);
  $("board-summary").textContent = parts.join(" · ");
  if (!rows.length) {
    const cell = Object.assign(document.createElement("td"), { colSpan: 6, className: "small", textContent: "No counted votes for these filters yet." });
    const row = document.createElement("tr");
    row.append(cell);
    $("board-rows").replaceChildren(row);
    $("board-scale").textContent = "";
    return;
  }
  const scale = sharedScale(rows);
  $("board-scale").textContent = `Whiskers share one scale, ${Math.round(scale.low)} to ${Math.round(scale.high)}.`;
  $("board-rows").replaceChildren(...rows.map((m) => boardRow(m, scale)));
}

// One scale for every whisker: the lowest lower bound to the highest upper bound, with a margin.
function sharedScale(rows) {
  const low = Math.min(...rows.map((m) => m.lower));
  const high = Math.max(...rows.map((m) => m.upper));
  const margin = Math.max((high - low) * 0.05, 5);
  return { low: low - margin, high: high + margin };
}

function boardRow(m, scale) {
  const row = document.createElement("tr");
  row.dataset.model = m.model;
  const cell = (text, className = "") => Object.assign(document.createElement("td"), { textContent: text, className });
  const name = Object.assign(document.createElement("th"), { scope: "row", textContent: m.model, className: "model" });
  const interval = Object.assign(document.createElement("td"), { className: "interval" });
  const drawn = Object.assign(document.createElement("span"), { className: "drawn" });
  const numbers = Object.assign(document.createElement("span"), { className: "bounds small", textContent: `${Math.round(m.lower)}–${Math.round(m.upper)}` });
  drawn.append(whisker(m, scale), numbers);
  interval.append(drawn);
  row.append(
    cell(String(m.rank), "num rank"),
    name,
    cell(String(Math.round(m.rating)), "num rating"),
    interval,
    cell(String(m.battles), "num battles"),
    cell(`${m.wins} / ${m.losses} / ${m.ties}`, "num wlt"),
  );
  return row;
}

function whisker(m, scale) {
  const x = (value) => ((value - scale.low) / (scale.high - scale.low)) * WHISKER.width;
  const mid = WHISKER.height / 2;
  const svg = document.createElementNS(SVG, "svg");
  svg.setAttribute("class", "whisker");
  svg.setAttribute("viewBox", `0 0 ${WHISKER.width} ${WHISKER.height}`);
  svg.setAttribute("width", String(WHISKER.width)); // a size of its own: a table sizes its cells from it
  svg.setAttribute("height", String(WHISKER.height));
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", `rating ${Math.round(m.rating)}, 95% interval ${Math.round(m.lower)} to ${Math.round(m.upper)}`);
  const shape = (tag, attrs) => {
    const el = document.createElementNS(SVG, tag);
    for (const [key, value] of Object.entries(attrs)) el.setAttribute(key, String(value));
    svg.append(el);
    return el;
  };
  shape("line", { class: "bar", x1: x(m.lower), x2: x(m.upper), y1: mid, y2: mid });
  for (const end of [m.lower, m.upper]) shape("line", { class: "cap", x1: x(end), x2: x(end), y1: 3, y2: WHISKER.height - 3 });
  shape("circle", { class: "dot", cx: x(m.rating), cy: mid, r: 4 });
  return svg;
}

$("board-form").addEventListener("submit", (event) => {
  event.preventDefault();
  showLeaderboard();
});
$("board-form").addEventListener("change", () => showLeaderboard());
