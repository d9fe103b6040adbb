// The per-layer architecture of a config (docs/config_format.md): rows are modules (LoRA rank,
// serial / parallel adapter size, prefix length, IA3), columns are layers; `layers.{i} = false`
// masks a whole layer. A per-layer key `lora.rank.3` wins over its shared form `lora.rank`.

const SIZED = [
  ["lora.rank", "LoRA rank"],
  ["serial.size", "serial adapter"],
  ["parallel.size", "parallel adapter"],
  ["prefix.length", "prefix length"],
];
const PER_LAYER = /^(layers|lora\.rank|serial\.size|parallel\.size|prefix\.length)\.(\d+)$/;

export function layerCount(config, hint = null) {
  let n = 0;
  for (const key of Object.keys(config || {})) {
    const m = PER_LAYER.exec(key);
    if (m) n = Math.max(n, Number(m[2]) + 1);
  }
  return n || hint || null;
}

// {layers: [labels], rows: [{label, values: [number|null], on: [bool]}]} or null if the config
// has no PEFT module that is sized per layer.
export function layerMatrix(config, hint = null) {
  const cfg = config || {};
  const count = layerCount(cfg, hint);
  const n = count || 1;
  const on = Array.from({ length: n }, (_, i) => cfg[`layers.${i}`] !== false);
  const labels = count ? Array.from({ length: n }, (_, i) => `L${i}`) : ["all layers"];
  const rows = [];
  for (const [key, label] of SIZED) {
    const present = key in cfg || Object.keys(cfg).some((k) => k.startsWith(key + "."));
    if (!present) continue;
    const values = on.map((isOn, i) => {
      const v = cfg[`${key}.${i}`] ?? cfg[key] ?? 0;
      return isOn ? Number(v) : null;
    });
    const extra = key === "lora.rank" && cfg["lora.targets"] ? ` (${cfg["lora.targets"]})` : "";
    rows.push({ label: label + extra, values });
  }
  if (typeof cfg["ia3.targets"] === "string" && cfg["ia3.targets"]) {
    rows.push({ label: `IA3 (${cfg["ia3.targets"]})`, values: on.map((isOn) => (isOn ? 1 : null)), flag: true });
  }
  if (!rows.length) return null;
  return { layers: labels, rows, on };
}

// A plotly heatmap figure: colour = value relative to its row's maximum (rows have different
// units), text = the value itself, masked layers empty and labelled "off".
export function heatmapFigure(matrix) {
  const rows = [...matrix.rows].reverse();
  const z = rows.map((r) => {
    const max = Math.max(0, ...r.values.filter((v) => v !== null));
    return r.values.map((v) => (v === null ? null : max > 0 ? v / max : 0));
  });
  const text = rows.map((r) => r.values.map((v) => (v === null ? "off" : r.flag ? "on" : String(v))));
  const data = [{
    type: "heatmap", x: matrix.layers, y: rows.map((r) => r.label), z, text, texttemplate: "%{text}",
    hovertemplate: "%{y} · %{x}: %{text}<extra></extra>", colorscale: [[0, "#f8fafc"], [1, "#1d4ed8"]],
    zmin: 0, zmax: 1, showscale: false, xgap: 2, ygap: 2, textfont: { size: 11 },
  }];
  const layout = {
    margin: { l: 150, r: 16, t: 8, b: 40 }, plot_bgcolor: "#d1d5db",
    xaxis: { side: "bottom", tickangle: 0, fixedrange: true, type: "category" },
    yaxis: { fixedrange: true, automargin: true, type: "category" },
    height: 90 + 38 * rows.length,
  };
  return { data, layout };
}
