// Sign-in and the API: the access token in memory, the session cookie
// refreshed before expiry, and every request with its bearer token.

import { $, setConn } from "./dom.js";
import { stopLive } from "./live.js";
import { live, session } from "./state.js";

// What happens once signed in (the page shows the dashboard): set by the
// entry module, so this one needs nothing above it.
let signedIn = () => {};
export function whenSignedIn(fn) { signedIn = fn; }

export async function api(path, opts = {}, retried = false) {
  const headers = Object.assign({}, opts.headers || {});
  if (session.token) headers.Authorization = "Bearer " + session.token;
  const r = await fetch(path, Object.assign({}, opts, { headers, credentials: "same-origin" }));
  if (r.status === 401 && session.token && !retried) {
    if (await refresh()) return api(path, opts, true);
    signedOut("Your session has expired. Please sign in again.");
    throw new Error("signed out");
  }
  if (!r.ok) {
    let msg = "The server answered " + r.status + ".";
    try { const b = await r.json(); if (b && b.error) msg = b.error.message; } catch (_) { /* not JSON */ }
    const e = new Error(msg); e.status = r.status; throw e;
  }
  return r;
}

export function accept(tok) {
  session.token = tok.access_token; session.user = tok.user; session.role = tok.role;
  clearTimeout(session.refreshTimer);
  // Renew a minute before the access token expires (never sooner than 10 s).
  session.refreshTimer = setTimeout(async () => {
    if (await refresh() && live.ws && live.ws.readyState === 1) live.ws.send(JSON.stringify({ type: "auth", token: session.token }));
  }, Math.max(10, tok.expires_in - 60) * 1000);
}

export async function refresh() {
  try {
    const r = await fetch("/api/v1/auth/refresh", { method: "POST", credentials: "same-origin" });
    if (!r.ok) return false;
    accept(await r.json());
    return true;
  } catch (_) { return false; }
}

export function signedOut(message) {
  session.token = null; clearTimeout(session.refreshTimer);
  stopLive();
  $("dashboard").hidden = true; $("who").hidden = true; $("sign-in").hidden = false;
  setConn("idle", "Not connected");
  $("sign-in-error").textContent = message || "";
  $("username").focus();
}

export async function signIn(ev) {
  ev.preventDefault();
  // Errors are announced (the message is a live alert) and focus goes to
  // the field to fix.
  const err = $("sign-in-error"); err.textContent = "";
  for (const f of ["username", "password"]) $(f).removeAttribute("aria-invalid");
  const username = $("username").value.trim(), password = $("password").value;
  const missing = !username ? "username" : !password ? "password" : null;
  if (missing) {
    err.textContent = missing === "username" ? "Enter your user name." : "Enter your password.";
    $(missing).setAttribute("aria-invalid", "true"); $(missing).focus(); return;
  }
  try {
    const r = await fetch("/api/v1/auth/login", { method: "POST", credentials: "same-origin",
      headers: { "Content-Type": "application/json" }, body: JSON.stringify({ username, password }) });
    if (r.status === 429) { err.textContent = "Too many attempts. Wait a minute and try again."; return; }
    if (!r.ok) {
      err.textContent = "Wrong user name or password.";
      $("password").setAttribute("aria-invalid", "true"); $("password").focus(); $("password").select(); return;
    }
    accept(await r.json());
    $("password").value = "";
    signedIn();
  } catch (_) { err.textContent = "Cannot reach the server. Check your connection and try again."; }
}

export async function signOut() {
  try { await fetch("/api/v1/auth/logout", { method: "POST", credentials: "same-origin" }); } catch (_) { /* offline */ }
  signedOut("You are signed out.");
}
