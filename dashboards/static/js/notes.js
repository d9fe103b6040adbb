// The owner's notes and tags of a study or a trial: shown as text and tag chips, edited in place
// (PATCH the row; the API's refusal, naming the field, shown under the form). The page's poll
// calls show(row) with what it read; nothing is redrawn while the form is open.

import { clear, el } from "./util.js";

export function notesPanel(node, save) {
  let row = null, sig = null, editing = false;

  function show(next, force = false) {
    row = next;
    const s = JSON.stringify([row.notes, row.tags]);
    if (editing || (!force && s === sig)) return;
    sig = s;
    clear(node,
      el("div", { class: "tags", "data-role": "tags" }, (row.tags || []).map((t) => el("span", { class: "tag", text: t }))),
      el("p", { class: row.notes ? "note-text" : "muted small", "data-role": "notes", text: row.notes || "No notes." }),
      el("button", { type: "button", class: "small", text: "Edit notes and tags", onclick: edit }));
  }

  function edit() {
    editing = true;
    const notes = el("textarea", { "data-role": "notes-input", rows: 3, maxlength: 10000, "aria-label": "notes" });
    notes.value = row.notes || "";
    const tags = el("input", { "data-role": "tags-input", type: "text", "aria-label": "tags, comma-separated", placeholder: "tags, comma-separated" });
    tags.value = (row.tags || []).join(", ");
    const error = el("p", { class: "error small", role: "alert", hidden: true });
    const done = () => { editing = false; show(row, true); };
    const submit = async (ev) => {
      ev.target.disabled = true;
      try {
        row = await save({ notes: notes.value.trim() || null, tags: tags.value.split(",").map((t) => t.trim()).filter(Boolean) });
        done();
      } catch (err) {
        error.hidden = false;
        error.textContent = err.field ? `${err.message} (${err.field})` : err.message;
        ev.target.disabled = false;
      }
    };
    clear(node, el("label", { class: "small", text: "Notes" }), notes, el("label", { class: "small", text: "Tags" }), tags, error,
      el("div", { class: "actions" }, el("button", { type: "button", class: "primary", "data-role": "save", text: "Save", onclick: submit }),
        el("button", { type: "button", text: "Cancel", onclick: done })));
    notes.focus();
  }

  return { show };
}
