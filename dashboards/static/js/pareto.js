// Pareto maths in the browser, only for the hypervolume history (the front itself always
// comes from GET /studies/{id}/pareto). Points are in minimisation form: maximised
// objectives are negated, as autopeft.optim.pareto.to_minimization does.

export function toMin(values, objectives) {
  return objectives.map((o) => (o.direction === "maximize" ? -values[o.name] : values[o.name]));
}

export function dominates(a, b) {
  let strictly = false;
  for (let i = 0; i < a.length; i++) {
    if (a[i] > b[i]) return false;
    if (a[i] < b[i]) strictly = true;
  }
  return strictly;
}

export function nonDominated(points) {
  return points.filter((p, i) => !points.some((q, j) => j !== i && dominates(q, p)));
}

// Exact hypervolume dominated by `points` and bounded by `ref` (all minimised):
// a sweep in 2-D, slicing along the last objective above that (HSO).
export function hypervolume(points, ref) {
  const d = ref.length;
  const pts = points.filter((p) => p.every((v, i) => v < ref[i]));
  if (!pts.length) return 0;
  if (d === 1) return ref[0] - Math.min(...pts.map((p) => p[0]));
  if (d === 2) {
    const sorted = [...pts].sort((a, b) => a[0] - b[0] || a[1] - b[1]);
    let area = 0, bestY = ref[1];
    for (const [x, y] of sorted) {
      if (y < bestY) { area += (ref[0] - x) * (bestY - y); bestY = y; }
    }
    return area;
  }
  const sorted = nonDominated(pts).sort((a, b) => a[d - 1] - b[d - 1]);
  const subRef = ref.slice(0, d - 1);
  let volume = 0;
  for (let i = 0; i < sorted.length; i++) {
    const top = i + 1 < sorted.length ? sorted[i + 1][d - 1] : ref[d - 1];
    const height = top - sorted[i][d - 1];
    if (height > 0) volume += height * hypervolume(sorted.slice(0, i + 1).map((p) => p.slice(0, d - 1)), subRef);
  }
  return volume;
}

// Hypervolume after each completed trial, in completion order, against one reference point
// (the study's current one, from GET /hypervolume); infeasible trials never count.
// Returns [{trial, n, time, hv}].
export function hypervolumeHistory(trials, objectives, referencePoint) {
  if (!referencePoint) return [];
  const ref = toMin(referencePoint, objectives);
  const done = trials
    .filter((t) => t.state === "complete" && t.feasible !== false && t.values && objectives.every((o) => Number.isFinite(t.values[o.name])))
    .sort((a, b) => (a.finished_at || "").localeCompare(b.finished_at || "") || a.id - b.id);
  const out = [];
  let front = [];
  let hv = 0;
  done.forEach((t, i) => {
    const p = toMin(t.values, objectives);
    if (!front.some((q) => dominates(q, p) || q.every((v, k) => v === p[k]))) {
      front = front.filter((q) => !dominates(p, q)).concat([p]);
      hv = hypervolume(front, ref);
    }
    out.push({ trial: t, n: i + 1, time: t.finished_at, hv });
  });
  return out;
}
