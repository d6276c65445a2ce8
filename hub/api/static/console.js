// The integration console (GET /console): served as /console/console.js, the page's only script
// (its Content-Security-Policy allows scripts from the hub alone: no inline script, no on...= handlers).
const $ = (id) => document.getElementById(id);
const esc = (v) => String(v ?? "").replace(/[&<>"']/g, c => ({"&":"&amp;","<":"&lt;",">":"&gt;",'"':"&quot;","'":"&#39;"}[c]));
let key = sessionStorage.getItem("s117key");
let tab = "overview";
async function api(path, opts = {}) {
  const r = await fetch(path, {...opts, headers: {"X-API-Key": key, ...(opts.headers || {})}});
  // A proxy's or gateway's page is not JSON: named by its status, not "Unexpected token '<'".
  const body = await r.json().catch(() => null);
  if (!r.ok) {
    const detail = body && typeof body.detail === "string" ? body.detail : "";
    throw new Error(`${r.status} ${body && body.title || r.statusText}${detail ? ": " + detail : ""}`);
  }
  if (body === null) throw new Error(`${r.status}: the answer was not JSON`);
  return body;
}
// A table named by its caption (for a screen reader: the panel's heading is seen), its columns headed (a column of
// buttons too: "action", unseen).
function table(rows, cols, caption) {
  if (!rows.length) return '<p class="muted">None.</p>';
  return `<table><caption class="visually-hidden">${esc(caption)}</caption><thead><tr>` +
    cols.map(c => `<th scope="col">${c[0] ? esc(c[0]) : '<span class="visually-hidden">action</span>'}</th>`).join("") + "</tr></thead><tbody>" +
    rows.map(r => "<tr>" + cols.map(c => `<td>${c[1](r)}</td>`).join("") + "</tr>").join("") + "</tbody></table>";
}

// The panels are redrawn every few seconds: a control that had the keyboard's focus (or lost it to the page's
// body when it was disabled on being pressed) has it again in the new drawing, found by what it acts on.
let lastFocus = null;
document.addEventListener("focusin", (ev) => { lastFocus = focusKey(ev.target); });
// Left for nothing (a click on the page's text): not given back. Removed by a redraw or disabled: given back.
document.addEventListener("focusout", (ev) => {
  if (!ev.relatedTarget && ev.target.isConnected && !ev.target.disabled && document.hasFocus()) lastFocus = null;
});
function focusKey(el) {
  if (!el || el === document.body) return null;
  const data = Object.keys(el.dataset)[0];
  if (data) return `${el.tagName.toLowerCase()}[data-${data.replace(/[A-Z]/g, c => "-" + c.toLowerCase())}="${CSS.escape(el.dataset[data])}"]`;
  return el.id ? "#" + CSS.escape(el.id) : null;
}
function draw(el, html) {
  const active = document.activeElement;
  const key = el.contains(active) ? focusKey(active)
    : (!active || active === document.body) && lastFocus && el.querySelector(lastFocus) ? lastFocus : null;
  el.innerHTML = html;
  if (key && !el.contains(document.activeElement)) {
    const again = el.matches(key) ? el : el.querySelector(key);
    if (again) again.focus({preventScroll: true});
  }
  scrollRegions();
}
// A panel wider than the window (a table of many columns at 320 px) scrolls on its own, not the page: it is then
// a named region the keyboard can focus, to scroll it with the arrow keys.
function scrollRegions() {
  document.querySelectorAll(".scroll").forEach(d => {
    if (d.scrollWidth > d.clientWidth + 1) {
      d.setAttribute("tabindex", "0"); d.setAttribute("role", "region");
      d.setAttribute("aria-label", d.closest("section")?.querySelector("h2")?.textContent || d.id);
    } else if (d.hasAttribute("tabindex")) {
      if (document.activeElement === d) return;
      d.removeAttribute("tabindex"); d.removeAttribute("role"); d.removeAttribute("aria-label");
    }
  });
}
window.addEventListener("resize", scrollRegions);
// What an action did, said once in the page's one status region when it changes (never on a poll).
let said = "";
function announce(message) {
  if (message === said) return;
  said = message;
  $("announce").textContent = message;
}
const time = (iso) => `<span class="dyn">${esc((iso || "").slice(0, 19).replace("T", " "))}</span>`;
// A wait in words an engineer reads at a glance: "42 s", "27 min", "1 h 27 min", "3 d 4 h".
const ago = (secs) => { const s = Math.round(secs), m = Math.floor(s / 60), h = Math.floor(m / 60), d = Math.floor(h / 24);
  return d ? `${d} d ${h % 24} h` : h ? `${h} h ${m % 60} min` : m ? `${m} min` : `${s} s`; };
const short = (id) => `<code class="dyn" title="${esc(id)}">${esc((id || "").slice(0, 8))}</code>`;

// /health/ready's checks, named for an engineer: its processes (README "The hub's processes") and their state.
const CHECKS = {store: "store", store_writes: "store takes writes", workers: "workers in the front", worker_process: "worker process (dispatcher, consumers)",
                delivery_process: "delivery process (deliverers)"};
async function ready() {
  try { return await (await fetch("/health/ready")).json(); } catch (e) { return null; }  // 503 answers JSON too
}
// People awaiting a split council's successor (hazard H-03): GET /v1/ops/council-splits evaluates everyone with no
// responsible council, so it is read when the overview is opened and then once a minute, not at every 5 s poll.
const SPLITS_EVERY_MS = 60e3;
let splits = null, splitsAt = 0;
async function councilSplits() {
  if (!splits || Date.now() - splitsAt >= SPLITS_EVERY_MS) {
    splits = await api("/v1/ops/council-splits");
    splitsAt = Date.now();
  }
  return splits;
}
function showSplits(s) {
  const total = s.awaiting_successor.reduce((n, r) => n + r.people, 0);
  draw($("splits"), `<div>people awaiting: <span class="${total ? "bad" : "ok"} big">${esc(total)}</span>` +
    ` <span class="muted">(counted ${time(new Date(splitsAt).toISOString())} UTC)</span></div>` +
    table(s.awaiting_successor, [["split council (GSS)", r => `<code>${esc(r.council)}</code>`],
      ["people awaiting its successor", r => `<span class="bad">${esc(r.people)}</span>`],
      ["awaiting", r => esc(r.awaiting === "the-successors-gss-code" ? "the successor's GSS code (a newer register)"
        : "the successor named (a moved change)")]], "People awaiting a split council's successor, per split council"));
}
async function overview() {
  const [flows, dead, held, sla, health, quarantined, split] = await Promise.all([api("/v1/ops/flows"), api("/v1/ops/dead-letters"),
    api("/v1/ops/deliveries/held"), api("/v1/ops/service-level"), ready(), api("/v1/quarantine?limit=200"), councilSplits()]);
  showSplits(split);
  draw($("hub"), !health ? '<span class="bad">no answer from /health/ready</span>' :
    `<div>${esc(health.status)}: ${1 + ["worker_process", "delivery_process"].filter(k => k in health.checks).length} process(es)</div>` +
    Object.entries(health.checks).map(([k, v]) => `<div>${esc(CHECKS[k] || k)}: <span class="${v === "ok" ? "ok" : v === "starting" ? "warn" : "bad"}">${esc(v)}</span></div>`).join(""));
  const lag = flows.bus.consumers.map(c => `${esc(c.group)}: <span class="${c.lag ? "warn" : "ok"}">${c.lag}</span>`).join(" · ");
  draw($("bus"), `<div>topic <code>${esc(flows.bus.topic)}</code>, last offset <span class="dyn">${esc(flows.bus.last_offset ?? "-")}</span></div>
    <div>consumer lag: ${lag}</div><div>open dead letters: <span id="deadcount" class="${flows.dead_letters_open + flows.dead_deliveries ? "bad" : "ok"} big">${esc(flows.dead_letters_open + flows.dead_deliveries)}</span>
    <span class="muted">(${esc(flows.dead_letters_open)} event(s) a handler could not process, ${esc(flows.dead_deliveries)} deliver(ies) given up)</span></div>`);
  draw($("ingest"), '<h3 class="muted">Accepted</h3>' + table(flows.ingest.accepted, [["source", r => esc(r.source)], ["accepted", r => r.count]], "Input accepted per source, last 24 hours") +
    '<h3 class="muted">Quarantined</h3>' + table(flows.ingest.quarantined, [["source", r => esc(r.source)], ["channel", r => esc(r.channel)], ["quarantined", r => `<span class="warn">${r.count}</span>`]], "Input quarantined per source and channel, last 24 hours"));
  draw($("subs"), table(flows.subscriptions, [
    ["organisation", r => esc(r.org_code)], ["channel", r => esc(r.channel)],
    ["state", r => r.state === "suspended"  // its endpoint answered 410 Gone: nothing sent until resumed
      ? `<span class="bad">suspended</span> <span class="muted">${esc(r.suspended_reason)} since ${time(r.suspended_at)}</span> <button data-resume="${esc(r.subscription_id)}">Resume</button>`
      : esc(r.state)],
    ["delivered", r => r.delivered], ["pending", r => `<span class="${r.pending ? "warn" : "ok"}">${r.pending}</span>`],
    ["oldest pending", r => r.oldest_pending_seconds == null ? "-" : `<span class="dyn">${esc(ago(r.oldest_pending_seconds))}</span>`],
    ["attempts", r => esc(r.max_attempts_pending)],
    ["last error", r => r.oldest_pending_error ? `<span class="bad">${esc(r.oldest_pending_error)}</span>` +
      (r.state === "suspended" ? "" : ` <span class="muted">next try ${time(r.next_attempt_at)}</span>`) : ""], ["held", r => `<span class="${r.held ? "warn" : ""}">${r.held}</span>`],
    ["dead", r => `<span class="${r.dead ? "bad" : ""}">${esc(r.dead)}</span>`],
    ["", r => `<button data-replay-sub="${esc(r.subscription_id)}" data-org="${esc(r.org_code)}" data-channel="${esc(r.channel)}">Replay…</button>`]], "Subscriptions"));
  subRows = new Map(flows.subscriptions.map(r => [r.subscription_id, r]));
  // Each dead letter: what, since when, for whom (organisation and channel), why, and its action.
  draw($("dead"), '<h3 class="muted">Events a handler could not process</h3>' + table(dead.handlers, [["since", r => time(r.at)],
      ["offset", r => esc(r.offset)], ["event", r => short(r.event_id)], ["handler", r => esc(r.handler)],
      ["reason", r => esc(r.reason)], ["", r => r.replayed_at ? `replayed ${time(r.replayed_at)}` : `<button data-replay="${esc(r.dead_letter_id)}">Replay</button>`]], "Events a handler could not process") +
    '<h3 class="muted">Deliveries given up</h3>' + table(dead.deliveries, [["organisation", r => esc(r.org_code)], ["channel", r => esc(r.channel)],
      ["event", r => esc(r.event_type)], ["event number", r => esc(r.event_number)], ["queued", r => time(r.created_at)],
      ["attempts", r => esc(r.attempts)], ["last error", r => `<span class="bad">${esc(r.last_error)}</span>`],
      ["correlation", r => short(r.correlation_id)], ["", r => `<button data-retry="${esc(r.delivery_id)}">Retry</button>`]], "Deliveries given up"));
  deadRows = new Map(dead.deliveries.map(r => [r.delivery_id, r]));
  showActions();
  // Inputs held in quarantine: which source and channel, since when, why (field and reason; never the
  // input itself), and its source message id to trace it. The source corrects and resubmits it.
  const open = quarantined.items.filter(r => r.status === "held");
  draw($("quarantine"), `<div>held now: <span class="${open.length ? "warn" : "ok"} big">${esc(open.length)}</span>` +
    (quarantined.items.length >= 200 ? ' <span class="muted">(of the latest 200 inputs)</span>' : "") + "</div>" +
    table(open, [["received", r => time(r.received_at)], ["source", r => esc(r.source)], ["channel", r => esc(r.channel)],
      ["source message id", r => `<code class="dyn">${esc(r.source_message_id || "-")}</code>`],
      ["why", r => (r.errors || []).map(x => `<code>${esc(x.field)}</code> ${esc(x.reason)}`).join("; ")],
      ["", r => r.source_message_id ? `<button data-trace-message="${esc(r.source_message_id)}">Trace</button>` : ""]], "Quarantined input held now"));
  heldRows = new Map(held.deliveries.map(r => [r.delivery_id, r]));
  const heldCount = flows.subscriptions.reduce((n, r) => n + (r.held || 0), 0);
  draw($("held"), `<div>held now: <span class="${heldCount ? "warn" : "ok"} big">${heldCount}</span></div>` +
    table(held.deliveries, [["subscription", r => short(r.subscription_id)], ["organisation", r => esc(r.org_code)],
      ["channel", r => esc(r.channel)], ["event", r => esc(r.event_type)], ["event number", r => esc(r.event_number)],
      ["why held", r => `<span class="warn">${esc(r.why)}</span>`], ["queued", r => time(r.queued_at)],
      ["", r => released.get(r.delivery_id)?.state === "releasing" ? "releasing..." : `<button data-release="${esc(r.delivery_id)}">Release</button>`]], "Held deliveries"));
  showReleased();
  const t = sla.totals;
  draw($("sla"), `<div>met <span class="ok">${esc(t.met || 0)}</span> · near breach <span class="warn">${esc(t["near-breach"] || 0)}</span> · breach <span class="bad">${esc(t.breach || 0)}</span>` +
    ` <span class="muted">(last ${esc(sla.window_days)} days${sla.items.length > 50 ? `; the latest 50 of ${esc(sla.items.length)} shown` : ""})</span></div>` +
    table(sla.items.slice(0, 50), [["change", r => short(r.change_id)], ["source", r => esc(r.source)],
      ["type", r => esc(r.change_type)], ["notified", r => esc(r.notified_on)], ["recorded", r => esc(r.recorded_on)],
      ["days", r => r.working_days_taken], ["state", r => `<span class="${r.state === "breach" ? "bad" : "warn"}">${esc(r.state)}</span>`]], "Register service level: changes near or past breach"));
}

// Held deliveries released from this page: what became of each (the delivery's state, followed until it is sent,
// held again or given up). Ids and codes only, as the API gives them.
const released = new Map();
let heldRows = new Map();  // the held list last drawn, by delivery id
const OUTCOMES = {releasing: ["muted", "releasing..."], pending: ["warn", "released: waiting to be sent"],
                  delivered: ["ok", "released: delivered"], held: ["bad", "held again"], dead: ["bad", "given up again"],
                  refused: ["bad", "not released"], unread: ["warn", "released: its state could not be read"]};
function showReleased(id) {
  const r = id && released.get(id);
  if (r) sayOutcome("release", id, r.org_code, r.state, r.state !== "delivered" ? r.why : "");
  const rows = [...released.values()].reverse();
  draw($("released"), rows.length ? "<h3>Released</h3>" + table(rows, [
    ["delivery", r => short(r.delivery_id)], ["organisation", r => esc(r.org_code)], ["event", r => esc(r.event_type)],
    ["event number", r => esc(r.event_number)],
    ["outcome", r => `<span class="outcome ${OUTCOMES[r.state]?.[0] || ""}">${esc(OUTCOMES[r.state]?.[1] || r.state)}</span>` +
      (r.state !== "delivered" && r.why ? ` <span class="muted">${esc(r.why)}</span>` : "")]], "Held deliveries released from this page") : "");
}
async function release(id, row) {
  released.delete(id);
  released.set(id, {...row, delivery_id: id, state: "releasing", why: ""});
  showReleased(id);
  try {
    await api(`/v1/ops/deliveries/${encodeURIComponent(id)}/retry`, {method: "POST"});
  } catch (e) {
    released.set(id, {...released.get(id), state: "refused", why: e.message});
    showReleased(id);
    return;
  }
  // Checked again when it is sent: follow it for a minute (a failing endpoint keeps it waiting longer).
  for (let i = 0; i < 60; i++) {
    try {
      const d = await api(`/v1/ops/deliveries/${encodeURIComponent(id)}`);
      released.set(id, {...d, state: d.status});
    } catch (e) { released.set(id, {...released.get(id), state: "unread", why: e.message}); }
    showReleased(id);
    if (released.get(id).state !== "pending") break;
    await new Promise(r => setTimeout(r, 1000));
  }
  if (tab === "overview") refresh();
}

// Replay, retry, resume from this page: each one's outcome in the page (the problem's title and detail when
// refused), a retried delivery followed until it is sent, held or given up again, as a release is.
const actions = [];
let deadRows = new Map();  // the deliveries given up last drawn, by delivery id
let subRows = new Map();  // the subscriptions last drawn, by id
function showActions() {
  const el = $("actions");
  el.parentElement.hidden = !actions.length;
  draw(el, actions.length ? "<h3>Actions from this page</h3>" + table(actions.slice().reverse(), [["at", r => time(r.at)],
    ["action", r => esc(r.what)], ["on", r => `${short(r.id)} ${esc(r.org_code || "")}`],
    ["outcome", r => `<span class="action-outcome ${OUTCOMES[r.state]?.[0] || (r.state === "done" ? "ok" : "")}">${esc(OUTCOMES[r.state]?.[1] || r.state)}</span>` +
      (r.why ? ` <span class="muted">${esc(r.why)}</span>` : "")]], "Actions from this page") : "");
}
// An action's outcome in words, for the status region: said when its state changes (the same words are not said twice).
function sayOutcome(what, id, org, state, why) {
  announce(`${what} of ${(id || "").slice(0, 8)}${org ? " for " + org : ""}: ${OUTCOMES[state]?.[1] || state}` +
    (why ? ` (${why})` : ""));
}
const inFlight = new Set();  // actions sent and not yet answered: a second press (or a redrawn button) sends nothing
async function act(what, id, path, row = {}) {
  if (inFlight.has(what + " " + id)) return;
  // A dead letter replayed from this page is not sent again from a row a poll drew before it was replayed.
  if (what === "replay" && actions.some(a => a.what === what && a.id === id && a.state === "done")) return;
  inFlight.add(what + " " + id);
  const entry = {what, id, org_code: row.org_code, at: new Date().toISOString(), state: "working...", why: ""};
  actions.push(entry); if (actions.length > 20) actions.shift();
  showActions();
  const say = () => sayOutcome(what, id, entry.org_code, entry.state, entry.why);
  say();
  try {
    const r = await api(path, {method: "POST"});
    entry.state = "done";
    entry.why = what === "replay" ? `handler ${r.handler} ran again` : what === "resume" ? `active again (was ${r.was})`
      : what === "replay subscription" ? `${r.requeued} message(s) put back to be sent, ${r.purged_by_retention} purged by retention` : "";
  } catch (e) { entry.state = "refused"; entry.why = e.message; }
  inFlight.delete(what + " " + id);
  showActions();
  if (what === "retry" && entry.state === "done") entry.state = "pending";
  say();
  if (what === "retry" && entry.state === "pending") {
    for (let i = 0; i < 60 && entry.state === "pending"; i++) {
      await new Promise(r => setTimeout(r, 1000));
      try { const d = await api(`/v1/ops/deliveries/${encodeURIComponent(id)}`); entry.state = d.status; entry.why = d.status === "delivered" ? "" : d.why || ""; }
      catch (e) { entry.state = "unread"; entry.why = e.message; }
      showActions();
      say();
    }
  }
  if (tab === "overview") refresh();
}

function describe(e) {
  switch (e.stage) {
    case "quarantined": return `${esc(e.channel)} from ${esc(e.source)}: ` + (e.errors || []).map(x => `<code>${esc(x.field)}</code> ${esc(x.reason)}`).join("; ");
    case "recorded": return `${esc(e.change_type)} effective ${esc(e.effective_date)} via <b>${esc(e.channel || "rest")}</b> from <span class="dyn">${esc(e.source)}</span>; service level ${esc(e.service_level.state)}`;
    case "answered": return e.ack ? `ACK <b>${esc(e.ack)}</b> sent after commit` : `answered ${e.status_code}`;
    // A retraction as recorded in error, and the reversal of one made in error: who, by which key, the event that told it.
    case "retracted": return `retracted by <b>${esc(e.retracted_by)}</b> (<span class="dyn">${esc(e.source)}</span>) ${short(e.event_id)}`;
    case "reinstated": return `retraction reversed by <b>${esc(e.reinstated_by)}</b> (<span class="dyn">${esc(e.source)}</span>): the change reinstated ${short(e.event_id)}; retraction ${short(e.retraction_event_id)}`;
    case "event-derived": return `<b>${esc(e.event_type)}</b> ${e.citation ? "(" + esc(e.citation) + ")" : ""} ${short(e.event_id)}`;
    case "recipient-considered": return `${esc(e.recipient)}: <span class="${e.decision === "allowed" ? "ok" : "warn"}">${esc(e.decision)}</span> ${e.agreement ? "under " + esc(e.agreement) : ""} ${e.field_groups && e.field_groups.length ? "[" + e.field_groups.map(esc).join(", ") + "]" : ""} <span class="muted">${esc(e.reason)}</span>`;
    case "delivery-queued": return `to ${esc(e.recipient)} by ${esc(e.channel)}: ${esc(e.status)}, ${e.attempts} attempt(s) ${e.last_error ? '<span class="bad">' + esc(e.last_error) + "</span>" : ""}`;
    case "delivered": return `to ${esc(e.recipient)} by ${esc(e.channel)} after <span class="dyn">${e.latency_ms}</span> ms`;
    case "retry-scheduled": return `to ${esc(e.recipient)}: retry after ${e.attempts} attempt(s), ${esc(e.last_error)}`;
  }
  return "";
}
async function runTrace(ev) {
  if (ev) ev.preventDefault();
  const kind = $("tracekind").value, value = $("tracevalue").value.trim();
  if (!value) return;
  said = "";  // the same trace again is said again
  try {
    const t = await api(`/v1/ops/trace?${kind}=${encodeURIComponent(value)}`);
    draw($("traceout"), `<p class="muted">${t.changes} change(s), ${t.events} event(s)</p>` +
      // A timeline: each row headed by its stage (a row header), the table named by what was traced.
      (t.timeline.length ? `<table><caption class="visually-hidden">Trace of ${esc(kind.replaceAll("_", " "))} ${esc(value)}: ` +
        "time, stage and what happened, in order</caption><tbody>" +
        t.timeline.map(e => `<tr class="stage-${esc(e.stage)}"><td>${time(e.at)}</td><th scope="row"><span class="stage">${esc(e.stage)}</span></th><td>${describe(e)}</td></tr>`).join("") + "</tbody></table>"
       : '<p class="muted">Nothing recorded under that id.</p>'));
    announce(`trace: ${t.changes} change(s), ${t.events} event(s)` + (t.timeline.length ? "" : ": nothing recorded under that id"));
  } catch (e) { draw($("traceout"), `<p class="bad">${esc(e.message)}</p>`); announce("trace refused: " + e.message); }
}

const COLOURS = ["#005eb8", "#007f3b", "#d5281b", "#b35900", "#330072", "#4c6272"];
// Each series has its own dash as well as its colour (told apart without colour), shown in the legend.
const DASHES = ["", "6 3", "2 2", "8 3 2 3", "1 4", "10 4"];
const dash = k => DASHES[k % DASHES.length] ? ` stroke-dasharray="${DASHES[k % DASHES.length]}"` : "";
function chart(title, buckets, lines) {
  const w = 460, h = 140, pad = 28;
  const all = lines.flatMap(l => l.values.filter(v => v != null));
  const max = Math.max(1, Math.ceil(Math.max(0, ...all)));
  const x = i => pad + (w - pad - 6) * i / Math.max(1, buckets.length - 1);
  const y = v => h - 18 - (h - 42) * v / max;
  const paths = lines.map((l, k) => {
    const pts = l.values.map((v, i) => v == null ? null : `${x(i).toFixed(1)},${y(v).toFixed(1)}`).filter(Boolean);
    const colour = COLOURS[k % COLOURS.length];
    const dots = pts.length <= 60 ? pts.map(p => `<circle r="2" fill="${colour}" cx="${p.split(",")[0]}" cy="${p.split(",")[1]}"/>`).join("") : "";
    return pts.length ? `<polyline fill="none" stroke="${colour}" stroke-width="1.5"${dash(k)} points="${pts.join(" ")}"/>${dots}` : "";
  }).join("");
  // The legend, right-aligned: each series' line sample (its colour and dash) before its name.
  let right = w - 6;
  const legend = lines.slice().reverse().map((l, r) => {
    const k = lines.length - 1 - r, colour = COLOURS[k % COLOURS.length];
    const item = `<text x="${right}" y="12" font-size="11" text-anchor="end" fill="${colour}">${esc(l.label)}</text>`;
    right -= 6.5 * l.label.length + 4;
    const sample = `<line x1="${right - 18}" y1="8" x2="${right}" y2="8" stroke="${colour}" stroke-width="2"${dash(k)}/>`;
    right -= 28;
    return item + sample;
  }).join("");
  // In words for a screen reader: each series and its latest value (a chart is not read by colour or shape).
  const latest = l => { const v = [...l.values].reverse().find(x => x != null); return v == null ? "no data" : `latest ${v}`; };
  const words = `${title}: ` + (lines.length ? lines.map(l => `${l.label} ${latest(l)}`).join("; ") : "no series") +
    `; ${buckets.length} points, highest ${max}`;
  return `<div class="chart"><svg width="${w}" height="${h}" viewBox="0 0 ${w} ${h}" role="img" aria-label="${esc(words)}">
    <text x="${pad}" y="12" font-size="12" font-weight="600">${esc(title)}</text>
    ${legend}
    <line x1="${pad}" y1="${h - 18}" x2="${w - 6}" y2="${h - 18}" stroke="#aeb7bd"/>
    <text x="4" y="${y(max) + 10}" font-size="10" class="dyn">${max}</text><text x="4" y="${h - 14}" font-size="10">0</text>
    ${paths}</svg></div>`;
}
async function charts() {
  const s = await api(`/v1/ops/series?window=${$("window").value}`);
  const lines = (name, rename) => Object.entries(s.series[name] || {}).map(([label, values]) => ({label: rename || label, values}));
  draw($("chartsout"), 
    chart("Ingest per channel", s.buckets, lines("ingest")) +
    chart("Deliveries per channel", s.buckets, lines("delivered")) +
    chart("Delivery latency (ms)", s.buckets, [...lines("latency_p50_ms", "p50"), ...lines("latency_p99_ms", "p99")]) +
    chart("Consumer lag (dispatcher)", s.buckets, lines("lag", "lag")) +
    chart("Quarantined and dead letters", s.buckets, [...lines("quarantined", "quarantined"), ...lines("dead_letters", "dead letters")]));
}
async function spend() {
  const r = await api("/v1/reports/register-summary");
  const e = r.expenditure;
  if (!e) { draw($("spendout"),  '<p class="muted">No expenditure section.</p>'); return; }
  const num = v => (typeof v === "number" ? v : null);  // "*": suppressed, drawn as a gap
  const months = e.trend.map(t => t.month);
  const money = v => typeof v === "number" ? "£" + v.toLocaleString("en-GB") : esc(v);
  draw($("spendout"), 
    chart("Monthly s117 spend (£)", months,
          ["eligible", "council", "icb"].map(k => ({label: k, values: e.trend.map(t => num(t.spend[k]))}))) +
    table(e.rows, [["council", r => esc(r.council.code)], ["ICB", r => esc(r.commissioner.code)], ["people", r => esc(r.people)],
      ["committed / week", r => money(r.committed_weekly.eligible)], ["council share", r => money(r.committed_weekly.council)],
      ["ICB share", r => money(r.committed_weekly.icb)], ["projected this year", r => money(r.projected_year.eligible)]], "Aftercare spend per council and ICB") +
    `<p class="muted">Financial year ${esc(e.financial_year)}; ${esc(e.amounts || "")} · ${esc(e.citation || "")}</p>`);
}
async function withheld() {
  const w = await api("/v1/ops/withheld");
  draw($("withheldout"), table(w.groups, [["body", r => esc(r.recipient)], ["decision", r => `<span class="warn">${esc(r.decision)}</span>`],
    ["events", r => r.count], ["event types", r => Object.entries(r.event_types).map(([k, v]) => `${esc(k)} (${v})`).join(", ")],
    ["why", r => esc(r.reason)], ["last", r => time(r.last_at)]], "Withheld disclosures"));
}
async function lists() {
  const [recon, out] = await Promise.all([api("/v1/ops/reconciliation"), api("/v1/ops/exports")]);
  const kinds = ["missing-on-body-list", "missing-on-hub-register", "entitlement-differs", "responsible-body-differs", "dates-differ", "review-overdue"];
  draw($("recon"), table(recon.snapshots.slice(0, 60), [["body", r => esc(r.body)], ["list as of", r => esc(r.as_of)],
    ["compared", r => time(r.compared_at)], ["rows", r => r.rows],
    ["open", r => `<span class="${r.open ? "warn" : "ok"}">${r.open}</span>`], ["accepted", r => r.accepted], ["fixed", r => `<span class="ok">${r.fixed}</span>`],
    ...kinds.map(k => [k.replaceAll("-", " "), r => r.by_kind[k] || 0])], "Reconciliation: each body's list against the register"));
  const limit = t => t ? [t.drift_alert_open_items != null ? `${t.drift_alert_open_items} open` : "",
    t.drift_alert_percent != null ? `${t.drift_alert_percent}% of list` : ""].filter(Boolean).join(" or ") : "none";
  draw($("driftalerts"), table(recon.alerts || [], [["body", r => esc(r.body)], ["threshold", r => esc(limit(r.threshold))],
    ["open", r => r.open ?? "-"], ["alert", r => r.above ? '<span class="bad">above: alerted</span>' : '<span class="ok">below</span>'],
    ["last alert", r => r.last_alert_at ? time(r.last_alert_at) : "-"], ["snapshot", r => esc(r.last_alert_snapshot_id || "-")]], "Drift alerts"));
  draw($("exports"), table(out.items, [["council", r => esc(r.org_code)], ["file", r => esc(r.file_name)],
    ["mode", r => esc(r.mode)], ["rows", r => r.record_count], ["events", r => r.first_event_no == null ? "-" : `${r.first_event_no}-${r.last_event_no}`],
    ["ready", r => time(r.ready_at)], ["acknowledgement", r => r.overdue ? '<span class="bad">overdue</span>' : '<span class="warn">waiting</span>']], "Council files not yet acknowledged"));
}
const PAGES = {overview, trace: async () => {}, charts: async () => { await charts(); await spend(); }, withheld, audit: async () => {}, lists};
async function refresh() {
  try {
    await PAGES[tab]();
    // The tables' times are the hub's, in UTC: so is this one (in summer the browser's clock is an hour on).
    $("updated").textContent = `updated ${new Date().toISOString().slice(11, 19)} UTC · all times UTC` + (paused ? " · updates paused" : "");
    failing = false;
  } catch (e) {
    $("updated").textContent = "error: " + e.message;
    if (!failing) announce("the page could not be updated: " + e.message);  // once, not at every poll
    failing = true;
  }
}
let failing = false;
// The sections are tabs (the ARIA tabs pattern): one in the Tab order, the arrow keys, Home and End move along.
function show(name, focus = false) {
  tab = name;
  document.querySelectorAll("[role=tab]").forEach(b => {
    const on = b.dataset.tab === name;
    b.setAttribute("aria-selected", String(on)); b.tabIndex = on ? 0 : -1;
    if (on && focus) b.focus();
  });
  Object.keys(PAGES).forEach(p => { $(p).hidden = p !== name; });
  if (name === "overview") splitsAt = 0;  // opened: its split councils read afresh
  scrollRegions();  // (measured when shown: a hidden panel has no width)
  refresh();
}
document.querySelector("[role=tablist]").addEventListener("keydown", (ev) => {
  const tabs = [...document.querySelectorAll("[role=tab]")], at = tabs.findIndex(b => b.dataset.tab === tab);
  const to = {ArrowRight: at + 1, ArrowLeft: at - 1 + tabs.length, Home: 0, End: tabs.length - 1}[ev.key];
  if (to === undefined) return;
  ev.preventDefault();
  show(tabs[to % tabs.length].dataset.tab, true);
});
document.addEventListener("click", async (ev) => {
  const d = ev.target.dataset;
  if (d.tab) show(d.tab);
  // One press, one request: the button is disabled at once (a second press answered "409 replayed already").
  if (d.replay || d.retry || d.resume) ev.target.disabled = true;
  if (d.replay) act("replay", d.replay, `/v1/ops/dead-letters/${encodeURIComponent(d.replay)}/replay`);
  if (d.retry) act("retry", d.retry, `/v1/ops/deliveries/${encodeURIComponent(d.retry)}/retry`, deadRows.get(d.retry));
  if (d.resume) act("resume", d.resume, `/v1/ops/subscriptions/${encodeURIComponent(d.resume)}/resume`);
  if (d.replaySub) {  // a subscriber lost data: its messages since a time put back in its queue
    $("subreplay").hidden = false;
    $("subreplay").dataset.id = d.replaySub;
    $("subreplaywhat").textContent = `${d.org} ${d.channel} (${d.replaySub.slice(0, 8)})`;
    if (!$("subreplaysince").value) {
      const hourAgo = new Date(Date.now() - 3600e3 - new Date().getTimezoneOffset() * 60e3);
      $("subreplaysince").value = hourAgo.toISOString().slice(0, 16);
    }
    $("subreplaysince").focus();
  }
  if (d.traceMessage) {
    show("trace", true);
    $("tracekind").value = "source_message_id";
    $("tracevalue").value = d.traceMessage;
    runTrace();
  }
  if (d.release) {
    ev.target.disabled = true;
    release(d.release, heldRows.get(d.release) || {});
  }
});
$("traceform").addEventListener("submit", runTrace);
$("subreplay").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const id = $("subreplay").dataset.id, since = new Date($("subreplaysince").value);  // the browser's local time
  if (!id || isNaN(since)) return;
  closeReplay();
  act("replay subscription", id, `/v1/ops/subscriptions/${encodeURIComponent(id)}/replay?since=${encodeURIComponent(since.toISOString())}`,
      subRows.get(id) || {});
});
// Closed (Cancel, Escape or sent): the focus goes back to the Replay… button of the subscription it was opened for.
function closeReplay() {
  $("subreplay").hidden = true;
  const id = $("subreplay").dataset.id;
  const back = id && document.querySelector(`#subs button[data-replay-sub="${CSS.escape(id)}"]`);
  if (back) back.focus();
}
$("subreplaycancel").addEventListener("click", closeReplay);
$("subreplay").addEventListener("keydown", (ev) => { if (ev.key === "Escape") { ev.preventDefault(); closeReplay(); } });
$("window").addEventListener("change", refresh);
$("verify").onclick = async () => {
  $("verifyout").textContent = "checking...";
  said = "";
  try {
    const v = await api("/v1/ops/audit/verify");
    announce(v.ok ? `audit chain intact: ${v.entries_checked} entries checked` : `audit chain: ${v.problems.length} problem(s)`);
    draw($("verifyout"), v.ok ? `<span class="ok">intact: ${v.entries_checked} entries checked</span>`
      : `<span class="bad">${v.problems.length} problem(s)</span>` + table(v.problems, [["entry", r => esc(r.seq ?? r.day)], ["problem", r => esc(r.problem)]], "Problems in the audit chain"));
  } catch (e) { draw($("verifyout"), `<span class="bad">${esc(e.message)}</span>`); announce("audit chain not verified: " + e.message); }
};
async function start() {
  $("err").textContent = "";
  try { await api("/v1/ops/flows"); } catch (e) { $("err").textContent = e.message; return; }
  $("login").hidden = true; $("app").hidden = false; $("logout").hidden = false;
  $("key").value = "";  // kept in this tab's sessionStorage alone, not in the page
  show("overview", true);  // the sign-in box is gone: the focus goes to the console's first control
  $("pause").hidden = false;
  setInterval(() => { if (!paused && tab !== "trace" && tab !== "audit") refresh(); }, 5000);
}
$("signin").onclick = () => { key = $("key").value.trim(); sessionStorage.setItem("s117key", key); start(); };
$("key").addEventListener("keydown", (ev) => { if (ev.key === "Enter") $("signin").click(); });
// The panels update every 5 s: Pause updates stops that (WCAG 2.2.2) until pressed again; what is pressed still
// redraws (an action's outcome, a tab chosen).
let paused = false;
$("pause").onclick = () => {
  paused = !paused;
  $("pause").setAttribute("aria-pressed", String(paused));
  if (paused) $("updated").textContent += " · updates paused";
  else refresh();
};
$("logout").onclick = () => { sessionStorage.removeItem("s117key"); location.reload(); };
if (key) start();
