// DOM and formatting helpers shared by the views. Text always goes in through textContent
// (never innerHTML), so names and configs from the API cannot inject markup.

export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key === "dataset") Object.assign(node.dataset, value);
    else if (key.startsWith("on") && typeof value === "function") node.addEventListener(key.slice(2), value);
    else if (value === true) node.setAttribute(key, "");
    else node.setAttribute(key, String(value));
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

export function clear(node, ...children) {
  node.replaceChildren(...children.flat().filter((c) => c !== null && c !== undefined && c !== false));
  return node;
}

export const TERMINAL = new Set(["complete", "failed", "pruned"]);

export function fmt(value, digits = 4) {
  if (value === null || value === undefined) return "–";
  if (typeof value === "number") {
    if (!Number.isFinite(value)) return String(value);
    if (Number.isInteger(value)) return Math.abs(value) >= 1e12 ? value.toExponential(3) : value.toLocaleString("en");
    const abs = Math.abs(value);
    if (abs !== 0 && (abs < 1e-3 || abs >= 1e6)) return value.toExponential(3);
    return String(Number(value.toPrecision(digits)));
  }
  if (typeof value === "boolean") return value ? "on" : "off";
  return String(value);
}

export function fmtDate(iso) {
  if (!iso) return "–";
  const d = parseDate(iso);
  return d ? d.toLocaleString("en-GB", { hour12: false }) : iso;
}

// The API's datetimes are naive UTC ISO strings (or carry an offset): read them as UTC.
export function parseDate(iso) {
  if (!iso) return null;
  const s = /[zZ]|[+-]\d\d:?\d\d$/.test(iso) ? iso : iso + "Z";
  const d = new Date(s);
  return Number.isNaN(d.getTime()) ? null : d;
}

export function duration(trial) {
  const a = parseDate(trial.started_at), b = parseDate(trial.finished_at);
  if (!a || !b) return null;
  return (b - a) / 1000;
}

export function fmtSeconds(s) {
  if (s === null || s === undefined) return "–";
  if (s < 60) return `${s.toFixed(1)} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${Math.round(s % 60)} s`;
  return `${(s / 3600).toFixed(1)} h`;
}

export function escapeHtml(text) {
  return String(text).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
}

// Per-layer keys ("lora.rank.3", "layers.0") folded into one line each: "lora.rank: [8, 0, 4]".
export function condenseConfig(config) {
  const grouped = new Map();
  const lines = [];
  for (const [key, value] of Object.entries(config || {})) {
    const m = /^(.*)\.(\d+)$/.exec(key);
    if (m) {
      if (!grouped.has(m[1])) grouped.set(m[1], []);
      grouped.get(m[1])[Number(m[2])] = value;
    } else lines.push([key, fmt(value)]);
  }
  for (const [key, values] of grouped) {
    lines.push([`${key}[]`, "[" + Array.from(values, (v) => (v === undefined ? "·" : v === true ? "1" : v === false ? "0" : fmt(v))).join(", ") + "]"]);
  }
  return lines.sort((a, b) => a[0].localeCompare(b[0]));
}

// Hover text for a plotted trial: its number, objective values and (condensed) config.
export function hoverText(trial, objectives, maxLines = 14) {
  const head = [`<b>trial #${trial.number}</b> (id ${trial.id})`];
  for (const o of objectives) {
    const iv = trial.intervals?.[o.name];
    const range = iv ? ` (95%: ${fmt(iv.low)} – ${fmt(iv.high)}, ${iv.examples} examples)` : "";
    head.push(`${escapeHtml(o.name)}: ${escapeHtml(fmt(trial.values?.[o.name]) + range)}`);
  }
  if (trial.kind === "attached") head.push(`<i>attached${trial.label ? ` (${escapeHtml(trial.label)})` : ""}: measured elsewhere, never trained here</i>`);
  if (trial.test_source === "user") head.push("<i>test values reported by the user</i>");
  if (trial.seeds) head.push(`<i>mean of ${trial.seeds.runs} training seeds</i>`);
  if (trial.tied_with_best === true) head.push("<i>not told apart from the best (95%)</i>");
  if (trial.feasible === false) head.push(`<i>infeasible: ${escapeHtml(trial.infeasible_reason || "violates a constraint")}</i>`);
  const cfg = condenseConfig(trial.config);
  const shown = cfg.slice(0, maxLines).map(([k, v]) => `${escapeHtml(k)} = ${escapeHtml(v.length > 60 ? v.slice(0, 57) + "…" : v)}`);
  if (cfg.length > maxLines) shown.push(`… ${cfg.length - maxLines} more`);
  return head.join("<br>") + "<br>—<br>" + shown.join("<br>");
}

export function stateBadge(state) {
  return el("span", { class: `badge state-${state}`, text: state });
}

export function debounce(fn, ms) {
  let t = null;
  return (...args) => { clearTimeout(t); t = setTimeout(() => fn(...args), ms); };
}
