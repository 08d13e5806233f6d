// watcher console: the provider switch, copy buttons, "Test connection" in place, live events, and an operator's workspace switch.
// Plain script, no build step; every page works without it (links and forms), this only makes it nicer.
"use strict";

function providerSwitch(form) {
  function show(key) {
    for (const set of form.querySelectorAll(".provider-fields")) {
      const on = set.dataset.provider === key;
      set.hidden = !on;
      set.disabled = !on; // a disabled fieldset's inputs are not submitted: only the chosen provider's are
    }
  }
  for (const radio of form.querySelectorAll('input[name="provider"]')) {
    radio.addEventListener("change", () => { clearMessages(form); show(radio.value); });
  }
}

function clearMessages(form) {
  for (const el of form.querySelectorAll(".field-error, #form-error, #form-notice")) {
    el.hidden = true;
    el.textContent = "";
  }
}

function showOutcome(form, outcome) {
  clearMessages(form);
  const where = outcome.ok ? form.querySelector("#form-notice") : (
    outcome.field && form.querySelector(`fieldset:not([disabled]) [data-error-for="${outcome.field}"], ` +
      `:scope > .field [data-error-for="${outcome.field}"], .providers [data-error-for="${outcome.field}"]`)
  ) || form.querySelector("#form-error");
  where.textContent = outcome.message;
  where.hidden = false;
}

function testInPlace(form) {
  // "Test connection" without leaving the page, so the secrets typed stay in the browser's fields.
  const button = form.querySelector("#test-connection");
  button.addEventListener("click", async (event) => {
    event.preventDefault();
    const data = new FormData(form);
    data.set("action", "test");
    button.disabled = true;
    const label = button.textContent;
    button.textContent = "Testing…";
    try {
      const response = await fetch(form.getAttribute("action"), { method: "POST", body: data, headers: { Accept: "application/json" } });
      const type = response.headers.get("content-type") || "";
      showOutcome(form, type.includes("json") ? await response.json()
        : { ok: false, message: `the console answered ${response.status}: reload the page and try again` });
    } catch (error) {
      showOutcome(form, { ok: false, message: "the console did not answer: is watcher still running?" });
    } finally {
      button.disabled = false;
      button.textContent = label;
    }
  });
}

function copyButtons() {
  for (const button of document.querySelectorAll(".copy-button")) {
    button.addEventListener("click", async () => {
      const text = button.dataset.copy;
      let copied = false;
      try {
        await navigator.clipboard.writeText(text);
        copied = true;
      } catch (error) {
        const area = document.createElement("textarea");
        area.value = text;
        document.body.appendChild(area);
        area.select();
        copied = document.execCommand("copy");
        area.remove();
      }
      const label = button.textContent;
      button.textContent = copied ? "Copied" : "Press Ctrl+C";
      button.dataset.copied = copied ? "1" : "0";
      setTimeout(() => { button.textContent = label; }, 1500);
    });
  }
}

function utc(text) {
  const moment = new Date(text);
  return isNaN(moment) ? text : moment.toISOString().replace("T", " ").replace(/\.\d+Z$/, " UTC");
}

function cell(text, className) {
  const td = document.createElement("td");
  if (className) td.className = className;
  td.textContent = text;
  return td;
}

function eventRow(event) {
  const row = document.createElement("tr");
  row.dataset.id = event.id;
  row.className = "fresh";
  row.append(cell(utc(event.detected_at)), cell(event.registry), cell(event.repository), cell(event.tag, "tag"));
  const change = document.createElement("td");
  const badge = document.createElement("span");
  badge.className = `badge change-${event.change}`;
  badge.textContent = event.change;
  change.append(badge);
  const digest = document.createElement("td");
  const code = document.createElement("code");
  code.title = event.digest;
  const [algorithm, hexes] = (event.digest || "").split(":");
  code.textContent = hexes ? `${algorithm}:${hexes.slice(0, 12)}` : event.digest;
  digest.append(code);
  row.append(change, digest);
  return row;
}

function liveEvents(table) {
  // New events arrive over /api/v1/events/stream (the session cookie authenticates it). Once connected,
  // the history after the newest shown row is fetched too, so an event committed between rendering the
  // page and connecting is not missed; rows are keyed by history id, so none shows twice.
  const body = table.tBodies[0];
  const status = document.getElementById("live");
  const seen = new Set([...body.rows].map((row) => Number(row.dataset.id)));
  const filters = new URLSearchParams();
  for (const key of ["registry", "repository", "tag", "change"]) {
    if (table.dataset[key]) filters.set(key, table.dataset[key]);
  }
  function add(event) {
    if (seen.has(event.id)) return;
    seen.add(event.id);
    const rows = [...body.rows];
    const before = rows.find((row) => Number(row.dataset.id) < event.id);
    body.insertBefore(eventRow(event), before || null);
    const empty = document.getElementById("no-events");
    if (empty) empty.remove();
  }
  async function fillGap() {
    const query = new URLSearchParams(filters);
    query.set("order", "asc");
    query.set("cursor", table.dataset.gapCursor);
    query.set("limit", "1000");
    const response = await fetch(`/api/v1/events?${query}`, { headers: { Accept: "application/json" } });
    if (response.ok) (await response.json()).items.forEach(add);
  }
  const source = new EventSource(`/api/v1/events/stream?${filters}`);
  source.addEventListener("open", () => {
    fillGap().finally(() => {
      status.dataset.state = "live";
      status.textContent = "live";
    });
  });
  source.addEventListener("message", (message) => add(JSON.parse(message.data)));
  source.addEventListener("error", () => {
    status.dataset.state = "reconnecting";
    status.textContent = source.readyState === EventSource.CLOSED ? "disconnected: reload the page" : "reconnecting…";
  });
}

function workspaceSwitch(form) {
  // An operator's choice of workspace takes effect at once; the button stays for a browser without script.
  const choice = form.querySelector("select");
  choice.addEventListener("change", () => form.requestSubmit());
}

document.addEventListener("DOMContentLoaded", () => {
  const switcher = document.getElementById("workspace-switch");
  if (switcher) workspaceSwitch(switcher);
  const form = document.getElementById("add-form");
  if (form) {
    providerSwitch(form);
    testInPlace(form);
  }
  copyButtons();
  const events = document.getElementById("events");
  if (events && events.dataset.live) liveEvents(events);
});
