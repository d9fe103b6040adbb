// The REST client of the dashboard: bearer token from localStorage, the API's error envelope
// ({"error": {"code", "message", "field"}}) turned into ApiError.

const TOKEN_KEY = "autopeft.token";
export const API = "/api/v1";

export class ApiError extends Error {
  constructor(status, code, message, field) {
    super(message);
    this.status = status;
    this.code = code;
    this.field = field || null;
  }
}

export function getToken() { return localStorage.getItem(TOKEN_KEY); }
export function setToken(token) { localStorage.setItem(TOKEN_KEY, token); }
export function clearToken() { localStorage.removeItem(TOKEN_KEY); }

let onUnauthorized = () => {};
export function setUnauthorizedHandler(fn) { onUnauthorized = fn; }

async function errorFrom(resp) {
  let body = null;
  try { body = await resp.json(); } catch { /* not JSON */ }
  const e = body && body.error;
  if (e) return new ApiError(resp.status, e.code, e.message, e.field);
  return new ApiError(resp.status, "http_" + resp.status, `${resp.status} ${resp.statusText}`);
}

// The reads of the view on screen share one AbortController: leaving the view (app.js calls
// leaveView) aborts those still in flight, so a poll that was under way makes no more requests for a
// page nobody sees (they could only meet a study deleted meanwhile). Writes and downloads (raw) are
// never aborted: the user asked for them.
let viewReads = new AbortController();
export function leaveView() {
  viewReads.abort();
  viewReads = new AbortController();
}

export async function request(path, { method = "GET", body, token = getToken(), raw = false, quiet = false } = {}) {
  const headers = { Accept: raw ? "*/*" : "application/json" };
  if (token) headers.Authorization = `Bearer ${token}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const signal = method === "GET" && !raw ? viewReads.signal : undefined;
  let resp;
  try {
    resp = await fetch(API + path, { method, headers, signal, body: body === undefined ? undefined : JSON.stringify(body) });
  } catch (err) {
    if (err.name === "AbortError") throw new ApiError(0, "aborted", "the page was left");
    throw new ApiError(0, "network", `cannot reach the server (${err.message})`);
  }
  if (!resp.ok) {
    const err = await errorFrom(resp);
    if (resp.status === 401 && !quiet) onUnauthorized(err);
    throw err;
  }
  if (raw) return resp;
  if (resp.status === 204) return null;
  return resp.json();
}

export const get = (path, opts) => request(path, opts);

// multipart upload (a FormData body: the browser sets the Content-Type with its boundary)
export async function upload(path, form, token = getToken()) {
  const headers = { Accept: "application/json" };
  if (token) headers.Authorization = `Bearer ${token}`;
  let resp;
  try {
    resp = await fetch(API + path, { method: "POST", headers, body: form });
  } catch (err) {
    throw new ApiError(0, "network", `cannot reach the server (${err.message})`);
  }
  if (!resp.ok) {
    const err = await errorFrom(resp);
    if (resp.status === 401) onUnauthorized(err);
    throw err;
  }
  return resp.json();
}
export const post = (path, body, opts = {}) => request(path, { ...opts, method: "POST", body });
export const patch = (path, body, opts = {}) => request(path, { ...opts, method: "PATCH", body });

// Every trial of a study with id > after, following pages.
export async function trialsAfter(studyId, after, limit = 1000) {
  const out = [];
  let cursor = after;
  for (;;) {
    const q = new URLSearchParams({ limit: String(limit) });
    if (cursor !== null && cursor !== undefined) q.set("after", String(cursor));
    const page = await get(`/studies/${studyId}/trials?${q}`);
    out.push(...page.trials);
    if (page.trials.length < limit || page.next_after === null) return out;
    cursor = page.next_after;
  }
}
