// Issue #16, the panel: failed records shown as failed, partial vs wholesale failure,
// URLs cut in the middle, the destination with a copy button, Retry failed, the manager's
// Clear finished and folded settled registrations, the ETA dash, "already downloaded".
import { test } from "node:test";
import assert from "node:assert/strict";
import { createManagerView, createPanel, failedCodes, formatAgo, splitUrl, stateLabel } from "../src/render.js";
import { makeDom, snapshot } from "./helpers.mjs";

function setup(snap, options = {}) {
  const dom = makeDom();
  const doc = dom.window.document;
  const sent = [];
  const panel = createPanel(doc, (m) => sent.push(m), options);
  doc.body.appendChild(panel.el);
  panel.update(snap, 0);
  const details = panel.records.el;
  details.open = true;
  details.dispatchEvent(new dom.window.Event("toggle"));
  return { dom, doc, panel, sent, q: (s) => doc.querySelector(s) };
}

const rec = (over) => ({ index: 0, url: "http://h/a.csv", status: 200, state: "success", downloaded: 10, total: 10, error: "", attempts: 1, ...over });

const partial = () =>
  snapshot({
    state: "failure",
    result: "failure",
    failure_reason: "bad-status",
    downloaded: 1335,
    expected_bytes: 1335,
    records_total: 3,
    records_done: 3, // settled records, the failed one included
    records_failed: 1,
    records: [
      rec({ index: 2, url: "http://127.0.0.1:9/data/2024/sales-archive.csv?v=2", status: 404, state: "failure", downloaded: 335, total: 335, error: "HTTP 404 Not Found" }),
      rec({ index: 0 }),
      rec({ index: 1, url: "http://h/b.csv" }),
    ],
    dest: "/home/me/data/sales",
  });

test("one 404 among three: the headline says 2 of 3 done, 1 failed (404); no 99%", () => {
  const { q } = setup(partial());
  assert.equal(q(".ipybgfetch-badge").textContent, "2 of 3 done, 1 failed (404)");
  assert.equal(q(".ipybgfetch-percent").hidden, true);
  assert.doesNotMatch(q(".ipybgfetch-panel").textContent, /99%/);
  // the bar shows the files that arrived: 2 of 3, not a full bar of bytes
  const bar = q(".ipybgfetch-bar");
  assert.equal(bar.getAttribute("aria-valuenow"), "2");
  assert.equal(bar.getAttribute("aria-valuemax"), "3");
  assert.equal(bar.getAttribute("aria-valuetext"), "2 of 3 done, 1 failed (404)");
  assert.equal(q(".ipybgfetch-bar-fill").style.width, "66.67%");
});

test("a wholesale failure still reads Failed, with the status codes", () => {
  const snap = snapshot({
    state: "failure",
    result: "failure",
    failure_reason: "bad-status",
    records_total: 2,
    records_done: 2,
    records_failed: 2,
    records: [rec({ status: 404, state: "failure" }), rec({ index: 1, status: 500, state: "failure" })],
  });
  assert.equal(stateLabel(snap).text, "Failed: a server answered with an error status (404, 500)");
  assert.equal(failedCodes({ records: [rec({ state: "failure", status: 0 })] }), "network error");
  // download_total exceeded stops every record: wholesale even if some finished
  assert.match(
    stateLabel({ ...snap, failure_reason: "download-total-exceeded", records_done: 2, records_failed: 1, records: [] }).text,
    /^Failed: more data arrived/,
  );
});

test("a failed record's row: failed, its bytes (not 'of'), no progress bar, the error, the file name", () => {
  const { q } = setup(partial());
  const row = q("tr.ipybgfetch-record");
  assert.equal(row.dataset.state, "failure");
  assert.equal(row.querySelector(".ipybgfetch-rec-state").textContent, "failed");
  assert.equal(row.querySelector(".ipybgfetch-rec-size").textContent, "335 B");
  assert.equal(row.querySelector(".ipybgfetch-bar").hidden, true);
  assert.equal(row.querySelector(".ipybgfetch-rec-error").textContent, "HTTP 404 Not Found");
  const url = row.querySelector(".ipybgfetch-rec-url");
  assert.equal(url.textContent, "http://127.0.0.1:9/data/2024/sales-archive.csv?v=2");
  assert.equal(url.getAttribute("title"), url.textContent);
  assert.equal(url.querySelector(".ipybgfetch-url-name").textContent, "sales-archive.csv");
  assert.equal(url.querySelector(".ipybgfetch-url-query").textContent, "?v=2");
  assert.equal(url.querySelector(".ipybgfetch-url-head").textContent, "http://127.0.0.1:9/data/2024/");
});

test("splitUrl keeps the file name whole; URLs without one stay in the head", () => {
  assert.deepEqual(splitUrl("https://h/a/b/file.csv?x=1#y"), ["https://h/a/b/", "file.csv?x=1#y"]);
  assert.deepEqual(splitUrl("https://h/"), ["https://h/", ""]);
  assert.deepEqual(splitUrl("https://h"), ["https://h", ""]);
  assert.deepEqual(splitUrl("https://h/dir/?q=/x"), ["https://h/dir/?q=/x", ""]);
  assert.deepEqual(splitUrl(null), ["", ""]);
});

test("the destination folder is shown as text with a working copy button", async () => {
  const copied = [];
  const { q, panel } = setup(partial(), { copy: async (t) => copied.push(t) });
  assert.equal(q(".ipybgfetch-dest").hidden, false);
  assert.equal(q(".ipybgfetch-dest-path").textContent, "/home/me/data/sales");
  panel.copy.click();
  await new Promise((r) => setTimeout(r, 0));
  assert.deepEqual(copied, ["/home/me/data/sales"]);
  assert.equal(q(".ipybgfetch-copy-status").textContent, "Copied");
  const failing = setup(partial(), { copy: async () => Promise.reject(new Error("denied")) });
  failing.panel.copy.click();
  await new Promise((r) => setTimeout(r, 0));
  assert.match(failing.q(".ipybgfetch-copy-status").textContent, /Copy failed/);
});

test("Retry failed: shown for a settled failure with failed records, sends retry, waits for the ack", () => {
  const { panel, sent } = setup(partial());
  const retry = panel.buttons.retry;
  assert.equal(retry.hidden, false);
  assert.equal(retry.textContent, "Retry failed");
  assert.equal(panel.buttons.pause.hidden, true);
  retry.click();
  assert.equal(sent.at(-1).type, "retry");
  assert.equal(retry.textContent, "Retrying\u2026");
  assert.equal(retry.disabled, true);
  panel.update({ ...partial(), state: "active", result: "", failure_reason: "", records_failed: 0 }, sent.at(-1).seq);
  assert.equal(retry.hidden, true);
  assert.equal(panel.buttons.pause.hidden, false);
  // not offered when nothing failed, or when the kernel says it cannot retry
  assert.equal(setup(snapshot({ state: "success", result: "success" })).panel.buttons.retry.hidden, true);
  assert.equal(setup({ ...partial(), retry_unavailable: true }).panel.buttons.retry.hidden, true);
});

test("ETA: a dash until the kernel sends a meaningful one", () => {
  const { q, panel } = setup(snapshot({ state: "active", eta: null, downloaded: 5, expected_bytes: 100 }));
  assert.equal(q(".ipybgfetch-eta").textContent, "\u2014 left");
  panel.update(snapshot({ state: "active", eta: 75, downloaded: 5, expected_bytes: 100 }), 0);
  assert.equal(q(".ipybgfetch-eta").textContent, "1 min 15 s left");
  panel.update(snapshot({ state: "paused", eta: null }), 0);
  assert.equal(q(".ipybgfetch-eta").hidden, true);
});

test("a re-run that downloaded nothing says 'already downloaded <when>'", () => {
  const now = 1_800_000_000_000;
  const { q } = setup(
    snapshot({ state: "success", result: "success", started: 1, finished: 2, already_downloaded: now / 1000 - 300 }),
    { now: () => now },
  );
  assert.equal(q(".ipybgfetch-speed").textContent, "already downloaded 5 min ago");
  assert.equal(formatAgo(10), "just now");
  assert.equal(formatAgo(3 * 86400), "3 d ago");
});

test("a record in segments shows its connections", () => {
  const { q } = setup(snapshot({ records: [rec({ state: "active", connections: 4, total: 100, downloaded: 5 })] }));
  assert.equal(q("td.ipybgfetch-rec-state").textContent, "downloading \u00d74");
});

test("manager: settled registrations folded with a Details toggle; Clear finished sends clear", () => {
  const dom = makeDom();
  const doc = dom.window.document;
  const sent = [];
  const view = createManagerView(doc, (m) => sent.push(m));
  doc.body.appendChild(view.el);
  const regs = [
    snapshot({ id: "old", key: "k1", state: "success", result: "success" }),
    snapshot({ id: "new", key: "k2", state: "active" }),
  ];
  view.update(regs, 0);
  const [active, done] = [...doc.querySelectorAll(".ipybgfetch-panel")];
  assert.equal(active.dataset.collapsed, undefined);
  assert.equal(done.dataset.collapsed, "true");
  assert.equal(done.querySelector(".ipybgfetch-bar").dataset.folded, "true");
  const details = done.querySelector(".ipybgfetch-expand");
  assert.equal(details.hidden, false);
  details.click();
  assert.equal(done.dataset.collapsed, undefined);
  assert.equal(details.getAttribute("aria-expanded"), "true");
  assert.equal(active.querySelector(".ipybgfetch-expand").hidden, true);

  assert.equal(view.clear.hidden, false);
  view.clear.click();
  assert.deepEqual({ ...sent.at(-1), seq: 0 }, { type: "clear", id: "", seq: 0 });
  assert.equal(view.clear.disabled, true);
  assert.equal(view.clear.textContent, "Clearing\u2026");
  view.update([regs[1]], sent.at(-1).seq); // the kernel hid the settled one
  assert.equal(doc.querySelectorAll(".ipybgfetch-panel").length, 1);
  assert.equal(view.clear.hidden, true);
  assert.equal(doc.querySelector(".ipybgfetch-manager-heading").textContent, "Background fetches (1)");
});

test("a cluster run shows its shards and one row per worker; a local run shows none", () => {
  const { q, panel } = setup(snapshot({ cluster: null }));
  assert.equal(q(".ipybgfetch-workers").hidden, true);
  panel.update(
    snapshot({
      cluster: {
        scheduler: "tcp://127.0.0.1:8786",
        shards_total: 8,
        shards_done: 3,
        workers: [
          { worker: "tcp://127.0.0.1:40001", downloaded: 3 * 2 ** 20, files: 12, rate: 2 ** 20, shards: 1 },
          { worker: "<b>tcp://w2</b>", downloaded: 0, files: 0, rate: 0, shards: 0 },
        ],
      },
    }),
    0,
  );
  assert.equal(q(".ipybgfetch-workers").hidden, false);
  assert.equal(q(".ipybgfetch-workers-summary").textContent, "Cluster: 3 of 8 shards done, 2 workers");
  const rows = [...panel.el.querySelectorAll("tr.ipybgfetch-worker")].map((tr) =>
    [...tr.children].map((td) => td.textContent),
  );
  assert.deepEqual(rows, [
    ["tcp://127.0.0.1:40001", "12", "3.00 MiB", "1.00 MiB/s", "1"],
    ["<b>tcp://w2</b>", "0", "0 B", "\u2014", "0"],
  ]);
  assert.equal(panel.el.querySelectorAll("b").length, 0);
});
