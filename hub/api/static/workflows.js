// Open transfers and disputes (GET /console/workflows): served as /console/workflows.js, the page's only
// script (its Content-Security-Policy allows scripts from the hub alone: no inline script, no on...= handlers).
const $ = (id) => document.getElementById(id);
const esc = (v) => String(v ?? "").replace(/[&<>"']/g, c => ({"&":"&amp;","<":"&lt;",">":"&gt;",'"':"&quot;","'":"&#39;"}[c]));
let key = sessionStorage.getItem("s117key");
async function api(path) {
  const r = await fetch(path, {headers: {"X-API-Key": key}});
  const body = await r.json();
  if (!r.ok) throw new Error(body.detail || r.status);
  return body;
}
function clockCell(c) {
  if (c.clock.breached) return `<span class="bad">overdue ${c.clock.working_days_overdue} working days</span>`;
  return `<span class="${c.clock.working_days_left <= 2 ? "warn" : "ok"}">${c.clock.working_days_left} working days left</span>`;
}
function what(c) {
  if (c.kind === "transfer") return `${esc(c.role)}: ${esc(c.outgoing)} → ${esc(c.incoming)}`;
  return `${esc(c.dispute_kind)}: ${c.parties.map(esc).join(" / ")} · stage ${c.stage_index + 1} of ${c.stages.length}: ${esc(c.stages[c.stage_index].name)}`;
}
async function refresh() {
  try {
    const [transfers, disputes] = await Promise.all([api("/v1/transfers"), api("/v1/disputes")]);
    const open = [...transfers.items, ...disputes.items].filter(c => c.clock);
    // Oldest breach first: the earliest deadline is the longest overdue.
    open.sort((a, b) => a.clock.due_on.localeCompare(b.clock.due_on) || a.opened_on.localeCompare(b.opened_on));
    $("cases").innerHTML = !open.length ? '<p class="muted">No open cases.</p>' :
      '<table><caption class="visually-hidden">Open transfers and disputes, oldest breach first</caption><thead><tr>' +
      ["kind", "case", "state", "what", "clock owner", "due", "clock", "age"].map(h => `<th scope="col">${h}</th>`).join("") +
      "</tr></thead><tbody>" +
      open.map(c => `<tr data-case="${esc(c.case_id)}"><td>${esc(c.kind)}</td><td>${esc(c.case_id.slice(0, 8))}</td>` +
        `<td>${esc(c.state)}</td><td>${what(c)}</td><td>${esc(c.clock.owner)}</td><td>${esc(c.clock.due_on)}</td>` +
        `<td>${clockCell(c)}</td><td>${c.age_days} days</td></tr>`).join("") + "</tbody></table>";
    scrollRegion();
    $("updated").textContent = "as of " + transfers.as_of;
    failing = false;
  } catch (e) {
    $("updated").textContent = "error: " + e.message;
    if (!failing) $("announce").textContent = "the page could not be updated: " + e.message;  // once, not every poll
    failing = true;
  }
}
let failing = false;
// Wider than the window (at 320 px), the table scrolls in its own region, not the page: a named region the
// keyboard can focus, to scroll it with the arrow keys.
function scrollRegion() {
  const d = $("cases");
  if (d.scrollWidth > d.clientWidth + 1) {
    d.tabIndex = 0; d.setAttribute("role", "region"); d.setAttribute("aria-label", "Open cases (scrolls sideways)");
  } else if (document.activeElement !== d) { d.removeAttribute("tabindex"); d.removeAttribute("role"); d.removeAttribute("aria-label"); }
}
window.addEventListener("resize", scrollRegion);
async function start() {
  $("err").textContent = "";
  try { await api("/v1/transfers"); } catch (e) { $("err").textContent = e.message; return; }
  $("login").hidden = true; $("app").hidden = false; $("logout").hidden = false;
  $("cases-heading").focus();  // the sign-in box is gone: the focus goes to what the page shows
  $("pause").hidden = false;
  refresh(); setInterval(() => { if (!paused) refresh(); }, 5000);
}
$("signin").onclick = () => { key = $("key").value.trim(); sessionStorage.setItem("s117key", key); start(); };
$("key").addEventListener("keydown", (ev) => { if (ev.key === "Enter") $("signin").click(); });
// Updated every 5 s: Pause updates stops that (WCAG 2.2.2) until pressed again.
let paused = false;
$("pause").onclick = () => {
  paused = !paused;
  $("pause").setAttribute("aria-pressed", String(paused));
  if (paused) $("updated").textContent += " · updates paused";
  else refresh();
};
$("logout").onclick = () => { sessionStorage.removeItem("s117key"); location.reload(); };
if (key) start();
