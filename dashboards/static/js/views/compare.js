// Compare studies (#/compare/1,2,...): their validation fronts on one plot (first objective
// against the second) and their hypervolume against compute (training epochs used), all against
// one reference point (GET /studies/compare). Studies must share their objectives. The fronts' axes
// take the study page's automatic scale (log where positive values span two decades or more) and a
// linear / log toggle each.

import { get } from "../api.js";
import { axisScale, draw, paletteColor, purge, scaleToggles, scaledAxis } from "../charts.js";
import { clear, el, fmt } from "../util.js";

const axis = (o) => `${o.name} (${o.direction === "maximize" ? "max ↑" : "min ↓"})`;

export function render(main, [idsText], ctx) {
  const ids = idsText.split(",").map(Number).filter((n) => Number.isInteger(n) && n > 0);
  const message = el("p", { class: "error", role: "alert", hidden: true });
  const scaleControls = el("div", { class: "scale-toggles", id: "compare-scales", role: "group", "aria-label": "axis scales" });
  const fronts = el("div", { class: "plot", id: "compare-fronts", role: "img", "aria-label": "fronts of the compared studies" });
  const hv = el("div", { class: "plot", id: "compare-hv", role: "img", "aria-label": "hypervolume against compute" });
  const body = el("tbody");
  const note = el("p", { class: "muted small", id: "compare-reference" });
  main.append(
    el("div", { class: "page-head" }, el("h1", { text: "Compare studies" }), el("a", { href: "#/", text: "All studies" })),
    message,
    el("section", { class: "card", "aria-labelledby": "cmp-front-h" }, el("h2", { id: "cmp-front-h", text: "Validation fronts" }), scaleControls, fronts),
    el("section", { class: "card", "aria-labelledby": "cmp-hv-h" }, el("h2", { id: "cmp-hv-h", text: "Hypervolume against compute" }), note, hv),
    el("section", { class: "card" }, el("div", { class: "table-wrap" }, el("table", { class: "data", id: "compare-table" },
      el("thead", {}, el("tr", {}, ...["Study", "State", "Front", "Epochs", "Hypervolume"].map((h) => el("th", { scope: "col", text: h })))), body))));

  let sig = "", last = null;
  const scales = {};   // objective name -> "linear" | "log" from the toggles (else automatic)
  async function refresh() {
    const query = ids.map((i) => `ids=${i}`).join("&");
    const result = await get(`/studies/compare?${query}`);
    message.hidden = true;
    const now = JSON.stringify(result.studies.map((s) => [s.id, s.history.length, s.state]));
    if (now === sig) return;
    sig = now;
    last = result;
    drawFronts();
    draw(hv, result.studies.map((s, i) => ({ type: "scatter", mode: "lines+markers", name: `${s.name} #${s.id}`,
      line: { shape: "hv", color: paletteColor(i) }, marker: { size: 5 },
      x: s.history.map((h) => (result.studies.some((x) => x.compute > 0) ? h.compute : h.n)), y: s.history.map((h) => h.hypervolume) })),
    { xaxis: { title: { text: result.studies.some((x) => x.compute > 0) ? "compute (training epochs)" : "complete trials" }, gridcolor: "#e5e7eb", rangemode: "tozero" },
      yaxis: { title: { text: "hypervolume" }, gridcolor: "#e5e7eb" } });
    note.textContent = result.reference_point ? `One reference point for all: ${Object.entries(result.reference_point).map(([k, v]) => `${k} ${fmt(v)}`).join(", ")}.` : "No complete trial yet.";
    clear(body, result.studies.map((s) => el("tr", { dataset: { studyId: s.id } },
      el("th", { scope: "row" }, el("a", { href: `#/studies/${s.id}`, text: s.name }), el("span", { class: "muted small", text: ` #${s.id}` })),
      el("td", { text: s.state }), el("td", { class: "num", text: String(s.front.length) }),
      el("td", { class: "num", text: fmt(s.compute) }), el("td", { class: "num", text: fmt(s.hypervolume, 5) }))));
  }

  // The fronts (first objective against the second), each axis on its automatic or chosen scale.
  function drawFronts() {
    const result = last;
    const [o1, o2] = result.objectives;
    const traces = result.studies.map((s, i) => {
      const ts = [...s.front].sort((a, b) => (o2 ? a.values[o2.name] - b.values[o2.name] : 0));
      return { type: "scatter", mode: "lines+markers", name: `${s.name} #${s.id}`, line: { shape: "hv", color: paletteColor(i) },
        marker: { size: 8, color: paletteColor(i) }, x: ts.map((t) => (o2 ? t.values[o2.name] : t.number)), y: ts.map((t) => t.values[o1.name]),
        customdata: ts.map((t) => t.id), hovertemplate: `study #${s.id}, trial %{customdata}<br>%{x}, %{y}<extra></extra>` };
    });
    const values = (k) => traces.flatMap((t) => (k === "x" ? t.x : t.y));
    const axes = [{ key: "x", name: o2 ? o2.name : "trial number", title: o2 ? axis(o2) : "trial number" }, { key: "y", name: o1.name, title: axis(o1) }]
      .map((a) => ({ ...a, ...axisScale(values(a.key), scales[a.name]) }));
    draw(fronts, traces, { xaxis: { ...scaledAxis(axes[0].title, axes[0].type), gridcolor: "#e5e7eb" },
      yaxis: { ...scaledAxis(axes[1].title, axes[1].type), gridcolor: "#e5e7eb" } });
    scaleToggles(scaleControls, axes, (a, next) => { scales[a.name] = next; drawFronts(); }, "compare-scale");
  }

  const stop = ctx.poller(refresh, 3000, (err) => { message.textContent = `Could not compare: ${err.message}`; message.hidden = false; });
  return () => { stop(); purge(fronts); purge(hv); };
}
