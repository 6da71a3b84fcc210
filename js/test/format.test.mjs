import { test } from "node:test";
import assert from "node:assert/strict";
import {
  bytesText,
  failureText,
  formatBytes,
  formatCount,
  formatDuration,
  formatEta,
  formatPercent,
  formatSpeed,
  pickIcon,
  progressInfo,
  recordsText,
  safeImageSrc,
  stateLabel,
} from "../src/render.js";
import { snapshot } from "./helpers.mjs";

test("formatBytes: IEC units, three significant digits, junk is a dash", () => {
  assert.equal(formatBytes(0), "0 B");
  assert.equal(formatBytes(1), "1 B");
  assert.equal(formatBytes(1023), "1023 B");
  assert.equal(formatBytes(1024), "1.00 KiB");
  assert.equal(formatBytes(1536), "1.50 KiB");
  assert.equal(formatBytes(10 * 2 ** 20), "10.0 MiB");
  assert.equal(formatBytes(123.4 * 2 ** 20), "123 MiB");
  assert.equal(formatBytes(5 * 2 ** 30), "5.00 GiB");
  assert.equal(formatBytes(2 ** 40), "1.00 TiB");
  // never "1024 KiB"
  assert.equal(formatBytes(1024 * 1024 - 1), "1.00 MiB");
  for (const junk of [null, undefined, NaN, -1, Infinity, "12"]) assert.equal(formatBytes(junk), "\u2014");
});

test("formatSpeed", () => {
  assert.equal(formatSpeed(0), "\u2014");
  assert.equal(formatSpeed(null), "\u2014");
  assert.equal(formatSpeed(2 * 2 ** 20), "2.00 MiB/s");
  assert.equal(formatSpeed(512), "512 B/s");
});

test("formatDuration / formatEta", () => {
  assert.equal(formatEta(null), "\u2014");
  assert.equal(formatEta(-3), "\u2014");
  assert.equal(formatEta(0.2), "< 1 s");
  assert.equal(formatEta(42), "42 s");
  assert.equal(formatEta(185), "3 min 05 s");
  assert.equal(formatEta(2 * 3600 + 7 * 60 + 12), "2 h 07 min");
  assert.equal(formatEta(3 * 86400 + 4 * 3600), "3 d 4 h");
  assert.equal(formatEta(1e12), "> 999 d");
  assert.equal(formatDuration(59.6), "1 min 00 s");
});

test("formatPercent never claims 100% before completion", () => {
  assert.equal(formatPercent(0), "0%");
  assert.equal(formatPercent(0.456), "45%");
  assert.equal(formatPercent(0.9999), "99%");
  assert.equal(formatPercent(1), "99%");
  assert.equal(formatPercent(1, true), "100%");
  assert.equal(formatPercent(2, true), "100%");
});

test("formatCount", () => {
  assert.equal(formatCount(0), "0");
  assert.equal(formatCount(10000), "10,000");
  assert.equal(formatCount(1234567), "1,234,567");
});

test("failure reasons in plain words", () => {
  assert.equal(stateLabel(snapshot({ state: "active" })).text, "Downloading");
  assert.equal(stateLabel(snapshot({ state: "paused" })).text, "Paused");
  assert.equal(stateLabel(snapshot({ state: "success", result: "success" })).text, "Complete");
  assert.equal(
    stateLabel(snapshot({ state: "failure", result: "failure", failure_reason: "bad-status" })).text,
    "Failed: a server answered with an error status",
  );
  assert.match(stateLabel(snapshot({ state: "failure", failure_reason: "fetch-error" })).text, /network error/);
  assert.match(stateLabel(snapshot({ state: "failure", failure_reason: "quota-exceeded" })).text, /disk space/);
  assert.match(
    stateLabel(snapshot({ state: "failure", failure_reason: "download-total-exceeded" })).text,
    /download_total/,
  );
  assert.equal(stateLabel(snapshot({ state: "aborted", failure_reason: "aborted" })).text, "Aborted");
  assert.equal(stateLabel(snapshot({ state: "failure", failure_reason: "aborted" })).tone, "aborted");
  assert.equal(stateLabel(snapshot({ state: "needs-credentials" })).tone, "warn");
  assert.equal(failureText("something-new"), "something-new");
});

test("progressInfo: determinate from expected_bytes, then download_total, else indeterminate", () => {
  let p = progressInfo(snapshot({ downloaded: 500, expected_bytes: 1000, download_total: 4000 }));
  assert.deepEqual([p.determinate, p.value, p.max, p.percent], [true, 500, 1000, "50%"]);
  p = progressInfo(snapshot({ downloaded: 1000, expected_bytes: null, download_total: 4000 }));
  assert.deepEqual([p.determinate, p.value, p.max, p.percent], [true, 1000, 4000, "25%"]);
  p = progressInfo(snapshot({ downloaded: 1000, expected_bytes: null, download_total: 0 }));
  assert.equal(p.determinate, false);
  assert.equal(p.max, null);
  // success with an unknown size: a full bar
  p = progressInfo(snapshot({ state: "success", result: "success", downloaded: 1000 }));
  assert.deepEqual([p.determinate, p.value, p.max, p.percent], [true, 1000, 1000, "100%"]);
  // empty success
  p = progressInfo(snapshot({ state: "success", result: "success", downloaded: 0, expected_bytes: 0 }));
  assert.equal(p.percent, "100%");
  // more than expected (a restart) never overflows the bar
  p = progressInfo(snapshot({ downloaded: 2000, expected_bytes: 1000 }));
  assert.equal(p.value, 1000);
  assert.equal(p.percent, "99%");
});

test("bytesText and recordsText", () => {
  assert.equal(bytesText(snapshot({ downloaded: 1536, expected_bytes: 3072 })), "1.50 KiB of 3.00 KiB");
  assert.equal(bytesText(snapshot({ downloaded: 1536 })), "1.50 KiB downloaded");
  assert.equal(recordsText(snapshot({ records_total: 10000, records_done: 12 })), "12 / 10,000 records");
  assert.equal(
    recordsText(snapshot({ records_total: 3, records_done: 3, records_failed: 1 })),
    "3 / 3 records \u00b7 1 failed",
  );
  assert.equal(recordsText(snapshot({ records_total: 1, records_done: 1 })), "1 / 1 record");
});

test("safeImageSrc allows only http(s) and data:image", () => {
  assert.equal(safeImageSrc("https://example.org/i.png"), "https://example.org/i.png");
  assert.equal(safeImageSrc("http://127.0.0.1:8000/i.png"), "http://127.0.0.1:8000/i.png");
  assert.equal(safeImageSrc("data:image/png;base64,AAAA"), "data:image/png;base64,AAAA");
  for (const bad of [
    "javascript:alert(1)",
    " JavaScript:alert(1)",
    "data:text/html,<script>alert(1)</script>",
    "x",
    "/files/icon.png",
    "file:///etc/passwd",
    "",
    null,
    42,
  ]) {
    assert.equal(safeImageSrc(bad), null, String(bad));
  }
});

test("pickIcon prefers a safe icon close to 32x32", () => {
  assert.equal(pickIcon([]), null);
  assert.equal(pickIcon(null), null);
  assert.equal(pickIcon([{ src: "javascript:alert(1)", sizes: "32x32" }]), null);
  const icons = [
    { src: "https://e.org/16.png", sizes: "16x16" },
    { src: "https://e.org/512.png", sizes: "512x512" },
    { src: "https://e.org/48.png", sizes: "48x48" },
    { src: "javascript:alert(1)", sizes: "32x32" },
  ];
  assert.equal(pickIcon(icons), "https://e.org/48.png");
  assert.equal(pickIcon([{ src: "https://e.org/16.png", sizes: "16x16" }]), "https://e.org/16.png");
});
