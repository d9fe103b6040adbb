// Plotly figures. plotly.js is the bundle of the installed `plotly` PyPI package, served at
// /static/vendor/plotly.min.js (no CDN). Only SVG trace types are used by default; the 3-D
// view (WebGL) is offered only where the browser has WebGL.

import { el, fmt, hoverText } from "./util.js";

export const COLORS = { front: "#1d4ed8", dominated: "#94a3b8", infeasible: "#9ca3af", line: "#1d4ed8", accent: "#b45309" };
const PALETTE = ["#1d4ed8", "#b45309", "#047857", "#9333ea", "#be123c", "#0e7490", "#4d7c0f", "#6b7280"];
export const paletteColor = (i) => PALETTE[i % PALETTE.length];

export function plotlyReady() { return typeof window.Plotly !== "undefined"; }

export function missingPlotly(node) {
  node.replaceChildren(el("p", { class: "error", text: "plotly.js is not available: install the `plotly` Python package on the server (its plotly.min.js is served at /static/vendor/plotly.min.js)." }));
}

let webgl = null;
export function hasWebGL() {
  if (webgl === null) {
    try {
      const c = document.createElement("canvas");
      webgl = !!(window.WebGLRenderingContext && (c.getContext("webgl") || c.getContext("experimental-webgl")));
    } catch { webgl = false; }
  }
  return webgl;
}

const BASE_LAYOUT = {
  margin: { l: 64, r: 16, t: 24, b: 52 },
  font: { family: "system-ui, -apple-system, Segoe UI, Roboto, sans-serif", size: 12, color: "#1f2937" },
  paper_bgcolor: "rgba(0,0,0,0)",
  plot_bgcolor: "#ffffff",
  hoverlabel: { align: "left", bgcolor: "#ffffff", bordercolor: "#cbd5e1", font: { size: 11 } },
  legend: { orientation: "h", y: -0.2 },
};
const CONFIG = { responsive: true, displaylogo: false, modeBarButtonsToRemove: ["select2d", "lasso2d", "toImage"] };

export function draw(node, data, layout = {}, config = {}) {
  if (!plotlyReady()) return missingPlotly(node);
  const full = { ...BASE_LAYOUT, ...layout };
  return window.Plotly.react(node, data, full, { ...CONFIG, ...config });
}

export function purge(node) { if (plotlyReady() && node) window.Plotly.purge(node); }

const axisTitle = (o) => `${o.name} (${o.direction === "maximize" ? "max ↑" : "min ↓"})`;

// A log axis when an objective's values are all positive and span two decades or more (trainable
// parameters with full fine-tuning beside adapters: 1k ... 22M), else linear.
export function axisType(values) {
  const v = values.filter((x) => Number.isFinite(x));
  if (!v.length || v.some((x) => x <= 0)) return "linear";
  return Math.max(...v) / Math.min(...v) >= 100 ? "log" : "linear";
}

// The scale of one axis: the user's choice (`chosen`, "linear" | "log", from a toggle) else the
// automatic one; log only where every value is positive (a log axis cannot place 0 or less).
export function axisScale(values, chosen) {
  const v = values.filter((x) => Number.isFinite(x));
  const canLog = v.length > 0 && v.every((x) => x > 0);
  const auto = axisType(v);
  const type = chosen === "log" && canLog ? "log" : chosen === "linear" ? "linear" : auto;
  return { type, auto, canLog, chosen: chosen === "log" || chosen === "linear" ? chosen : null };
}

// Plotly axis settings of a scale; the title says "log scale" when it is one.
export function scaledAxis(title, type) {
  return type === "log"
    ? { title: { text: `${title}, log scale` }, type: "log", dtick: "D2" }  // 1, 2, 5 ticks a decade
    : { title: { text: title }, type: "linear" };
}

// Linear / log toggles, one button per axis (`axes`: [{key, name, type, auto, canLog}]): a button
// shows the axis's scale and flips it (aria-pressed: log). `onToggle(axis, nextType)`.
export function scaleToggles(node, axes, onToggle, idPrefix = "scale") {
  const buttons = axes.map((a) => {
    const log = a.type === "log";
    return el("button", {
      type: "button", id: `${idPrefix}-${a.key}`, class: "scale-toggle", "aria-pressed": log ? "true" : "false",
      dataset: { axis: a.key, scale: a.type }, disabled: !a.canLog && !log,
      "aria-label": `log scale on ${a.key} (${a.name})`,
      title: a.canLog ? `${a.name}: ${a.type} scale${a.chosen ? "" : " (automatic)"}; click for ${log ? "linear" : "log"}`
        : `${a.name}: a log scale needs positive values`,
      text: `${a.key} · ${a.name}: ${log ? "log" : "linear"}`,
      onclick: () => onToggle(a, log ? "linear" : "log"),
    });
  });
  const focused = node.contains(document.activeElement) ? document.activeElement.id : null;
  node.replaceChildren(...(buttons.length ? [el("span", { class: "muted small", text: "Scale" }), ...buttons] : []));
  node.hidden = !buttons.length;
  if (focused) document.getElementById(focused)?.focus();   // a redraw keeps the keyboard where it was
}

// Pareto scatter: the front from /pareto (trace "Pareto front"), every other complete trial
// faded (trace "dominated"), baselines as labelled diamonds (trace "baselines"), and, when
// given, the front's trials at their held-out test values (trace "front on test split", open
// circles: the same trials, selected on validation). Trials that violate a constraint of the study
// (feasible === false) are never on the front: grey crosses (trace "infeasible"), the reason in
// their hover text. customdata = trial id, for clicks. In 2-D, a front point's share objectives
// (accuracy, exact_match) carry their 95% interval on that split as error bars (/pareto's
// intervals): points whose bars overlap are not told apart by the split. With replicates a
// front point is its seed mean (its replicate runs are not plotted apart), and the points that
// cannot be told apart from the best (tied_with_best) have a dark outline. An attached result
// (kind "attached": measured elsewhere, never trained here) is a star in whichever trace it falls.
// `scales` (objective name -> "linear" | "log") overrides the automatic axis choice; the figure's
// `axes` say which scale each axis got, for the toggles.
export function paretoFigure({ complete, front, objectives, x, y, z = null, test = null, scales = {} }) {
  const frontIds = new Set(front.map((t) => t.id));
  const validationIntervals = new Map(front.map((t) => [t.id, t.intervals]));
  complete = complete.filter((t) => t.kind !== "replicate");
  const infeasible = complete.filter((t) => t.feasible === false);
  complete = complete.filter((t) => t.feasible !== false);
  const dominated = complete.filter((t) => !frontIds.has(t.id) && t.kind !== "baseline");
  const baselines = complete.filter((t) => t.kind === "baseline");
  const ox = objectives[x], oy = objectives[y], oz = z === null ? null : objectives[z];
  const point = (ts, name, style) => {
    const trace = {
      type: oz ? "scatter3d" : "scatter", mode: "markers", name,
      x: ts.map((t) => t.values[ox.name]), y: ts.map((t) => t.values[oy.name]),
      customdata: ts.map((t) => t.id), text: ts.map((t) => hoverText(t, objectives)),
      hovertemplate: "%{text}<extra></extra>", marker: style,
    };
    if (ts.some((t) => t.kind === "attached") && !style.symbol) {  // measured elsewhere: a star (3-D: a diamond)
      trace.marker = { ...style, symbol: ts.map((t) => (t.kind === "attached" ? (oz ? "diamond" : "star") : "circle")) };
    }
    if (oz) trace.z = ts.map((t) => t.values[oz.name]);
    else {
      const ex = errorBars(ts, ox, validationIntervals), ey = errorBars(ts, oy, validationIntervals);
      if (ex) trace.error_x = ex;
      if (ey) trace.error_y = ey;
    }
    return trace;
  };
  const data = [
    point(dominated, "dominated", { color: COLORS.dominated, opacity: 0.35, size: oz ? 4 : 8 }),
    ...(infeasible.length ? [point(infeasible, "infeasible (violates a constraint)", { color: COLORS.infeasible, opacity: 0.6, symbol: oz ? "x" : "x-thin-open", size: oz ? 4 : 9, line: { color: COLORS.infeasible, width: 1.5 } })] : []),
    point(front.filter((t) => t.kind !== "baseline"), "Pareto front", { color: COLORS.front, size: oz ? 5 : 11, line: tieOutline(front.filter((t) => t.kind !== "baseline")) }),
  ];
  if (baselines.length) {
    const b = point(baselines, "baselines", { color: COLORS.accent, symbol: "diamond", size: oz ? 5 : 12, line: { color: "#ffffff", width: 1 } });
    if (!oz) { b.mode = "markers+text"; b.textposition = "top center"; b.texttemplate = baselines.map((t) => t.label || "baseline"); b.textfont = { size: 10, color: COLORS.accent }; }
    data.push(b);
  }
  const tested = (test || []).filter((t) => t.values && Number.isFinite(t.values[ox.name]) && Number.isFinite(t.values[oy.name]));
  if (tested.length && !oz) data.push(point(tested, "front on test split", { color: COLORS.front, symbol: "circle-open", size: 10, line: { width: 2 } }));
  if (!oz && objectives.length === 2 && front.length > 1) {
    const sorted = [...front].sort((a, b) => a.values[ox.name] - b.values[ox.name]);
    data.push({ type: "scatter", mode: "lines", name: "front", x: sorted.map((t) => t.values[ox.name]),
      y: sorted.map((t) => t.values[oy.name]), line: { color: COLORS.line, width: 1, dash: "dot", shape: ox.direction === "maximize" ? "vh" : "hv" },
      hoverinfo: "skip", showlegend: false });
  }
  const shown = [...complete, ...(tested || [])];
  const axes = [["x", ox], ["y", oy], ...(oz ? [["z", oz]] : [])].map(([key, o]) =>
    ({ key, name: o.name, ...axisScale(shown.map((t) => t.values[o.name]), scales[o.name]) }));
  const axis = (i) => scaledAxis(axisTitle([ox, oy, oz][i]), axes[i].type);
  const layout = oz
    ? { scene: { xaxis: axis(0), yaxis: axis(1), zaxis: axis(2) }, margin: { l: 0, r: 0, t: 0, b: 0 } }
    : { xaxis: { ...axis(0), zeroline: false, gridcolor: "#e5e7eb" },
        yaxis: { ...axis(1), zeroline: false, gridcolor: "#e5e7eb" }, hovermode: "closest" };
  return { data, layout, axes };
}

// Marker outlines: dark and thick for points tied with the best at 95%, else thin white.
function tieOutline(ts) {
  return {
    color: ts.map((t) => (t.tied_with_best ? "#111827" : "#ffffff")),
    width: ts.map((t) => (t.tied_with_best ? 2.5 : 1)),
  };
}

// Asymmetric error bars of objective o from each trial's own intervals (else the validation
// front's, by id); null when no trial of ts has one.
function errorBars(ts, o, byId) {
  const iv = ts.map((t) => (t.intervals || byId.get(t.id) || {})[o.name]);
  if (!iv.some(Boolean)) return null;
  return {
    type: "data", symmetric: false, thickness: 1, width: 3, color: "#64748b",
    array: iv.map((v, i) => (v ? v.high - ts[i].values[o.name] : 0)),
    arrayminus: iv.map((v, i) => (v ? ts[i].values[o.name] - v.low : 0)),
  };
}

// Parallel coordinates drawn with SVG line traces (plotly's parcoords needs WebGL): one line per
// complete trial over the objectives, each axis scaled to [0, 1] with its range annotated.
export function parallelFigure({ complete, front, objectives }) {
  complete = complete.filter((t) => t.feasible !== false);   // infeasible trials: only in the scatter and the table
  const frontIds = new Set(front.map((t) => t.id));
  const ranges = objectives.map((o) => {
    const vs = complete.map((t) => t.values[o.name]);
    return [Math.min(...vs), Math.max(...vs)];
  });
  const scale = (v, [lo, hi]) => (hi > lo ? (v - lo) / (hi - lo) : 0.5);
  const xs = objectives.map((_, i) => i);
  const line = (t, onFront) => ({
    type: "scatter", mode: "lines+markers", x: xs, y: objectives.map((o, i) => scale(t.values[o.name], ranges[i])),
    customdata: xs.map(() => t.id), text: xs.map(() => hoverText(t, objectives)), hovertemplate: "%{text}<extra></extra>",
    line: { color: onFront ? COLORS.front : COLORS.dominated, width: onFront ? 2 : 1 }, opacity: onFront ? 1 : 0.35,
    marker: { size: onFront ? 6 : 3 }, name: onFront ? "Pareto front" : "dominated", legendgroup: onFront ? "f" : "d",
    showlegend: false,
  });
  const data = complete.filter((t) => !frontIds.has(t.id)).map((t) => line(t, false))
    .concat(complete.filter((t) => frontIds.has(t.id)).map((t) => line(t, true)));
  const annotations = objectives.flatMap((o, i) => [
    { x: i, y: 1.04, yref: "y", text: `${fmt(ranges[i][1])}`, showarrow: false, font: { size: 10 } },
    { x: i, y: -0.04, yref: "y", text: `${fmt(ranges[i][0])}`, showarrow: false, font: { size: 10 } },
  ]);
  const layout = {
    xaxis: { tickvals: xs, ticktext: objectives.map(axisTitle), range: [-0.3, objectives.length - 0.7], showgrid: true, gridcolor: "#94a3b8", zeroline: false },
    yaxis: { visible: false, range: [-0.1, 1.1] }, annotations, hovermode: "closest",
  };
  return { data, layout };
}

export function hypervolumeFigures(history) {
  const common = { type: "scatter", mode: "lines+markers", line: { shape: "hv", color: COLORS.front }, marker: { size: 5 },
    text: history.map((h) => `trial #${h.trial.number}<br>hypervolume ${fmt(h.hv, 6)}`), hovertemplate: "%{text}<extra></extra>" };
  return {
    trials: { data: [{ ...common, name: "hypervolume", x: history.map((h) => h.n), y: history.map((h) => h.hv) }],
      layout: { xaxis: { title: { text: "complete trials" }, gridcolor: "#e5e7eb", rangemode: "tozero" }, yaxis: { title: { text: "hypervolume" }, gridcolor: "#e5e7eb" }, showlegend: false } },
    time: { data: [{ ...common, name: "hypervolume", x: history.map((h) => (h.time || "").replace(/([zZ]|[+-]\d\d:?\d\d)$/, "")), y: history.map((h) => h.hv) }],
      layout: { xaxis: { title: { text: "time (UTC)" }, type: "date", gridcolor: "#e5e7eb" }, yaxis: { title: { text: "hypervolume" }, gridcolor: "#e5e7eb" }, showlegend: false } },
  };
}
