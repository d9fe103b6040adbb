// PBT lineage: every trial is a node (x: trial number, y: a chosen objective), an arrow goes
// from donor to member for every exploit in the member's `lineage` (the trial whose checkpoint
// it continued from, at which step, what changed); trials without a lineage fall back to
// `parent_id`.
// The same edges are listed as links below the plot for keyboard and screen-reader use.

import { get, trialsAfter } from "../api.js";
import { COLORS, draw, purge } from "../charts.js";
import { clear, el, fmt, hoverText, stateBadge } from "../util.js";

const STATE_COLOR = { complete: COLORS.front, running: "#b45309", queued: "#a3a3a3", failed: "#be123c", pruned: "#6b7280" };

export function render(main, [idText], ctx) {
  const id = Number(idText);
  let study = null, trials = [], sig = "", objective = 0;
  const head = el("div", { class: "page-head" });
  const note = el("p", { class: "muted", id: "lineage-note" });
  const controls = el("div", { class: "controls" });
  const plot = el("div", { class: "plot", id: "lineage-plot", role: "img", "aria-label": "lineage graph" });
  const list = el("div", { class: "table-wrap", id: "lineage-edges" });
  const message = el("p", { class: "error", role: "alert", hidden: true });
  main.append(head, message,
    el("section", { class: "card", "aria-labelledby": "lineage-h" }, el("h2", { id: "lineage-h", text: "Lineage graph" }), note, controls, plot),
    el("section", { class: "card", "aria-labelledby": "edges-h" }, el("h2", { id: "edges-h", text: "Parent → child" }), list));

  let bound = false;
  function drawGraph() {
    const objs = study.spec.objectives;
    const o = objs[objective];
    const byId = new Map(trials.map((t) => [t.id, t]));
    const yOf = (t) => (t.values && Number.isFinite(t.values[o.name]) ? t.values[o.name] : null);
    const placed = trials.filter((t) => yOf(t) !== null);
    const edges = trials.flatMap((t) => (t.lineage && t.lineage.length
      ? t.lineage.map((e) => ({ child: t, parent: byId.get(e.source), step: e.step, changes: e.changes || {} }))
      : t.parent_id ? [{ child: t, parent: byId.get(t.parent_id), step: null, changes: {} }] : [])).filter((e) => e.parent);
    const ex = [], ey = [];
    for (const { child: c, parent: p } of edges) {
      if (yOf(p) === null || yOf(c) === null) continue;
      ex.push(p.number, c.number, null);
      ey.push(yOf(p), yOf(c), null);
    }
    const annotations = edges.filter((e) => yOf(e.child) !== null && yOf(e.parent) !== null).slice(0, 300).map(({ child: c, parent: p }) => {
      return { x: c.number, y: yOf(c), ax: p.number, ay: yOf(p), xref: "x", yref: "y", axref: "x", ayref: "y",
        showarrow: true, arrowhead: 2, arrowsize: 1.2, arrowwidth: 1, arrowcolor: "#64748b", standoff: 6, text: "" };
    });
    const data = [
      { type: "scatter", mode: "lines", x: ex, y: ey, line: { color: "rgba(100,116,139,0.35)", width: 1 }, hoverinfo: "skip", showlegend: false, name: "edges" },
      ...Object.keys(STATE_COLOR).map((state) => {
        const ts = placed.filter((t) => t.state === state);
        return { type: "scatter", mode: "markers+text", name: state, x: ts.map((t) => t.number), y: ts.map(yOf),
          text: ts.map((t) => `#${t.number}`), textposition: "top center", textfont: { size: 9, color: "#475569" },
          customdata: ts.map((t) => t.id), hovertext: ts.map((t) => hoverText(t, objs)), hovertemplate: "%{hovertext}<extra></extra>",
          marker: { color: STATE_COLOR[state], size: 10, line: { color: "#fff", width: 1 } } };
      }).filter((tr) => tr.x.length),
    ];
    draw(plot, data, { annotations, hovermode: "closest", xaxis: { title: { text: "trial number" }, gridcolor: "#e5e7eb", zeroline: false, tickformat: "d", dtick: Math.max(1, Math.ceil(trials.length / 20)) },
      yaxis: { title: { text: `${o.name} (${o.direction === "maximize" ? "max ↑" : "min ↓"})` }, gridcolor: "#e5e7eb" } });
    if (!bound && typeof plot.on === "function") {
      bound = true;
      plot.on("plotly_click", (ev) => { const p = ev?.points?.[0]; if (p && p.customdata) ctx.navigate(`#/trials/${p.customdata}`); });
    }
    const opt = study.spec.optimizer?.name || "?";
    const members = new Set(edges.map((e) => e.child.id)).size;
    note.textContent = edges.length
      ? `${edges.length} exploit${edges.length === 1 ? "" : "s"}: ${members} trial${members === 1 ? "" : "s"} continued from another trial's checkpoint (optimiser ${opt}); ${trials.length - placed.length} trial(s) without a value are not plotted.`
      : `No trial of this study has a parent: lineage comes from the PBT optimisers (pbt, mopbt); this study uses ${opt}.`;
    const changes = (e) => Object.entries(e.changes).map(([k, [a, b]]) => `${k}: ${fmt(a)} → ${fmt(b)}`).join("; ") || "–";
    clear(list, edges.length ? el("table", { class: "data compact" },
      el("thead", {}, el("tr", {}, ["donor", "member", "at step", "changes", "member state", o.name].map((h) => el("th", { scope: "col", text: h })))),
      el("tbody", {}, edges.map((e) => {
        const { child: c, parent: p } = e;
        return el("tr", {}, el("td", {}, el("a", { href: `#/trials/${p.id}`, text: `#${p.number}` })), el("td", {}, el("a", { href: `#/trials/${c.id}`, text: `#${c.number}` })),
          el("td", { class: "num", text: e.step === null ? "–" : String(e.step) }), el("td", { class: "small", text: changes(e) }),
          el("td", {}, stateBadge(c.state)), el("td", { class: "num", text: fmt(yOf(c)) }));
      }))) : el("p", { class: "muted", text: "No edges." }));
  }

  async function refresh() {
    const s = await get(`/studies/${id}`);
    trials = await trialsAfter(id, null);
    if (!study) {
      study = s;
      clear(head, el("div", {}, el("p", { class: "crumbs" }, el("a", { href: "#/", text: "Studies" }), " / ", el("a", { href: `#/studies/${id}`, text: s.name }), " / "),
        el("h1", { text: "PBT lineage" })));
      const select = el("select", { id: "lineage-objective" }, s.spec.objectives.map((o, i) => el("option", { value: i, text: o.name })));
      select.addEventListener("change", () => { objective = Number(select.value); drawGraph(); });
      clear(controls, el("div", { class: "field" }, el("label", { for: "lineage-objective", text: "y axis" }), select));
    }
    const next = JSON.stringify(trials.map((t) => [t.id, t.state, t.parent_id, t.values, t.lineage]));
    if (next !== sig) { sig = next; drawGraph(); }
    message.hidden = true;
    main.dataset.loaded = "true";
  }

  const stopPolling = ctx.poller(refresh, 2000, (err) => {
    message.textContent = err.status === 404 ? `Study ${id} does not exist (or is not yours).` : err.message;
    message.hidden = false;
    if (err.status === 404) stopPolling();
  });
  return () => { stopPolling(); purge(plot); };
}
