// The dashboard shell: hash routing, the token gate and the live-update timer shared by views.
// Each view is `render(main, params, ctx)` and returns a cleanup function (stops its polling).

import { clearToken, getToken, leaveView, setUnauthorizedHandler } from "./api.js";
import { el } from "./util.js";
import * as login from "./views/login.js";
import * as studies from "./views/studies.js";
import * as study from "./views/study.js";
import * as trial from "./views/trial.js";
import * as lineage from "./views/lineage.js";
import * as create from "./views/create.js";
import * as compare from "./views/compare.js";

const ROUTES = [
  [/^#?\/?$/, studies, "Studies"],
  [/^#\/studies\/?$/, studies, "Studies"],
  [/^#\/new$/, create, "New study"],
  [/^#\/studies\/(\d+)$/, study, "Study"],
  [/^#\/studies\/(\d+)\/lineage$/, lineage, "Lineage"],
  [/^#\/trials\/(\d+)$/, trial, "Trial"],
  [/^#\/compare\/(\d+(?:,\d+)*)$/, compare, "Compare"],
  [/^#\/login$/, login, "Sign in"],
];

const main = document.getElementById("view");
const nav = document.getElementById("nav");
let cleanup = null;
let notice = null;

// Polls `fn` every `ms` while the view is shown; never two calls at once; errors are shown, not thrown.
export function poller(fn, ms, onError) {
  let timer = null, stopped = false;
  const tick = async () => {
    if (stopped) return;
    try { await fn(); } catch (err) { if (!stopped && onError) onError(err); }
    if (!stopped) timer = setTimeout(tick, ms);
  };
  tick();
  return () => { stopped = true; clearTimeout(timer); };
}

export function navigate(hash) {
  if (location.hash === hash) route(); else location.hash = hash;
}

function setNav(signedIn) {
  nav.replaceChildren(...(signedIn ? [
    el("a", { href: "#/", text: "Studies" }),
    el("a", { href: "#/new", text: "New study" }),
    el("button", { type: "button", class: "link", id: "signout", text: "Sign out",
      onclick: () => { clearToken(); notice = "Signed out."; navigate("#/login"); } }),
  ] : []));
  for (const a of nav.querySelectorAll("a")) {
    const current = a.getAttribute("href") === (location.hash || "#/") || (a.getAttribute("href") === "#/" && location.hash === "#/studies");
    if (current) a.setAttribute("aria-current", "page"); else a.removeAttribute("aria-current");
  }
}

function route() {
  if (cleanup) { try { cleanup(); } catch { /* a view's cleanup must not block navigation */ } cleanup = null; }
  leaveView();
  const hash = location.hash || "#/";
  let match = null;
  for (const [re, view, title] of ROUTES) {
    const m = re.exec(hash);
    if (m) { match = { view, title, params: m.slice(1) }; break; }
  }
  const token = getToken();
  if (!token && (!match || match.view !== login)) {
    match = { view: login, title: "Sign in", params: [], next: hash };
  }
  if (!match) {
    setNav(!!token);
    main.replaceChildren(el("h1", { text: "Not found" }), el("p", {}, "No page at ", el("code", { text: hash }), ". ", el("a", { href: "#/", text: "Back to the studies" })));
    return;
  }
  document.title = `${match.title} · autopeft`;
  setNav(!!token && match.view !== login);
  main.replaceChildren();
  const ctx = { navigate, poller, next: match.next, notice };
  notice = null;
  cleanup = match.view.render(main, match.params, ctx) || null;
  main.focus({ preventScroll: true });
}

setUnauthorizedHandler(() => {
  clearToken();
  notice = "The server rejected the token (401): sign in again.";
  if (location.hash !== "#/login") navigate("#/login");
});

window.addEventListener("hashchange", route);
route();
