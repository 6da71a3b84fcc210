// Shared fixtures for the render tests: a jsdom document, a fake anywidget model and
// snapshot builders shaped like ipybgfetch's Registration._snapshot().
import { JSDOM } from "jsdom";

export function makeDom() {
  const dom = new JSDOM("<!doctype html><html><body></body></html>", {
    url: "http://localhost:8888/lab",
    pretendToBeVisual: true,
  });
  return dom;
}

export function snapshot(overrides = {}) {
  return {
    id: "my-fetch",
    title: "Dataset",
    icons: [],
    state: "active",
    result: "",
    failure_reason: "",
    downloaded: 0,
    download_total: 0,
    expected_bytes: null,
    uploaded: 0,
    upload_total: 0,
    speed: 0,
    eta: null,
    records_total: 1,
    records_done: 0,
    records_failed: 0,
    records_active: 1,
    records: [
      {
        index: 0,
        url: "http://127.0.0.1:8000/a.bin",
        status: 0,
        state: "active",
        downloaded: 0,
        total: null,
        error: "",
        attempts: 1,
      },
    ],
    records_truncated: false,
    started: 1700000000,
    finished: null,
    dest: "/tmp/x",
    ...overrides,
  };
}

export function manyRecords(n, state = "active") {
  const out = [];
  for (let i = 0; i < n; i++) {
    out.push({
      index: i,
      url: `http://127.0.0.1:8000/file-${i}.csv`,
      status: state === "pending" ? 0 : 200,
      state,
      downloaded: 100,
      total: 1000,
      error: "",
      attempts: 1,
    });
  }
  return out;
}

/** A minimal stand-in for an anywidget model: get/set/on/off/send. */
export class FakeModel {
  constructor(state = {}) {
    this.state = { mode: "registration", state: {}, registrations: [], error: "", ...state };
    this.handlers = new Map();
    this.sent = [];
  }
  get(name) {
    return this.state[name];
  }
  set(name, value) {
    this.state[name] = value;
    for (const cb of this.handlers.get(`change:${name}`) ?? []) cb();
  }
  on(event, cb) {
    if (!this.handlers.has(event)) this.handlers.set(event, new Set());
    this.handlers.get(event).add(cb);
  }
  off(event, cb) {
    this.handlers.get(event)?.delete(cb);
  }
  send(msg) {
    this.sent.push(msg);
  }
  listenerCount() {
    let n = 0;
    for (const set of this.handlers.values()) n += set.size;
    return n;
  }
}

export const syncSchedule = (fn) => fn();
