// Token login: the token is checked against GET /api/v1/studies, then kept in localStorage.

import { get, setToken, clearToken } from "../api.js";
import { el } from "../util.js";

export function render(main, _params, ctx) {
  const error = el("p", { class: "error", id: "login-error", role: "alert", hidden: true });
  const input = el("input", { id: "token", name: "token", type: "password", autocomplete: "current-password", required: true, spellcheck: "false", "aria-describedby": "token-help" });
  const button = el("button", { type: "submit", class: "primary", text: "Sign in" });
  const form = el("form", { id: "login-form", class: "card narrow", novalidate: true },
    el("h1", { text: "Sign in to autopeft" }),
    ctx.notice ? el("p", { class: "notice", role: "status", text: ctx.notice }) : null,
    el("label", { for: "token", text: "API token" }), input,
    el("p", { id: "token-help", class: "help" }, "Create one on the server with ", el("code", { text: "autopeft token create USER" }), ". It is kept in this browser's local storage."),
    error, el("div", { class: "actions" }, button));
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const token = input.value.trim();
    if (!token) { error.textContent = "Enter a token."; error.hidden = false; input.focus(); return; }
    button.disabled = true;
    try {
      await get("/studies", { token, quiet: true });
      setToken(token);
      const next = ctx.next && ctx.next !== "#/login" ? ctx.next : "#/";
      ctx.navigate(next);
    } catch (err) {
      clearToken();
      error.textContent = err.status === 401 ? "The server does not accept this token." : `Sign-in failed: ${err.message}`;
      error.hidden = false;
      input.focus();
    } finally { button.disabled = false; }
  });
  main.append(form);
  input.focus();
  return null;
}
