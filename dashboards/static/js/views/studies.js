// Studies list: state, progress, best value per objective (from each study's Pareto front) and
// hypervolume; polled every 2 s, fronts refetched only for studies whose counts changed.

import { get } from "../api.js";
import { clear, el, fmt, fmtDate, stateBadge } from "../util.js";

const DONE = ["complete", "failed", "pruned"];

function best(front, objective) {
  const vs = front.map((t) => t.values?.[objective.name]).filter((v) => Number.isFinite(v));
  if (!vs.length) return null;
  return objective.direction === "maximize" ? Math.max(...vs) : Math.min(...vs);
}

export function render(main, _params, ctx) {
  const status = el("p", { class: "muted", id: "studies-status", role: "status", text: "Loading…" });
  const body = el("tbody");
  const chosen = new Set();
  const compareButton = el("button", { class: "button", id: "compare-studies", type: "button", disabled: true, text: "Compare selected",
    onclick: () => ctx.navigate(`#/compare/${[...chosen].sort((a, b) => a - b).join(",")}`) });
  const choose = (id, on) => { if (on) chosen.add(id); else chosen.delete(id); compareButton.disabled = chosen.size < 2; };
  const search = el("input", { type: "search", id: "studies-search", placeholder: "Search name, notes, tags", "aria-label": "search studies by name, notes or tag",
    oninput: () => { lastSig = ""; draw(); } });
  const table = el("table", { class: "data", id: "studies-table" },
    el("caption", { class: "sr-only", text: "Your studies" }),
    el("thead", {}, el("tr", {}, ...["Study", "State", "Progress", "Best values", "Hypervolume", "Created"].map((h) => el("th", { scope: "col", text: h })))),
    body);
  main.append(
    el("div", { class: "page-head" }, el("h1", { text: "Studies" }), compareButton, el("a", { class: "button primary", href: "#/new", text: "New study" })),
    el("div", { class: "controls" }, search), status, el("div", { class: "table-wrap" }, table));

  const extra = new Map();   // study id -> {sig, pareto, hv}
  let lastSig = "", all = [];

  async function refresh() {
    const listed = (await get("/studies")).studies;
    const gone = new Set();   // deleted between the list and its front: left out until the next poll
    await Promise.all(listed.map(async (s) => {
      const sig = JSON.stringify(s.counts) + s.state;
      const known = extra.get(s.id);
      if (known && known.sig === sig) return;
      try {
        const [pareto, hv] = await Promise.all([get(`/studies/${s.id}/pareto`), get(`/studies/${s.id}/hypervolume`)]);
        extra.set(s.id, { sig, pareto, hv });
      } catch (err) {
        if (err.status !== 404) throw err;
        gone.add(s.id);
      }
    }));
    all = listed.filter((s) => !gone.has(s.id));
    status.classList.remove("error");
    draw();
  }

  // The search box filters what the last poll listed (name, notes, tags; any case; every word).
  function matches(s, words) {
    const hay = [s.name, s.notes || "", ...(s.tags || [])].join(" \n ").toLowerCase();
    return words.every((w) => hay.includes(w));
  }

  function draw() {
    const words = search.value.toLowerCase().split(/\s+/).filter(Boolean);
    const studies = all.filter((s) => matches(s, words));
    const sig = JSON.stringify([words, studies.map((s) => [s.id, s.state, s.counts, s.name, s.tags, s.notes])]);
    status.textContent = all.length
      ? (words.length ? `${studies.length} of ${all.length} studies match.` : `${all.length} stud${all.length === 1 ? "y" : "ies"}, updated live.`)
      : "";
    if (sig === lastSig) return;
    lastSig = sig;
    if (words.length && !studies.length) {
      clear(body, el("tr", {}, el("td", { colspan: 6, class: "empty", text: "No study matches the search." })));
      return;
    }
    if (!studies.length) {
      clear(body, el("tr", {}, el("td", { colspan: 6, class: "empty" }, "No study yet. ", el("a", { href: "#/new", text: "Create one" }), ", or use ", el("code", { text: "autopeft study create FILE" }), ".")));
      return;
    }
    clear(body, [...studies].reverse().map((s) => row(s, extra.get(s.id))));
  }

  function row(s, x) {
    const max = s.spec?.max_trials || 0;
    const done = DONE.reduce((n, k) => n + (s.counts?.[k] || 0), 0);
    const running = (s.counts?.running || 0) + (s.counts?.queued || 0);
    const objectives = s.spec?.objectives || [];
    const front = x?.pareto?.trials || [];
    return el("tr", { dataset: { studyId: s.id } },
      el("th", { scope: "row" },
        el("input", { type: "checkbox", class: "compare-pick", "aria-label": `compare ${s.name}`, checked: chosen.has(s.id), onchange: (e) => choose(s.id, e.target.checked) }), " ",
        el("a", { href: `#/studies/${s.id}`, text: s.name }), el("span", { class: "muted small", text: ` #${s.id}` }),
        (s.tags || []).length ? el("div", { class: "tags" }, s.tags.map((t) => el("span", { class: "tag", text: t }))) : null),
      el("td", {}, stateBadge(s.state)),
      el("td", { class: "progress-cell" },
        el("progress", { max: Math.max(max, 1), value: Math.min(done, max || done), "aria-label": `${done} of ${max} trials done` }),
        el("span", { class: "small", text: ` ${done}/${max}` + (running ? ` · ${running} active` : "") + (s.counts?.failed ? ` · ${s.counts.failed} failed` : "") })),
      el("td", {}, el("ul", { class: "plain small" }, objectives.map((o) => el("li", {},
        el("span", { class: "muted", text: `${o.name} ${o.direction === "maximize" ? "↑" : "↓"} ` }), fmt(best(front, o)))))),
      el("td", { class: "num", text: x?.hv && x.hv.n_complete ? fmt(x.hv.hypervolume, 5) : "–" }),
      el("td", { class: "small", text: fmtDate(s.created_at) }));
  }

  return ctx.poller(refresh, 2000, (err) => { status.textContent = `Could not load the studies: ${err.message}`; status.classList.add("error"); });
}
