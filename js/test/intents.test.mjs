// Intents that wait for a busy kernel: pending state at once, an explanation after ~1 s,
// cleared only by the kernel's confirmation (ack) or a state change; disabled controls
// with a reason when another process owns the registration or the kernel is gone.
import { test } from "node:test";
import assert from "node:assert/strict";
import { STALE_REASON, createPanel, intentCode, mount, nextSeq, shellWord } from "../src/render.js";
import { FakeModel, makeDom, snapshot, syncSchedule } from "./helpers.mjs";

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function setup(snap, options = {}) {
  const dom = makeDom();
  const doc = dom.window.document;
  const sent = [];
  const panel = createPanel(doc, (m) => sent.push(m), options);
  doc.body.appendChild(panel.el);
  panel.update(snap, 0);
  return { doc, panel, sent };
}

test("a click shows the pending state at once and keeps every button off until acked", async () => {
  const snap = snapshot({ id: "big", state: "active" });
  const { panel, sent } = setup(snap, { slowIntentMs: 30 });
  const b = panel.buttons;
  b.pause.click();
  assert.equal(sent.length, 1);
  assert.equal(b.pause.textContent, "Pausing\u2026");
  assert.equal(b.pause.getAttribute("aria-busy"), "true");
  assert.equal(b.pause.disabled, true);
  assert.equal(b.abort.disabled, true);
  assert.equal(panel.el.dataset.pending, "pause");
  assert.equal(panel.notice.hidden, true); // not yet: the kernel may answer in time
  b.abort.click(); // ignored while pending: no second intent queued behind the first
  assert.equal(sent.length, 1);

  await sleep(60); // no confirmation within the delay: say why, and what else works
  assert.equal(panel.notice.hidden, false);
  assert.equal(panel.notice.dataset.kind, "slow");
  assert.match(panel.notice.textContent, /kernel is busy: Pause takes effect when the running cell finishes/);
  assert.equal(panel.notice.querySelector("code").textContent, "%bgfetch pause big");
  // Still pending, still off (no timeout turns a dead button back on).
  panel.update(snapshot({ id: "big", state: "active", downloaded: 10 }), 0);
  assert.equal(b.pause.disabled, true);
  assert.equal(b.pause.textContent, "Pausing\u2026");

  // An ack for an older intent changes nothing; the ack of this one clears it.
  panel.update(snapshot({ id: "big", state: "active" }), sent[0].seq - 1);
  assert.equal(b.pause.textContent, "Pausing\u2026");
  panel.update(snapshot({ id: "big", state: "paused" }), sent[0].seq);
  assert.equal(panel.notice.hidden, true);
  assert.equal(b.pause.hidden, true);
  assert.equal(b.resume.hidden, false);
  assert.equal(b.resume.disabled, false);
  assert.equal(b.resume.textContent, "Resume");
  assert.equal(panel.el.dataset.pending, undefined);
});

test("an ack without a state change (the intent had nothing to do) also clears pending", () => {
  const { panel, sent } = setup(snapshot({ state: "active" }));
  panel.buttons.pause.click();
  assert.equal(panel.buttons.pause.disabled, true);
  panel.update(snapshot({ state: "active" }), sent[0].seq);
  assert.equal(panel.buttons.pause.disabled, false);
  assert.equal(panel.buttons.pause.textContent, "Pause");
});

test("a title click waits too, and its note has no code line; buttons stay usable", async () => {
  const { panel, sent } = setup(snapshot({ state: "active" }), { slowIntentMs: 20 });
  panel.title.click();
  assert.equal(panel.title.getAttribute("aria-busy"), "true");
  assert.equal(panel.buttons.pause.disabled, false);
  await sleep(50);
  assert.match(panel.notice.textContent, /The click takes effect when the running cell finishes/);
  assert.equal(panel.notice.querySelector("code").hidden, true);
  panel.update(snapshot({ state: "active" }), sent[0].seq);
  assert.equal(panel.notice.hidden, true);
  assert.equal(panel.title.getAttribute("aria-busy"), null);
});

test("sequence numbers increase across panels; codes quote odd ids", () => {
  const a = nextSeq();
  const b = nextSeq();
  assert.ok(b > a);
  assert.equal(shellWord("my-fetch_1.2"), "my-fetch_1.2");
  assert.equal(shellWord("it's <b>"), `'it'"'"'s <b>'`);
  assert.equal(intentCode("abort", "a b"), "%bgfetch abort 'a b'");
  assert.equal(intentCode("click", "a"), "");
});

test("another process owns it: controls shown disabled, with the reason", () => {
  const reason = "Another process sharing this home downloads this registration: pause, resume or abort it from there.";
  const { panel, sent } = setup(snapshot({ state: "active", controls_disabled: reason }));
  assert.equal(panel.buttons.pause.hidden, false);
  assert.equal(panel.buttons.pause.disabled, true);
  assert.equal(panel.buttons.abort.disabled, true);
  assert.equal(panel.notice.hidden, false);
  assert.equal(panel.notice.dataset.kind, "disabled");
  assert.equal(panel.notice.textContent, reason);
  panel.buttons.pause.click();
  assert.equal(sent.length, 0);
});

test("mount(): the kernel going away disables the controls at once, before any click", () => {
  const dom = makeDom();
  const doc = dom.window.document;
  const el = doc.createElement("div");
  doc.body.appendChild(el);
  const model = new FakeModel({ state: snapshot({ id: "a", state: "active" }), ack: 0 });
  mount(model, el, { schedule: syncSchedule });
  const pause = el.querySelector(".ipybgfetch-pause");
  assert.equal(pause.disabled, false);
  for (const cb of model.handlers.get("comm_live_update")) cb(); // ipywidgets on a restart
  assert.equal(pause.disabled, true);
  assert.equal(el.querySelector(".ipybgfetch-error").hidden, false);
  assert.equal(el.querySelector(".ipybgfetch-notice").textContent, STALE_REASON);
  model.set("state", snapshot({ id: "a", state: "active", downloaded: 5 }));
  assert.equal(pause.disabled, true);
  pause.click();
  assert.equal(model.sent.length, 0);
  // no "31 s left" from a dead kernel: the badge says it is the last known state
  assert.equal(el.querySelector(".ipybgfetch-badge").textContent, "Downloading (last known)");
  assert.equal(el.querySelector(".ipybgfetch-eta").hidden, true);
  assert.equal(el.querySelector(".ipybgfetch-speed").textContent, "no longer updated");
});

test("mount(): the ack trait reaches the panel with the state it came with", () => {
  const dom = makeDom();
  const doc = dom.window.document;
  const el = doc.createElement("div");
  const model = new FakeModel({ state: snapshot({ id: "a", state: "active" }), ack: 0 });
  mount(model, el, { schedule: syncSchedule });
  const pause = el.querySelector(".ipybgfetch-pause");
  pause.click();
  assert.equal(pause.disabled, true);
  model.set("ack", model.sent[0].seq);
  assert.equal(pause.disabled, false);
});
