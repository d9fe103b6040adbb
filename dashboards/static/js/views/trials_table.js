// The sortable, filterable trials table of the study page. Sorting: the column header buttons
// (aria-sort on the header cell); filtering: free text (number, state, "key=value" of the
// config, "infeasible" or words of the reason a trial violates a constraint), state, and "on the
// front only". Infeasible trials (they violate a constraint of the study) are greyed, with the reason.

import { clear, condenseConfig, duration, el, fmt, fmtDate, fmtSeconds, stateBadge } from "../util.js";

const MAX_ROWS = 500;
// objectives the held-out test evaluation measures (trials on the front and baselines)
const TESTED = ["accuracy", "macro_f1", "loss", "exact_match", "perplexity"];

// Where a trial comes from: a baseline's name, "enqueued" (a config the user queued), "attached"
// (a result measured elsewhere, never trained here) with its label, "replicate".
const ORIGIN_TITLES = {
  attached: "measured elsewhere and told to the optimiser; never trained here (no export, no test run)",
  baseline: "a hand-picked reference point",
  replicate: "another training seed of a front point",
};
function origin(t) {
  if (t.kind === "attached") return t.label ? `attached: ${t.label}` : "attached";
  if (t.kind === "replicate") return t.label ? `replicate: ${t.label}` : "replicate";
  return t.label || "";
}

// `constraints`: the study declares some; then a "Constraints" column says "ok" or, greyed row, why not.
export function trialsTable(objectives, { constraints = false } = {}) {
  const sort = { key: "number", dir: -1 };
  const filter = { text: "", state: "", front: false };
  let trials = [], frontIds = new Set(), byId = new Map();

  const columns = [
    { key: "number", label: "#", value: (t) => t.number, num: true },
    { key: "state", label: "State", value: (t) => t.state },
    { key: "kind", label: "Origin", value: origin },
    ...objectives.map((o) => ({ key: "obj:" + o.name, label: `${o.name} ${o.direction === "maximize" ? "↑" : "↓"}`, value: (t) => t.values?.[o.name] ?? null, num: true })),
    ...objectives.filter((o) => TESTED.includes(o.name)).map((o) => ({ key: "test:" + o.name, label: `${o.name} (test)`, value: (t) => t.test_values?.["test_" + o.name] ?? null, num: true })),
    { key: "epochs", label: "Epochs", value: (t) => t.epochs_trained ?? null, num: true },
    { key: "front", label: "Front", value: (t) => (frontIds.has(t.id) ? 1 : 0), num: true },
    ...(constraints ? [{ key: "feasible", label: "Constraints", value: (t) => (t.feasible === false ? t.infeasible_reason || "violated" : t.feasible ? "ok" : "") }] : []),
    { key: "parent", label: "Parent", value: (t) => (t.parent_id ? byId.get(t.parent_id)?.number ?? t.parent_id : null), num: true },
    { key: "attempts", label: "Attempts", value: (t) => t.attempts, num: true },
    { key: "duration", label: "Duration", value: (t) => duration(t), num: true },
    { key: "finished", label: "Finished", value: (t) => t.finished_at || "" },
  ];

  const count = el("p", { class: "muted small", id: "trials-count", role: "status" });
  const textInput = el("input", { id: "trial-filter", type: "search", placeholder: "e.g. 12, failed, lora.rank.3=8" });
  const stateSelect = el("select", { id: "trial-state-filter" }, ["", "queued", "running", "complete", "failed", "pruned"].map((s) => el("option", { value: s, text: s || "any state" })));
  const frontBox = el("input", { id: "trial-front-filter", type: "checkbox" });
  const headRow = el("tr");
  const body = el("tbody");
  const table = el("table", { class: "data", id: "trials-table" }, el("caption", { class: "sr-only", text: "Trials of this study" }), el("thead", {}, headRow), body);
  const node = el("div", {},
    el("div", { class: "filters" },
      el("div", { class: "field" }, el("label", { for: "trial-filter", text: "Filter" }), textInput),
      el("div", { class: "field" }, el("label", { for: "trial-state-filter", text: "State" }), stateSelect),
      el("div", { class: "field check" }, frontBox, el("label", { for: "trial-front-filter", text: "Pareto front only" }))),
    count, el("div", { class: "table-wrap" }, table));

  textInput.addEventListener("input", () => { filter.text = textInput.value.trim().toLowerCase(); draw(); });
  stateSelect.addEventListener("change", () => { filter.state = stateSelect.value; draw(); });
  frontBox.addEventListener("change", () => { filter.front = frontBox.checked; draw(); });

  function header() {
    clear(headRow, columns.map((c) => {
      const active = sort.key === c.key;
      const th = el("th", { scope: "col", class: c.num ? "num" : null, "aria-sort": active ? (sort.dir > 0 ? "ascending" : "descending") : "none" },
        el("button", { type: "button", class: "sort", dataset: { key: c.key }, text: c.label + (active ? (sort.dir > 0 ? " ▲" : " ▼") : ""),
          onclick: () => { sort.dir = sort.key === c.key ? -sort.dir : (c.num ? -1 : 1); sort.key = c.key; draw(); headRow.querySelector(`button[data-key="${CSS.escape(c.key)}"]`)?.focus(); } }));
      return th;
    }));
  }

  function matches(t) {
    if (filter.state && t.state !== filter.state) return false;
    if (filter.front && !frontIds.has(t.id)) return false;
    if (!filter.text) return true;
    const q = filter.text;
    if (String(t.number) === q || `#${t.number}` === q || t.state === q) return true;
    if (q === "infeasible" && t.feasible === false) return true;
    return Object.entries(t.config || {}).some(([k, v]) => `${k}=${v}`.toLowerCase().includes(q)) || (t.error || "").toLowerCase().includes(q)
      || (t.infeasible_reason || "").toLowerCase().includes(q);
  }

  function draw() {
    header();
    const col = columns.find((c) => c.key === sort.key) || columns[0];
    const rows = trials.filter(matches).sort((a, b) => {
      const va = col.value(a), vb = col.value(b);
      if (va === vb) return b.number - a.number;
      if (va === null || va === undefined || va === "") return 1;
      if (vb === null || vb === undefined || vb === "") return -1;
      return (va < vb ? -1 : 1) * sort.dir;
    });
    count.textContent = `${rows.length} of ${trials.length} trials` + (rows.length > MAX_ROWS ? ` (first ${MAX_ROWS} shown)` : "");
    clear(body, rows.slice(0, MAX_ROWS).map((t) => {
      const parent = t.parent_id ? byId.get(t.parent_id) : null;
      return el("tr", { dataset: { trialId: t.id, state: t.state, feasible: t.feasible === null || t.feasible === undefined ? "" : String(t.feasible) },
        class: frontIds.has(t.id) ? "on-front" : t.feasible === false ? "infeasible" : null, title: condenseConfig(t.config).map(([k, v]) => `${k} = ${v}`).join("\n") },
        el("th", { scope: "row", class: "num" }, el("a", { href: `#/trials/${t.id}`, text: `#${t.number}` })),
        el("td", {}, stateBadge(t.state)),
        el("td", { class: "small origin", dataset: { kind: t.kind || "search" }, title: ORIGIN_TITLES[t.kind] || null, text: origin(t) }),
        objectives.map((o) => el("td", { class: "num", text: fmt(t.values?.[o.name]) })),
        objectives.filter((o) => TESTED.includes(o.name)).map((o) => el("td", { class: "num", title: t.test_source === "user" ? "reported by the user, not measured by the service" : null,
          text: t.test_values ? fmt(t.test_values["test_" + o.name]) + (t.test_source === "user" ? " (reported)" : "") : "–" })),
        el("td", { class: "num", text: fmt(t.epochs_trained, 3) }),
        el("td", { class: "num", text: frontIds.has(t.id) ? "★" : "", "aria-label": frontIds.has(t.id) ? "on the Pareto front" : "" }),
        constraints ? el("td", { class: "small constraint", title: t.infeasible_reason || null, text: t.feasible === false ? `✗ ${t.infeasible_reason || "violated"}` : t.feasible ? "ok" : "" }) : null,
        el("td", { class: "num" }, t.parent_id ? el("a", { href: `#/trials/${t.parent_id}`, text: parent ? `#${parent.number}` : `id ${t.parent_id}` }) : "–"),
        el("td", { class: "num", text: String(t.attempts) }),
        el("td", { class: "num", text: fmtSeconds(duration(t)) }),
        el("td", { class: "small", text: fmtDate(t.finished_at) }));
    }));
  }

  return {
    node,
    update(allTrials, front) {
      trials = allTrials;
      byId = new Map(allTrials.map((t) => [t.id, t]));
      frontIds = new Set(front.map((t) => t.id));
      draw();
    },
  };
}
