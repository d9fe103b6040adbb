// Trial page: values, learning curves from the reports (one plot per metric, a trace per
// attempt: PBT exploits and retries start a new attempt), the per-layer architecture heatmap,
// the config, lineage links, and the adapter export (GET /trials/{id}/adapter as a zip).

import { get, patch, request, trialsAfter } from "../api.js";
import { draw, paletteColor, purge } from "../charts.js";
import { heatmapFigure, layerMatrix } from "../layers.js";
import { notesPanel } from "../notes.js";
import { clear, duration, el, fmt, fmtDate, fmtSeconds, stateBadge, TERMINAL } from "../util.js";

export function render(main, [idText], ctx) {
  const id = Number(idText);
  let trial = null, study = null, siblings = [], sig = "";
  const head = el("div", { class: "page-head" });
  const message = el("p", { class: "error", role: "alert", hidden: true });
  const facts = el("div", { class: "summary", id: "trial-summary" });
  const curves = el("div", { class: "curves", id: "curves" });
  const curvesNote = el("p", { class: "muted small" });
  const heat = el("div", { class: "plot heat", id: "layers-plot", role: "img", "aria-label": "per-layer PEFT modules" });
  const heatNote = el("p", { class: "muted small" });
  const config = el("div", { class: "table-wrap" });
  const lineage = el("div", { id: "trial-lineage" });
  const exportStatus = el("p", { class: "small", id: "export-status", role: "status" });
  const notesBox = el("section", { class: "notes", id: "trial-notes-box", "aria-label": "notes and tags" });
  const notes = notesPanel(notesBox, async (body) => (trial = await patch(`/trials/${id}`, body)));
  main.append(head, message, facts, notesBox,
    el("section", { class: "card", "aria-labelledby": "curves-h" }, el("h2", { id: "curves-h", text: "Learning curves" }), curvesNote, curves),
    el("section", { class: "card", "aria-labelledby": "layers-h" }, el("h2", { id: "layers-h", text: "Architecture per layer" }), heatNote, heat),
    el("div", { class: "grid2" },
      el("section", { class: "card", "aria-labelledby": "config-h" }, el("h2", { id: "config-h", text: "Config" }), config),
      el("section", { class: "card", "aria-labelledby": "lineage-h" }, el("h2", { id: "lineage-h", text: "Lineage" }), lineage)));

  async function exportAdapter(ev) {
    const button = ev.currentTarget;
    button.disabled = true;
    exportStatus.textContent = "Preparing the adapter…";
    try {
      const resp = await request(`/trials/${id}/adapter`, { raw: true });
      const blob = await resp.blob();
      const name = /filename="([^"]+)"/.exec(resp.headers.get("Content-Disposition") || "")?.[1] || `trial-${id}-adapter.zip`;
      const url = URL.createObjectURL(blob);
      const a = el("a", { href: url, download: name, hidden: true });
      document.body.append(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(url), 10000);
      exportStatus.textContent = `Downloaded ${name} (${fmt(blob.size / 1024, 3)} KiB).`;
    } catch (err) {
      exportStatus.textContent = `Export failed: ${err.message}`;
    } finally { button.disabled = false; }
  }

  function drawHead() {
    const attached = trial.kind === "attached";  // measured elsewhere: no weights here to export
    const exportable = !attached && (trial.state === "complete" || trial.state === "pruned");
    clear(head,
      el("div", {}, el("p", { class: "crumbs" }, el("a", { href: "#/", text: "Studies" }), " / ",
        el("a", { href: `#/studies/${trial.study_id}`, text: study ? study.name : `study ${trial.study_id}` }), " / "),
      el("h1", {}, `Trial #${trial.number} `, stateBadge(trial.state))),
      el("div", { class: "actions" },
        el("button", { type: "button", id: "export-adapter", class: "primary", disabled: !exportable, onclick: exportAdapter,
          "aria-describedby": "export-status", text: "Export adapter (.zip)" }),
        exportStatus));
    const objectives = study?.spec?.objectives || [];
    const items = [["id", String(trial.id)], ["state", trial.state],
      ...(attached ? [["origin", `attached${trial.label ? ": " + trial.label : ""} (measured elsewhere, never trained here)`]] : trial.label === "enqueued" ? [["origin", "enqueued by you"]] : []),
      ...(trial.test_source === "user" ? [["test values", "reported by the user"]] : []),
      ["attempts", String(trial.attempts)],
      ["duration", fmtSeconds(duration(trial))], ["started", fmtDate(trial.started_at)], ["finished", fmtDate(trial.finished_at)]];
    const values = Object.entries(trial.values || {});
    values.sort(([a], [b]) => (objectives.findIndex((o) => o.name === b) >= 0) - (objectives.findIndex((o) => o.name === a) >= 0));
    clear(facts,
      el("dl", { class: "facts" }, items.map(([k, v]) => el("div", {}, el("dt", { text: k }), el("dd", { text: v })))),
      values.length ? el("dl", { class: "facts values", id: "trial-values" }, values.map(([k, v]) => {
        const o = objectives.find((x) => x.name === k);
        return el("div", {}, el("dt", { text: o ? `${k} ${o.direction === "maximize" ? "↑" : "↓"}` : k }), el("dd", { class: o ? "objective" : null, dataset: { value: k }, text: fmt(v, 6) }));
      })) : el("p", { class: "muted", text: "No values yet." }),
      trial.error ? el("pre", { class: "error-box", text: trial.error }) : null);
    if (attached) exportStatus.textContent = "An attached result was measured elsewhere: the service has no adapter of it to export.";
    else if (!exportable) exportStatus.textContent = "The adapter can be exported once the trial has finished.";
  }

  function drawConfig() {
    const rows = Object.entries(trial.config || {}).sort(([a], [b]) => a.localeCompare(b, "en", { numeric: true }));
    clear(config, el("table", { class: "data compact", id: "config-table" }, el("caption", { class: "sr-only", text: "Config" }),
      el("thead", {}, el("tr", {}, el("th", { scope: "col", text: "key" }), el("th", { scope: "col", text: "value" }))),
      el("tbody", {}, rows.map(([k, v]) => el("tr", {}, el("th", { scope: "row" }, el("code", { text: k })), el("td", { class: "num", text: fmt(v, 6) }))))));
    const matrix = layerMatrix(trial.config, study?.spec?.num_layers || null);
    if (!matrix) {
      purge(heat);
      clear(heat, el("p", { class: "muted", text: "This config has no per-layer PEFT module (no lora.rank, serial.size, parallel.size, prefix.length or ia3.targets key)." }));
      heatNote.textContent = "";
      return;
    }
    const fig = heatmapFigure(matrix);
    draw(heat, fig.data, fig.layout, { displayModeBar: false });
    const off = matrix.on.filter((x) => !x).length;
    heatNote.textContent = `${matrix.layers.length} layer${matrix.layers.length === 1 ? "" : "s"}${off ? `, ${off} masked off (grey)` : ""}; darker = larger relative to the row's largest value.`;
  }

  function drawLineage() {
    const parent = trial.parent_id ? siblings.find((t) => t.id === trial.parent_id) : null;
    const children = siblings.filter((t) => t.parent_id === trial.id);
    clear(lineage,
      el("p", {}, "Parent: ", trial.parent_id ? el("a", { href: `#/trials/${trial.parent_id}`, text: parent ? `trial #${parent.number}` : `trial id ${trial.parent_id}` }) : "none"),
      el("p", {}, "Children: ", children.length ? children.flatMap((c, i) => [i ? ", " : "", el("a", { href: `#/trials/${c.id}`, text: `#${c.number}` })]) : "none"),
      el("p", {}, el("a", { href: `#/studies/${trial.study_id}/lineage`, text: "Lineage of the study" })));
  }

  function drawCurves(reports) {
    for (const node of curves.querySelectorAll(".plot")) purge(node);
    if (!reports.length) { clear(curves); curvesNote.textContent = "No report yet."; return; }
    const metrics = [...new Set(reports.flatMap((r) => Object.keys(r.values || {})))];
    const attempts = [...new Set(reports.map((r) => r.attempt))].sort((a, b) => a - b);
    curvesNote.textContent = `${reports.length} report${reports.length === 1 ? "" : "s"}` + (attempts.length > 1 ? `, ${attempts.length} attempts (a PBT exploit or a retry starts a new one)` : "") + ".";
    clear(curves, metrics.map((m) => el("figure", {}, el("div", { class: "plot curve", dataset: { metric: m }, role: "img", "aria-label": `learning curve of ${m}` }), el("figcaption", { text: m }))));
    metrics.forEach((m, mi) => {
      const data = attempts.map((a, ai) => {
        const rs = reports.filter((r) => r.attempt === a && r.values && r.values[m] !== undefined);
        return { type: "scatter", mode: rs.length > 1 ? "lines+markers" : "markers", name: `attempt ${a}`, x: rs.map((r) => r.step), y: rs.map((r) => r.values[m]),
          marker: { size: 6, symbol: rs.map((r) => (r.decision === "exploit" ? "star" : r.decision === "stop" ? "x" : "circle")) },
          line: { color: paletteColor(attempts.length > 1 ? ai : mi) }, text: rs.map((r) => `step ${r.step} · ${m} ${fmt(r.values[m], 6)} · ${r.decision}`),
          hovertemplate: "%{text}<extra></extra>" };
      });
      draw(curves.children[mi].firstChild, data, { height: 220, margin: { l: 56, r: 12, t: 8, b: 40 }, showlegend: attempts.length > 1,
        xaxis: { title: { text: "step" }, gridcolor: "#e5e7eb", zeroline: false }, yaxis: { gridcolor: "#e5e7eb", zeroline: false } }, { displayModeBar: false });
    });
  }

  async function refresh() {
    const t = await get(`/trials/${id}`);
    if (!study) study = await get(`/studies/${t.study_id}`);
    const reports = (await get(`/trials/${id}/reports`)).reports;
    siblings = await trialsAfter(t.study_id, null);
    const nextSig = JSON.stringify([t, reports.length, siblings.map((s) => s.parent_id)]);
    trial = t;
    notes.show(t);
    if (nextSig === sig) return;
    sig = nextSig;
    drawHead(); drawConfig(); drawLineage(); drawCurves(reports);
    message.hidden = true;
    main.dataset.loaded = "true";
    if (TERMINAL.has(t.state)) stopPolling();
  }

  const stopPolling = ctx.poller(refresh, 1500, (err) => {
    message.textContent = err.status === 404 ? `Trial ${id} does not exist (or is not yours).` : err.message;
    message.hidden = false;
    if (err.status === 404) stopPolling();
  });
  return () => { stopPolling(); purge(heat); for (const node of curves.querySelectorAll(".plot")) purge(node); };
}
