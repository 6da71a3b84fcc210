// The panel and the generated vocabulary (js/src/vocab.js, from ipybgfetch/_vocab.py)
// agree: every state and failure reason has words, and every snapshot key the panel
// reads is declared (a key renamed in Python fails here, not silently in the browser).
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync, readdirSync } from "node:fs";
import { join, dirname } from "node:path";
import { fileURLToPath } from "node:url";
import { FAILURE_WORDS, RECORD_STATE_WORDS, stateLabel } from "../src/render.js";
import {
  FAILURE_REASONS,
  RECORD_SNAPSHOT_KEYS,
  RECORD_STATES,
  REGISTRATION_STATES,
  SNAPSHOT_KEYS,
} from "../src/vocab.js";

const SRC = join(dirname(fileURLToPath(import.meta.url)), "..", "src");
// Keys the kernel's panel adds to a snapshot (ipybgfetch/_jupyter/widget.py), and the
// per-record "connections" of a segmented download.
const PANEL_ONLY = new Set(["controls_disabled", "retry_unavailable"]);
const RECORD_EXTRA = new Set(["connections"]);

test("every registration state, record state and failure reason has words", () => {
  for (const state of REGISTRATION_STATES) {
    const label = stateLabel({ state, failure_reason: "bad-status" });
    assert.notEqual(label.text, state, state);
  }
  for (const state of RECORD_STATES) assert.ok(Object.hasOwn(RECORD_STATE_WORDS, state), state);
  for (const reason of FAILURE_REASONS) assert.ok(Object.hasOwn(FAILURE_WORDS, reason), reason);
  assert.deepEqual(Object.keys(FAILURE_WORDS).sort(), [...FAILURE_REASONS].sort());
});

test("every snapshot key the panel reads is declared in the vocabulary", () => {
  const files = readdirSync(SRC).filter((f) => f.endsWith(".js") && f !== "vocab.js");
  const snapKeys = new Set();
  const recKeys = new Set();
  for (const file of files) {
    const text = readFileSync(join(SRC, file), "utf8");
    for (const m of text.matchAll(/\b(?:snap|next|last)\??\.([a-z_]+)/g)) snapKeys.add(m[1]);
    for (const m of text.matchAll(/\brec\??\.([a-z_]+)/g)) recKeys.add(m[1]);
  }
  assert.ok(snapKeys.size > 10 && recKeys.size > 5, "the scan found the panel's reads");
  const declared = new Set([...SNAPSHOT_KEYS, ...PANEL_ONLY]);
  assert.deepEqual([...snapKeys].filter((k) => !declared.has(k)), []);
  const declaredRec = new Set([...RECORD_SNAPSHOT_KEYS, ...RECORD_EXTRA]);
  assert.deepEqual([...recKeys].filter((k) => !declaredRec.has(k)), []);
});
