import { test } from "node:test";
import assert from "node:assert/strict";
import {
  MAX_PANELS,
  MAX_ROWS,
  STALE_MESSAGE,
  createManagerView,
  createPanel,
  mount,
} from "../src/render.js";
import panelModule from "../src/panel.js";
import { FakeModel, makeDom, manyRecords, snapshot, syncSchedule } from "./helpers.mjs";

const HOSTILE_TITLE = "<img src=x onerror=alert(1)>";
const HOSTILE_URL = "http://127.0.0.1:8000/<script>alert(2)</script>?q=\"><img src=y onerror=alert(3)>";
const HOSTILE_ERROR = "<b>boom</b><iframe src=javascript:alert(4)>";

function setup(snap, { send } = {}) {
  const dom = makeDom();
  const doc = dom.window.document;
  const sent = [];
  const panel = createPanel(doc, send ?? ((m) => sent.push(m)));
  doc.body.appendChild(panel.el);
  panel.update(snap);
  return { dom, doc, panel, sent };
}

/** An intent without its sequence number (checked on its own). */
function bare(msg) {
  const { seq, ...rest } = msg;
  assert.equal(typeof seq, "number");
  return rest;
}

function openRecords(panel, dom) {
  const details = panel.records.el;
  details.open = true;
  details.dispatchEvent(new dom.window.Event("toggle"));
}

test("hostile title, URL and error render literally: no element is created from them", () => {
  const snap = snapshot({
    title: HOSTILE_TITLE,
    id: "<svg onload=alert(5)>",
    records: [
      { index: 0, url: HOSTILE_URL, status: 500, state: "failure", downloaded: 10, total: 20, error: HOSTILE_ERROR, attempts: 3 },
    ],
    icons: [{ src: "javascript:alert(6)", sizes: "32x32", type: "image/png" }],
  });
  const { dom, doc, panel } = setup(snap);
  openRecords(panel, dom);
  assert.equal(panel.title.textContent, HOSTILE_TITLE);
  assert.equal(doc.querySelector(".ipybgfetch-id").textContent, "<svg onload=alert(5)>");
  assert.equal(doc.querySelector("div.ipybgfetch-rec-url").textContent, HOSTILE_URL);
  assert.equal(doc.querySelector("div.ipybgfetch-rec-error").textContent, HOSTILE_ERROR);
  // the only <img> is our icon, hidden and without a src (javascript: is refused)
  const imgs = doc.querySelectorAll("img");
  assert.equal(imgs.length, 1);
  assert.equal(imgs[0].className, "ipybgfetch-icon");
  assert.equal(imgs[0].hasAttribute("src"), false);
  assert.equal(imgs[0].hidden, true);
  for (const tag of ["script", "svg", "iframe", "b"]) assert.equal(doc.querySelectorAll(tag).length, 0, tag);
  // no attribute anywhere carries an event handler
  for (const el of doc.querySelectorAll("*")) {
    for (const attr of el.attributes) assert.ok(!attr.name.startsWith("on"), `${el.tagName} ${attr.name}`);
  }
  // the title is also literal in the accessible names
  assert.equal(panel.el.getAttribute("aria-label"), `Background fetch ${HOSTILE_TITLE}`);
  assert.equal(panel.buttons.abort.getAttribute("aria-label"), `Abort ${HOSTILE_TITLE}`);
});

test("icon: safe src is used with alt text", () => {
  const { doc } = setup(
    snapshot({ icons: [{ src: "https://example.org/i.png", sizes: "64x64", type: "image/png" }] }),
  );
  const img = doc.querySelector("img.ipybgfetch-icon");
  assert.equal(img.getAttribute("src"), "https://example.org/i.png");
  assert.equal(img.getAttribute("alt"), "Icon of Dataset");
  assert.equal(img.hidden, false);
});

test("progressbar: aria values when determinate, none when indeterminate", () => {
  const { panel } = setup(snapshot({ downloaded: 250, expected_bytes: 1000 }));
  const bar = panel.bar;
  assert.equal(bar.getAttribute("role"), "progressbar");
  assert.equal(bar.getAttribute("aria-valuemin"), "0");
  assert.equal(bar.getAttribute("aria-valuemax"), "1000");
  assert.equal(bar.getAttribute("aria-valuenow"), "250");
  assert.match(bar.getAttribute("aria-valuetext"), /^25%/);
  assert.equal(bar.hasAttribute("data-indeterminate"), false);
  assert.equal(bar.firstChild.style.width, "25%");
  assert.ok(bar.getAttribute("aria-label").includes("Dataset"));

  panel.update(snapshot({ downloaded: 600, expected_bytes: null, download_total: 0 }));
  assert.equal(bar.hasAttribute("aria-valuenow"), false);
  assert.equal(bar.hasAttribute("aria-valuemax"), false);
  assert.equal(bar.hasAttribute("data-indeterminate"), true);
  assert.equal(bar.getAttribute("aria-valuetext"), "600 B downloaded");

  panel.update(snapshot({ downloaded: 600, download_total: 6000 }));
  assert.equal(bar.getAttribute("aria-valuemax"), "6000");
  assert.equal(bar.getAttribute("aria-valuenow"), "600");
});

test("stats: bytes, speed, ETA and records while active; duration once settled", () => {
  const { doc, panel } = setup(
    snapshot({ downloaded: 2 ** 20, expected_bytes: 4 * 2 ** 20, speed: 2 ** 19, eta: 6, records_total: 4, records_done: 1 }),
  );
  const q = (s) => doc.querySelector(s);
  assert.equal(q(".ipybgfetch-bytes").textContent, "1.00 MiB of 4.00 MiB");
  assert.equal(q(".ipybgfetch-speed").textContent, "512 KiB/s");
  assert.equal(q(".ipybgfetch-eta").textContent, "6 s left");
  assert.equal(q(".ipybgfetch-recs").textContent, "1 / 4 records");
  assert.equal(q(".ipybgfetch-percent").textContent, "25%");
  assert.equal(q(".ipybgfetch-badge").textContent, "Downloading");
  panel.update(
    snapshot({
      state: "success",
      result: "success",
      downloaded: 4 * 2 ** 20,
      expected_bytes: 4 * 2 ** 20,
      records_total: 4,
      records_done: 4,
      started: 100,
      finished: 104,
    }),
  );
  assert.equal(q(".ipybgfetch-badge").textContent, "Complete");
  assert.equal(q(".ipybgfetch-speed").textContent, "in 4 s");
  assert.equal(q(".ipybgfetch-eta").textContent, "avg 1.00 MiB/s");
  assert.equal(q(".ipybgfetch-percent").textContent, "100%");
});

test("buttons send the right intents and follow the state", () => {
  const { panel, sent } = setup(snapshot({ id: "dl-1", state: "active" }));
  const b = panel.buttons;
  assert.equal(b.pause.hidden, false);
  assert.equal(b.resume.hidden, true);
  assert.equal(b.abort.hidden, false);
  assert.equal(b.abort.getAttribute("aria-label"), "Abort Dataset");
  assert.equal(b.pause.getAttribute("aria-label"), "Pause Dataset");
  b.pause.click();
  assert.deepEqual(bare(sent.at(-1)), { type: "pause", id: "dl-1" });
  // disabled until the state changes (no double intents)
  assert.equal(b.pause.disabled, true);
  assert.equal(b.abort.disabled, true);
  panel.update(snapshot({ id: "dl-1", state: "paused" }));
  assert.equal(b.pause.hidden, true);
  assert.equal(b.resume.hidden, false);
  assert.equal(b.resume.disabled, false);
  assert.equal(b.resume.getAttribute("aria-label"), "Resume Dataset");
  b.resume.click();
  assert.deepEqual(bare(sent.at(-1)), { type: "resume", id: "dl-1" });
  panel.update(snapshot({ id: "dl-1", state: "active" }));
  b.abort.click();
  assert.deepEqual(bare(sent.at(-1)), { type: "abort", id: "dl-1" });
  panel.title.click();
  assert.deepEqual(bare(sent.at(-1)), { type: "click", id: "dl-1" });
  assert.equal(sent.length, 4);
});

test("buttons are hidden and disabled once settled; the title still fires click", () => {
  for (const extra of [
    { state: "success", result: "success" },
    { state: "failure", result: "failure", failure_reason: "bad-status" },
    { state: "aborted", result: "failure", failure_reason: "aborted" },
  ]) {
    const { panel, sent, doc } = setup(snapshot({ ...extra, key: "r1" }));
    for (const b of Object.values(panel.buttons)) {
      assert.equal(b.hidden, true);
      assert.equal(b.disabled, true);
    }
    assert.equal(doc.querySelector(".ipybgfetch-actions").hidden, true);
    panel.title.click();
    assert.deepEqual(sent.map(bare), [{ type: "click", id: "my-fetch", key: "r1" }]);
  }
});

test("records list: built only when opened, keyed rows are reused, per-record progress", () => {
  const { dom, doc, panel } = setup(
    snapshot({
      records_total: 2,
      records: [
        { index: 0, url: "http://h/a", status: 200, state: "active", downloaded: 50, total: 100, error: "", attempts: 1 },
        { index: 1, url: "http://h/b", status: 0, state: "pending", downloaded: 0, total: null, error: "", attempts: 0 },
      ],
    }),
  );
  assert.equal(doc.querySelectorAll("tr.ipybgfetch-record").length, 0);
  assert.equal(doc.querySelector("summary").textContent, "Records (2)");
  openRecords(panel, dom);
  const rows = doc.querySelectorAll("tr.ipybgfetch-record");
  assert.equal(rows.length, 2);
  const firstRow = rows[0];
  const bar = firstRow.querySelector("[role=progressbar]");
  assert.equal(bar.getAttribute("aria-valuenow"), "50");
  assert.equal(bar.getAttribute("aria-valuemax"), "100");
  assert.equal(firstRow.querySelector(".ipybgfetch-rec-status").textContent, "200");
  assert.equal(firstRow.querySelector(".ipybgfetch-rec-size").textContent, "50 B / 100 B");
  assert.equal(rows[1].querySelector("[role=progressbar]").hasAttribute("aria-valuenow"), false);
  assert.equal(firstRow.querySelector(".ipybgfetch-rec-error").hidden, true);

  // an update reorders (failed first) and reuses the same <tr> nodes
  panel.update(
    snapshot({
      records_total: 2,
      records: [
        { index: 1, url: "http://h/b", status: 404, state: "failure", downloaded: 9, total: 9, error: "bad status 404", attempts: 1 },
        { index: 0, url: "http://h/a", status: 200, state: "active", downloaded: 80, total: 100, error: "", attempts: 2 },
      ],
    }),
  );
  const after = doc.querySelectorAll("tr.ipybgfetch-record");
  assert.equal(after[1], firstRow, "row for record 0 reused");
  assert.equal(after[0].querySelector(".ipybgfetch-rec-error").textContent, "bad status 404");
  assert.equal(after[0].querySelector(".ipybgfetch-rec-error").hidden, false);
  assert.equal(after[0].getAttribute("data-state"), "failure");
  assert.equal(firstRow.querySelector(".ipybgfetch-rec-status").textContent, "200 (try 2)");
  assert.equal(firstRow.querySelector("[role=progressbar]").getAttribute("aria-valuenow"), "80");

  // closing drops the rows
  panel.records.el.open = false;
  panel.records.el.dispatchEvent(new dom.window.Event("toggle"));
  assert.equal(doc.querySelectorAll("tr.ipybgfetch-record").length, 0);
});

test("updates are incremental: unchanged text nodes are not rewritten", () => {
  const { doc, panel } = setup(snapshot({ downloaded: 10, expected_bytes: 100 }));
  const title = panel.title;
  const badge = doc.querySelector(".ipybgfetch-badge");
  const titleText = title.firstChild;
  const badgeText = badge.firstChild;
  const count = doc.querySelectorAll("*").length;
  panel.update(snapshot({ downloaded: 20, expected_bytes: 100 }));
  assert.equal(title.firstChild, titleText);
  assert.equal(badge.firstChild, badgeText);
  assert.equal(doc.querySelectorAll("*").length, count);
});

function nodeCount(doc) {
  return doc.querySelectorAll("*").length;
}

test("10,000 records: bounded rows, aggregates shown, fast", () => {
  const records = manyRecords(10000);
  const { dom, doc, panel } = setup(
    snapshot({ records_total: 10000, records_done: 5000, records_active: 10000, records, records_truncated: true }),
  );
  const t0 = performance.now();
  openRecords(panel, dom);
  for (let i = 0; i < 20; i++) {
    panel.update(
      snapshot({ records_total: 10000, records_done: 5000 + i, records, records_truncated: true, downloaded: i }),
    );
  }
  const ms = performance.now() - t0;
  assert.equal(doc.querySelectorAll("tr.ipybgfetch-record").length, MAX_ROWS);
  assert.ok(nodeCount(doc) < 3000, `node count ${nodeCount(doc)}`);
  assert.match(doc.querySelector(".ipybgfetch-records-note").textContent, /Showing 200 of 10,000 records/);
  assert.equal(doc.querySelector(".ipybgfetch-recs").textContent, "5,019 / 10,000 records");
  assert.ok(ms < 3000, `20 updates of a 10,000-record snapshot took ${ms} ms`);
});

test("manager view: newest first, keyed panels reused, bounded with 10,000 records and many registrations", () => {
  const dom = makeDom();
  const doc = dom.window.document;
  const sent = [];
  const view = createManagerView(doc, (m) => sent.push(m));
  doc.body.appendChild(view.el);
  view.update([]);
  assert.equal(doc.querySelector(".ipybgfetch-empty").hidden, false);

  const regs = [
    snapshot({ id: "old", key: "k-old", title: "Old", state: "success", result: "success" }),
    snapshot({
      id: "big",
      key: "k-big",
      title: "Big",
      records_total: 10000,
      records: manyRecords(10000),
      records_truncated: true,
    }),
  ];
  view.update(regs);
  assert.equal(doc.querySelector(".ipybgfetch-empty").hidden, true);
  const titles = [...doc.querySelectorAll(".ipybgfetch-title")].map((n) => n.textContent);
  assert.deepEqual(titles, ["Big", "Old"]);
  const bigPanel = doc.querySelector(".ipybgfetch-panel");
  for (const d of doc.querySelectorAll("details")) {
    d.open = true;
    d.dispatchEvent(new dom.window.Event("toggle"));
  }
  assert.ok(nodeCount(doc) < 3500, `node count ${nodeCount(doc)}`);

  // a new registration goes on top; existing panels are the same nodes
  view.update([...regs, snapshot({ id: "new", key: "k-new", title: "New" })]);
  const panels = doc.querySelectorAll(".ipybgfetch-panel");
  assert.equal(panels[0].querySelector(".ipybgfetch-title").textContent, "New");
  assert.equal(panels[1], bigPanel);
  panels[0].querySelector(".ipybgfetch-abort").click();
  assert.deepEqual(bare(sent.at(-1)), { type: "abort", id: "new", key: "k-new" });

  // thousands of registrations: at most MAX_PANELS panels
  const lots = [];
  for (let i = 0; i < 1000; i++) lots.push(snapshot({ id: `r${i}`, key: `k${i}`, records: manyRecords(3) }));
  view.update(lots);
  assert.equal(doc.querySelectorAll(".ipybgfetch-panel").length, MAX_PANELS);
  assert.equal(doc.querySelector(".ipybgfetch-more").textContent, "and 900 older, not shown");
  assert.equal(doc.querySelector(".ipybgfetch-title").textContent, "Dataset");
  assert.equal(doc.querySelector(".ipybgfetch-id").textContent, "r999");
});

test("mount(): follows model traits, shows errors, cleans up listeners", () => {
  const dom = makeDom();
  const doc = dom.window.document;
  const el = doc.createElement("div");
  doc.body.appendChild(el);
  const model = new FakeModel({ state: snapshot({ id: "a", downloaded: 1, expected_bytes: 4 }) });
  const cleanup = mount(model, el, { schedule: syncSchedule });
  assert.equal(el.querySelectorAll(".ipybgfetch-panel").length, 1);
  const bar = el.querySelector(".ipybgfetch-bar");
  model.set("state", snapshot({ id: "a", downloaded: 3, expected_bytes: 4 }));
  assert.equal(bar.getAttribute("aria-valuenow"), "3");
  el.querySelector(".ipybgfetch-abort").click();
  assert.deepEqual(model.sent.map(bare), [{ type: "abort", id: "a" }]);

  model.set("error", "InvalidStateError: <b>already settled</b>");
  const banner = el.querySelector(".ipybgfetch-error");
  assert.equal(banner.hidden, false);
  assert.equal(banner.getAttribute("role"), "alert");
  assert.equal(banner.textContent, "InvalidStateError: <b>already settled</b>");
  assert.equal(el.querySelectorAll("b").length, 0);
  model.set("error", "");
  assert.equal(banner.hidden, true);

  model.set("registrations", [snapshot({ id: "m1" }), snapshot({ id: "m2" })]);
  model.set("mode", "manager");
  assert.equal(el.querySelectorAll(".ipybgfetch-panel").length, 2);
  assert.equal(el.querySelector(".ipybgfetch-manager-heading").textContent, "Background fetches (2)");

  assert.ok(model.listenerCount() > 0);
  cleanup();
  assert.equal(model.listenerCount(), 0);
  assert.equal(el.children.length, 0);
});

test("mount(): a panel whose kernel is gone says so and disables its buttons", () => {
  const dom = makeDom();
  const doc = dom.window.document;
  const el = doc.createElement("div");
  doc.body.appendChild(el);
  const model = new FakeModel({ state: snapshot({ id: "a", state: "active" }) });
  model.send = () => {
    throw new Error("Cannot send"); // what JupyterLab's closed comm does after a restart
  };
  mount(model, el, { schedule: syncSchedule });
  const pause = el.querySelector(".ipybgfetch-pause");
  assert.equal(pause.disabled, false);
  assert.doesNotThrow(() => pause.click());
  const banner = el.querySelector(".ipybgfetch-error");
  assert.equal(banner.hidden, false);
  assert.equal(banner.textContent, STALE_MESSAGE);
  assert.equal(el.querySelector(".ipybgfetch-root").getAttribute("data-stale"), "true");
  for (const b of el.querySelectorAll("button")) assert.equal(b.disabled, true);
  model.set("state", snapshot({ id: "a", state: "active", downloaded: 5 })); // a late update
  assert.equal(banner.textContent, STALE_MESSAGE);
  for (const b of el.querySelectorAll("button")) assert.equal(b.disabled, true);
});

test("mount() coalesces bursts of changes into one render", () => {
  const dom = makeDom();
  const doc = dom.window.document;
  const el = doc.createElement("div");
  const queue = [];
  const model = new FakeModel({ state: snapshot({ downloaded: 0, expected_bytes: 100 }) });
  mount(model, el, { schedule: (fn) => queue.push(fn) });
  for (let i = 1; i <= 50; i++) model.set("state", snapshot({ downloaded: i, expected_bytes: 100 }));
  assert.equal(queue.length, 1);
  queue.shift()();
  assert.equal(el.querySelector(".ipybgfetch-bar").getAttribute("aria-valuenow"), "50");
});

test("panel.js is an anywidget module whose render returns a cleanup", () => {
  const dom = makeDom();
  const el = dom.window.document.createElement("div");
  const model = new FakeModel({ state: snapshot() });
  assert.equal(typeof panelModule.render, "function");
  const cleanup = panelModule.render({ model, el });
  assert.equal(typeof cleanup, "function");
  assert.equal(el.querySelectorAll(".ipybgfetch-panel").length, 1);
  cleanup();
  assert.equal(model.listenerCount(), 0);
});
