// Study page: Pareto front, hypervolume over trials and over time, the trials table. Live:
// every 1.5 s it reads the study, then the trials from the first unfinished one on
// (`?after=`), so new trials and state changes both arrive; the front and hypervolume are
// refetched when the set of complete trials changed.

import { get, patch, post, trialsAfter } from "../api.js";
import { draw, hasWebGL, hypervolumeFigures, parallelFigure, paretoFigure, purge, scaleToggles } from "../charts.js";
import { notesPanel } from "../notes.js";
import { hypervolumeHistory } from "../pareto.js";
import { clear, el, fmt, fmtDate, stateBadge, TERMINAL } from "../util.js";
import { trialsTable } from "./trials_table.js";

export function render(main, [idText], ctx) {
  const id = Number(idText);
  const trials = new Map();
  let study = null, pareto = null, paretoTest = null, hv = null, hvTest = null, table = null, completeSig = "", studySig = "";
  const view = { x: 0, y: 1, z: 2, mode: "2d" };
  const scales = {};   // objective name -> "linear" | "log" chosen with the scale toggles (else automatic)

  const head = el("div", { class: "page-head" });
  const summary = el("div", { class: "summary", id: "study-summary" });
  const message = el("p", { class: "error", role: "alert", hidden: true });
  const notesBox = el("section", { class: "notes", id: "study-notes-box", "aria-label": "notes and tags" });
  const notes = notesPanel(notesBox, async (body) => (study = await patch(`/studies/${id}`, body)));
  const paretoControls = el("div", { class: "controls", id: "pareto-controls" });
  const scaleControls = el("div", { class: "scale-toggles", id: "pareto-scales", role: "group", "aria-label": "axis scales" });
  const paretoPlot = el("div", { class: "plot", id: "pareto-plot", role: "img", "aria-label": "Pareto front scatter plot" });
  const paretoNote = el("p", { class: "muted small", id: "pareto-note" });
  const hvText = el("p", { class: "small", id: "hv-summary" });
  const hvTrials = el("div", { class: "plot small-plot", id: "hv-trials", role: "img", "aria-label": "hypervolume over complete trials" });
  const hvTime = el("div", { class: "plot small-plot", id: "hv-time", role: "img", "aria-label": "hypervolume over time" });
  const impText = el("p", { class: "small muted", id: "importance-summary" });
  const impPlot = el("div", { class: "plot", id: "importance-plot", role: "img", "aria-label": "importance of each searched parameter per objective" });
  let importance = null;
  const tableSlot = el("div");
  main.append(head, message, summary, notesBox,
    el("section", { class: "card", "aria-labelledby": "pareto-h" }, el("h2", { id: "pareto-h", text: "Pareto front" }), paretoControls, scaleControls, paretoPlot, paretoNote),
    el("section", { class: "card", "aria-labelledby": "hv-h" }, el("h2", { id: "hv-h", text: "Hypervolume" }), hvText,
      el("div", { class: "grid2" }, el("figure", {}, hvTrials, el("figcaption", { text: "over complete trials" })), el("figure", {}, hvTime, el("figcaption", { text: "over time" })))),
    el("section", { class: "card", "aria-labelledby": "importance-h" }, el("h2", { id: "importance-h", text: "Which parameters matter" }), impText, impPlot),
    el("section", { class: "card", "aria-labelledby": "trials-h" }, el("h2", { id: "trials-h", text: "Trials" }), tableSlot));

  let clickBound = false;
  function bindClick() {
    if (clickBound || typeof paretoPlot.on !== "function") return;
    clickBound = true;
    paretoPlot.on("plotly_click", (ev) => {
      const p = ev?.points?.[0];
      if (p && p.customdata !== undefined && p.customdata !== null) ctx.navigate(`#/trials/${p.customdata}`);
    });
  }

  function objectives() { return study?.spec?.objectives || []; }

  function drawHead() {
    const s = study;
    const actions = el("div", { class: "actions" },
      el("a", { class: "button", href: `#/studies/${id}/lineage`, text: "Lineage" }),
      s.state === "running" ? el("button", { type: "button", id: "stop-study", text: "Stop study", onclick: stop }) : null,
      s.state === "stopped" ? el("button", { type: "button", id: "resume-study", text: "Resume", onclick: resume }) : null);
    clear(head, el("div", {}, el("p", { class: "crumbs" }, el("a", { href: "#/", text: "Studies" }), " / "),
      el("h1", {}, s.name, " ", stateBadge(s.state))), actions);
    const c = s.counts || {};
    const spec = s.spec || {};
    const opt = spec.optimizer || {};
    const items = [
      ["trials", `${(c.complete || 0) + (c.failed || 0) + (c.pruned || 0)} done / ${spec.max_trials ?? "?"}`],
      ["running", String((c.running || 0) + (c.queued || 0))],
      ["complete", String(c.complete || 0)], ["failed", String(c.failed || 0)], ["pruned", String(c.pruned || 0)],
      ["optimiser", opt.name || "?"], ["space", typeof spec.space === "string" ? spec.space : "inline"],
      ["workload", spec.workload?.kind === "python" ? spec.workload.entrypoint : `${spec.workload?.kind || "?"} ${spec.workload?.model || ""} ${spec.workload?.dataset || ""}`.trim()],
      ["parallel", String(spec.max_parallel ?? 1)],
      ["compute", `${fmt([...trials.values()].reduce((a, t) => a + (t.epochs_trained || 0), 0), 3)}${spec.max_epochs ? ` / ${spec.max_epochs}` : ""} epochs`],
      ["baselines", (spec.baselines || []).map((b) => (typeof b === "string" ? b : b.name + " (yours)")).join(", ") || "none"], ["created", fmtDate(s.created_at)],
    ];
    clear(summary, el("dl", { class: "facts" }, items.map(([k, v]) => el("div", {}, el("dt", { text: k }), el("dd", { text: v, dataset: { fact: k } })))),
      s.message ? el("p", { class: "muted", text: s.message }) : null);
  }

  async function stop(ev) {
    ev.target.disabled = true;
    try { study = await post(`/studies/${id}/stop`); studySig = ""; await refresh(); } catch (err) { showError(err); ev.target.disabled = false; }
  }
  async function resume(ev) {
    ev.target.disabled = true;
    try { study = await post(`/studies/${id}/resume`); studySig = ""; await refresh(); } catch (err) { showError(err); ev.target.disabled = false; }
  }
  function showError(err) { message.textContent = typeof err === "string" ? err : err.message; message.hidden = false; }

  function drawControls() {
    const objs = objectives();
    if (objs.length <= 2 || paretoControls.childElementCount) return;
    const select = (name, label, key) => {
      const s = el("select", { id: `pareto-${name}` }, objs.map((o, i) => el("option", { value: i, text: o.name, selected: i === view[key] })));
      s.addEventListener("change", () => { view[key] = Number(s.value); drawPareto(); });
      return el("div", { class: "field" }, el("label", { for: `pareto-${name}`, text: label }), s);
    };
    const modes = [["2d", "2-D scatter"], ["3d", "3-D scatter"], ["parallel", "Parallel coordinates"]];
    const webgl = hasWebGL();
    const fieldset = el("fieldset", { class: "modes" }, el("legend", { text: "View" }),
      modes.map(([value, label]) => {
        const disabled = value === "3d" && !webgl;
        const input = el("input", { type: "radio", name: "pareto-mode", id: `mode-${value}`, value, checked: view.mode === value, disabled });
        input.addEventListener("change", () => { view.mode = value; drawPareto(); });
        return el("span", { class: "radio" }, input, el("label", { for: `mode-${value}`, text: label + (disabled ? " (needs WebGL)" : "") }));
      }));
    clear(paretoControls, fieldset, select("x", "x axis", "x"), select("y", "y axis", "y"), objs.length > 2 ? select("z", "z axis (3-D)", "z") : null);
  }

  function completeTrials() {
    const objs = objectives();
    return [...trials.values()].filter((t) => t.state === "complete" && t.values && objs.every((o) => Number.isFinite(t.values[o.name])));
  }

  function drawPareto() {
    const objs = objectives();
    const complete = completeTrials();
    const front = pareto?.trials || [];
    let fig;
    if (objs.length === 1) {
      const o = objs[0];
      fig = paretoFigure({ complete: complete.map((t) => ({ ...t, values: { ...t.values, "trial number": t.number } })),
        front: front.map((t) => ({ ...t, values: { ...t.values, "trial number": t.number } })),
        objectives: [{ name: "trial number", direction: "minimize" }, o], x: 0, y: 1, scales });
    } else if (view.mode === "parallel") {
      fig = parallelFigure({ complete, front, objectives: objs });
    } else {
      fig = paretoFigure({ complete, front, objectives: objs, x: view.x, y: view.y, z: view.mode === "3d" && objs.length > 2 ? view.z : null,
        test: paretoTest?.trials || null, scales });
    }
    scaleToggles(scaleControls, fig.axes || [], (axis, next) => { scales[axis.name] = next; drawPareto(); }, "pareto-scale");
    if (!complete.length) fig.layout.annotations = [{ text: "no complete trial yet", showarrow: false, xref: "paper", yref: "paper", x: 0.5, y: 0.5, font: { size: 14, color: "#6b7280" } }];
    paretoPlot.dataset.mode = objs.length > 2 ? view.mode : "2d";
    draw(paretoPlot, fig.data, fig.layout);
    bindClick();
    const nTested = (paretoTest?.trials || []).filter((t) => t.values).length;
    const nInfeasible = complete.filter((t) => t.feasible === false).length;
    paretoNote.textContent = `${front.length} trial${front.length === 1 ? "" : "s"} on the front of ${complete.length - nInfeasible} feasible complete, selected on the validation split` +
      (nInfeasible ? `; grey crosses: ${nInfeasible} infeasible (they violate a constraint, never on the front)` : "") +
      (nTested ? `; open circles: the same trials on the held-out test split (${nTested} evaluated)` : "") +
      (complete.some((t) => t.kind === "baseline") ? "; diamonds: hand-picked baselines" : "") +
      (objs.length > 2 && view.mode === "2d" ? "; faded points are dominated in all objectives, not only the two shown" : "") + ". Click a point to open its trial.";
  }

  function drawHypervolume() {
    const objs = objectives();
    const history = hv && hv.n_complete ? hypervolumeHistory([...trials.values()], objs, hv.reference_point) : [];
    const figs = hypervolumeFigures(history);
    draw(hvTrials, figs.trials.data, figs.trials.layout);
    draw(hvTime, figs.time.data, figs.time.layout);
    if (!hv) return;
    const ref = hv.reference_point ? Object.entries(hv.reference_point).map(([k, v]) => `${k} ${fmt(v)}`).join(", ") : "–";
    clear(hvText, el("strong", { id: "hv-value", text: fmt(hv.hypervolume, 6) }), " on validation",
      hvTest && hvTest.hypervolume ? [", ", el("strong", { id: "hv-test-value", text: fmt(hvTest.hypervolume, 6) }), " on the held-out test split"] : "",
      ` with ${hv.n_pareto} of ${hv.n_complete} complete feasible trials on the front` +
      (hv.n_infeasible ? ` (${hv.n_infeasible} infeasible left out)` : "") + `; reference point: ${ref}. `,
      el("span", { class: "muted", text: "The history is recomputed here against this reference point." }));
  }

  // Importance of each searched parameter per objective (GET .../importance: Optuna's fANOVA over
  // the complete search trials): one bar group per parameter, most important first.
  function drawImportance() {
    if (!importance) return;
    const objs = Object.keys(importance.objectives);
    const params = [...new Set(objs.flatMap((o) => Object.keys(importance.objectives[o] || {})))];
    const top = (p) => Math.max(...objs.map((o) => (importance.objectives[o] || {})[p] || 0));
    params.sort((a, b) => top(b) - top(a));
    const shown = params.slice(0, 12);
    impText.textContent = importance.reason
      ? `Not yet: ${importance.reason} (${importance.n_trials} so far).`
      : `fANOVA (Optuna) over ${importance.n_trials} complete search trials: each parameter's share of an objective's variance` +
        (params.length > shown.length ? `; the ${shown.length} most important of ${params.length} shown` : "") +
        (importance.excluded.length ? `; left out (not in every trial): ${importance.excluded.length} conditional parameter${importance.excluded.length === 1 ? "" : "s"}` : "") + ".";
    impPlot.hidden = !!importance.reason;
    if (importance.reason) { purge(impPlot); return; }
    const data = objs.filter((o) => importance.objectives[o]).map((o) => ({
      type: "bar", orientation: "h", name: o, y: shown, x: shown.map((p) => importance.objectives[o][p] || 0),
      hovertemplate: `${o}: %{y} %{x:.3f}<extra></extra>`,
    }));
    const height = Math.max(220, 90 + 28 * shown.length);
    impPlot.style.height = `${height}px`;  // the card grows with the bars (nothing drawn over the next card)
    draw(impPlot, data, { barmode: "group", xaxis: { title: { text: "importance (share of variance)" }, range: [0, 1], gridcolor: "#e5e7eb" },
      yaxis: { autorange: "reversed", automargin: true }, legend: { orientation: "h", x: 0, y: 1, yanchor: "bottom" }, margin: { t: 30 }, height });
  }

  function nextAfter() {
    if (!trials.size) return null;
    let minOpen = Infinity, maxId = 0;
    for (const t of trials.values()) {
      maxId = Math.max(maxId, t.id);
      if (!TERMINAL.has(t.state)) minOpen = Math.min(minOpen, t.id);
    }
    return minOpen === Infinity ? maxId : minOpen - 1;
  }

  async function refresh() {
    const s = await get(`/studies/${id}`);
    const fresh = await trialsAfter(id, nextAfter());
    let changed = false;
    for (const t of fresh) {
      const old = trials.get(t.id);
      if (!old || JSON.stringify(old) !== JSON.stringify(t)) { trials.set(t.id, t); changed = true; }
    }
    const cSig = [...trials.values()].filter((t) => t.state === "complete").map((t) => `${t.id}:${t.test_values ? 1 : 0}`).join(",");
    if (cSig !== completeSig || !pareto) {
      [pareto, hv, paretoTest, hvTest, importance] = await Promise.all([get(`/studies/${id}/pareto`), get(`/studies/${id}/hypervolume`),
        get(`/studies/${id}/pareto?split=test`), get(`/studies/${id}/hypervolume?split=test`), get(`/studies/${id}/importance`).catch(() => null)]);
      completeSig = cSig;
      changed = true;
    }
    study = s;
    const sSig = JSON.stringify([s.state, s.counts, s.message, s.name, [...trials.values()].reduce((a, t) => a + (t.epochs_trained || 0), 0)]);
    if (sSig !== studySig) { studySig = sSig; drawHead(); }
    notes.show(study);
    if (!table) {
      const constrained = (study?.spec?.optimizer?.options?.constraints || []).length > 0;
      table = trialsTable(objectives(), { constraints: constrained });
      tableSlot.append(table.node); drawControls(); changed = true;
    }
    if (changed) {
      drawPareto();
      drawHypervolume();
      drawImportance();
      table.update([...trials.values()], pareto.trials);
    }
    message.hidden = true;
    main.dataset.loaded = "true";
  }

  const stopPolling = ctx.poller(refresh, 1500, (err) => {
    showError(err.status === 404 ? `Study ${id} does not exist (or is not yours).` : err);
    if (err.status === 404) stopPolling();
  });
  return () => { stopPolling(); purge(paretoPlot); purge(hvTrials); purge(hvTime); purge(impPlot); };
}
